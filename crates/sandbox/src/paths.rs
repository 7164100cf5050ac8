//! Workspace-relative paths given by callers (and, through the tools, by the agent).
//!
//! A path is accepted only if it is relative, free of `..` and NUL, and names something below
//! the workspace root. Symlinks are refused at resolution time by `openat2`, never followed.

use crate::error::{Error, Result};

/// Checks and normalises a workspace-relative path (`./a//b/` → `a/b`).
pub fn normalise(path: &str) -> Result<String> {
    let refuse = |reason: &str| Error::PathRefused {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if path.contains('\0') {
        return Err(refuse("it contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(refuse(
            "absolute paths are not allowed; give a path relative to the workspace root",
        ));
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(refuse("`..` would leave the workspace")),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err(refuse("it names the workspace root, not a file"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        assert_eq!(normalise(input).ok().as_deref(), expected, "{input:?}");
    }

    #[test]
    fn normalisation_cases() {
        check("a/b.py", Some("a/b.py"));
        check("./a//b/", Some("a/b"));
        check("a/./b", Some("a/b"));
        check("/etc/passwd", None);
        check("../x", None);
        check("a/../../x", None);
        check("a/..", None);
        check("", None);
        check(".", None);
        check("a\0b", None);
    }
}
