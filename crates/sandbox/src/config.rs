//! Configuration of a sandbox: where its run-time state lives, who the agent runs as, what is
//! mounted read-only, and which isolation is required.
//!
//! Only the binary reads environment variables; whatever of the host environment a command
//! should see is put into [`SandboxConfig::env`] explicitly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The isolation a caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Namespaces, with cgroups when they can be used; an error where namespaces cannot be.
    Auto,
    /// Namespaces and cgroups, or an error.
    Full,
    /// No isolation at all: a plain copy of the snapshot and process-group kills. Only for
    /// trusted commands, and only when asked for by name.
    None,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(text: &str) -> Result<Isolation, String> {
        match text {
            "auto" => Ok(Isolation::Auto),
            "full" => Ok(Isolation::Full),
            "none" => Ok(Isolation::None),
            other => Err(format!(
                "unknown isolation `{other}`: expected auto, full or none"
            )),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    pub isolation: Isolation,
    /// Host directory for run-time state (an empty mount point per process, cgroup names).
    pub runtime_dir: PathBuf,
    /// Host uid and gid the agent's processes run as (uid 1000 inside the sandbox). Snapshots
    /// are owned by them, so the agent can edit the workspace.
    pub sandbox_uid: u32,
    pub sandbox_gid: u32,
    /// Host paths made visible read-only at the same path (virtualenvs, toolchains).
    pub read_only_mounts: Vec<PathBuf>,
    /// Directories put in front of the default `PATH` inside the sandbox.
    pub path_prefix: Vec<String>,
    /// Extra environment variables every command gets.
    pub env: BTreeMap<String, String>,
    /// Workspace paths left out of diffs (a component equal to one of these, or a file name
    /// ending in one that starts with `*`).
    pub diff_ignore: Vec<String>,
    /// Turn on the kernel's cgroup `favordynmods` option (host-wide) if it is off, so that each
    /// command joins its cgroups in well under a millisecond instead of an RCU grace period.
    pub favor_dynamic_cgroups: bool,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            isolation: Isolation::Auto,
            runtime_dir: PathBuf::from("/run/atomskill"),
            sandbox_uid: 100_000,
            sandbox_gid: 100_000,
            read_only_mounts: Vec::new(),
            path_prefix: Vec::new(),
            env: BTreeMap::new(),
            diff_ignore: vec!["__pycache__".into(), ".pytest_cache".into(), "*.pyc".into()],
            favor_dynamic_cgroups: true,
        }
    }
}

impl SandboxConfig {
    /// Adds a virtualenv: mounted read-only, its `bin` first on `PATH`, `VIRTUAL_ENV` set.
    pub fn with_virtualenv(mut self, venv: PathBuf) -> SandboxConfig {
        self.path_prefix
            .insert(0, venv.join("bin").to_string_lossy().into_owned());
        self.env
            .insert("VIRTUAL_ENV".into(), venv.to_string_lossy().into_owned());
        self.read_only_mounts.push(venv);
        self
    }

    /// The environment of a command: a fixed base, the configured extras, then the request's.
    pub fn command_env(&self, request_env: &[(String, String)]) -> BTreeMap<String, String> {
        let mut path: Vec<String> = self.path_prefix.clone();
        path.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from));
        let mut env: BTreeMap<String, String> = [
            ("PATH", path.join(":")),
            ("HOME", "/tmp".to_string()),
            ("USER", "agent".to_string()),
            ("LANG", "C.UTF-8".to_string()),
            ("LC_ALL", "C.UTF-8".to_string()),
            ("TERM", "dumb".to_string()),
            ("PAGER", "cat".to_string()),
            ("GIT_PAGER", "cat".to_string()),
            ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
            ("PYTHONUNBUFFERED", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.env.clone());
        env.extend(request_env.iter().cloned());
        env
    }

    /// Whether a workspace-relative path is left out of diffs.
    pub fn diff_ignores(&self, path: &str) -> bool {
        path.split('/').any(|component| {
            self.diff_ignore
                .iter()
                .any(|pattern| match pattern.strip_prefix('*') {
                    Some(suffix) => component.ends_with(suffix),
                    None => component == pattern,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_ignore_patterns() {
        let config = SandboxConfig::default();
        for (path, ignored) in [
            ("pkg/__pycache__/mod.cpython-311.pyc", true),
            ("pkg/mod.pyc", true),
            (".pytest_cache/v/cache", true),
            ("pkg/mod.py", false),
            ("pkg/pycache.py", false),
        ] {
            assert_eq!(config.diff_ignores(path), ignored, "{path}");
        }
    }

    #[test]
    fn request_env_overrides_base() {
        let config = SandboxConfig::default().with_virtualenv(PathBuf::from("/opt/venv"));
        let env = config.command_env(&[("HOME".into(), "/workspace".into())]);
        assert_eq!(env["HOME"], "/workspace");
        assert_eq!(env["VIRTUAL_ENV"], "/opt/venv");
        assert!(env["PATH"].starts_with("/opt/venv/bin:"));
    }
}
