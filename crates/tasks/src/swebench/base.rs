//! Building an exported record's starting tree on this machine, with the very script its image
//! recipe runs, to learn its `base_commit` and to check that the record's patches apply to it
//! with `git apply` (as the harness applies them).
//!
//! Runs `bash`, `python3` and `git` on the host, in a directory the caller owns; never touches
//! a snapshot or the network (the archive must be given).

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

fn run(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .map_err(|e| Error::Export(format!("{what}: could not start: {e}")))?;
    if !output.status.success() {
        return Err(Error::Export(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `build_script` on `archive` into `work/tree` (`work` must be empty or absent) and
/// returns the commit id it prints.
pub fn build(build_script: &str, archive: &Path, work: &Path) -> Result<String> {
    let io = |e: std::io::Error| Error::Io {
        path: work.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(work).map_err(io)?;
    let script = work.join("build_base.sh");
    std::fs::write(&script, build_script).map_err(io)?;
    let stdout = run(
        Command::new("bash")
            .arg(&script)
            .arg(work.join("tree"))
            .arg(archive)
            // The build must not depend on who runs it.
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1"),
        "building the starting tree",
    )?;
    let commit = stdout.lines().last().unwrap_or("").trim().to_string();
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Export(format!(
            "building the starting tree printed no commit id: {stdout}"
        )));
    }
    Ok(commit)
}

/// Checks that `patch` applies to the tree `build` made in `work` with plain `git apply`.
pub fn check_applies(work: &Path, patch: &str, what: &str) -> Result<()> {
    if patch.is_empty() {
        return Ok(());
    }
    let file = work.join("check.patch");
    std::fs::write(&file, patch).map_err(|e| Error::Io {
        path: file.clone(),
        source: e,
    })?;
    run(
        Command::new("git")
            .arg("-C")
            .arg(work.join("tree"))
            .args(["apply", "--check"])
            .arg(&file)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1"),
        &format!("checking that {what} applies to the starting tree with `git apply`"),
    )?;
    Ok(())
}
