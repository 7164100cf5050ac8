//! Shared set-up for the sandbox's integration tests: a sandbox with its own host uid (so a
//! test can look for leftover processes of exactly its own episodes), a snapshot of a small
//! repository, and helpers to run shell snippets.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::{
    Episode, ExecRequest, ExecResult, Isolation, Limits, Sandbox, SandboxConfig, Snapshot,
    SnapshotStore,
};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub store: SnapshotStore,
    pub uid: u32,
}

/// Each test passes a distinct `slot`; its episodes run as host uid 200000 + slot.
pub fn harness(slot: u32, limits: Limits) -> Harness {
    harness_with(slot, limits, |c| c)
}

pub fn harness_with(
    slot: u32,
    limits: Limits,
    adjust: impl FnOnce(SandboxConfig) -> SandboxConfig,
) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let uid = 200_000 + slot;
    let config = adjust(SandboxConfig {
        isolation: Isolation::Full,
        runtime_dir: dir.path().join("run"),
        sandbox_uid: uid,
        sandbox_gid: uid,
        ..SandboxConfig::default()
    });
    let sandbox = Sandbox::new(config, limits)
        .expect("these tests need full isolation: run them as root on a machine with cgroup v1 memory and pids");
    let store = SnapshotStore::new(dir.path().join("snapshots"), Some((uid, uid)));
    Harness {
        dir,
        sandbox,
        store,
        uid,
    }
}

impl Harness {
    /// A small Python repository with a package, tests and a nested directory.
    pub fn repo(&self) -> Snapshot {
        let src = self.dir.path().join("src-repo");
        write_tree(
            &src,
            &[
                ("README.md", "# demo\n"),
                ("pkg/__init__.py", ""),
                (
                    "pkg/calc.py",
                    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
                ),
                (
                    "tests/test_calc.py",
                    "from pkg.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
                ),
                ("docs/guide/intro.txt", "line one\nline two\n"),
            ],
        );
        self.store.import_dir(&src, Some("demo")).expect("import")
    }

    pub fn episode(&self) -> Episode {
        self.sandbox
            .create_episode(&self.repo())
            .expect("create episode")
    }

    /// Processes on the host that run as this harness's uid.
    pub fn host_processes(&self) -> Vec<String> {
        processes_of_uid(self.uid)
    }
}

pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(&full, contents).expect("write");
    }
}

pub async fn sh(episode: &Episode, script: &str) -> ExecResult {
    episode
        .exec(&ExecRequest::shell(script))
        .await
        .expect("exec")
}

pub async fn sh_timeout(episode: &Episode, script: &str, timeout: Duration) -> ExecResult {
    episode
        .exec(&ExecRequest::shell(script).timeout(timeout))
        .await
        .expect("exec")
}

pub fn stdout(result: &ExecResult) -> String {
    result.stdout.to_text()
}

/// `pid: cmdline` of every host process whose real uid is `uid`.
pub fn processes_of_uid(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if real_uid == Some(uid) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// A stable hash of a directory tree: paths, kinds, modes, contents and link targets.
pub fn tree_hash(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut items = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel))
            .expect("read_dir")
            .flatten()
        {
            let path = rel.join(entry.file_name());
            let meta = std::fs::symlink_metadata(entry.path()).expect("lstat");
            let body = if meta.is_dir() {
                stack.push(path.clone());
                String::new()
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(entry.path())
                    .expect("readlink")
                    .display()
                    .to_string()
            } else {
                String::from_utf8_lossy(&std::fs::read(entry.path()).expect("read")).into_owned()
            };
            items.push(format!(
                "{}|{:o}|{}|{}|{body}",
                path.display(),
                meta.mode(),
                meta.uid(),
                meta.len()
            ));
        }
    }
    items.sort();
    items.join("\n")
}
