//! Instance files: one JSONL file per skill in a directory. Reading names the file and line of
//! anything malformed; writing appends whole lines.

use std::path::Path;

use crate::error::{Error, Result};
use crate::instance::{Instance, Skill, SCHEMA_VERSION};

/// Reads every instance of a JSONL file with the one strict reader
/// ([`trajectory::read_lines`]): a malformed line (invalid UTF-8 included) is an error naming
/// it, and so is an instance of a schema version this build does not read; a torn last line
/// without its newline (a crash mid-write) is skipped with a warning.
pub fn read_jsonl(path: &Path) -> Result<Vec<Instance>> {
    let check = |instance: &Instance| {
        if instance.schema_version == SCHEMA_VERSION {
            Ok(())
        } else {
            Err(format!(
                "schema_version {} is not supported (this build reads {SCHEMA_VERSION})",
                instance.schema_version
            ))
        }
    };
    let report = trajectory::read_lines_checked(path, check).map_err(|error| match error {
        trajectory::Error::Io { source, .. } => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        trajectory::Error::Corrupt { line, message, .. } => Error::Format {
            path: path.display().to_string(),
            line,
            message,
        },
        other => Error::Format {
            path: path.display().to_string(),
            line: 0,
            message: other.to_string(),
        },
    })?;
    if let Some(tail) = &report.truncated_tail {
        tracing::warn!(path = %path.display(), line = tail.line, "skipping a torn last line");
    }
    Ok(report.records)
}

/// Every instance in a directory of `<skill>.jsonl` files (or one file), in skill order.
pub fn read_dir(path: &Path) -> Result<Vec<Instance>> {
    if path.is_file() {
        return read_jsonl(path);
    }
    if !path.is_dir() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such instance file or directory",
            ),
        });
    }
    let mut out = Vec::new();
    let mut found = false;
    for skill in Skill::ALL {
        let file = path.join(format!("{}.jsonl", skill.name()));
        if file.exists() {
            found = true;
            out.extend(read_jsonl(&file)?);
        }
    }
    if !found {
        return Err(Error::Format {
            path: path.display().to_string(),
            line: 0,
            message: "no <skill>.jsonl files here (expected e.g. localization.jsonl, as `atomskill synth` writes)".into(),
        });
    }
    Ok(out)
}

/// Writes instances grouped by skill as `<skill>.jsonl` in `dir` (replacing those files).
pub fn write_dir(dir: &Path, instances: &[Instance]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for skill in Skill::ALL {
        let lines: Vec<String> = instances
            .iter()
            .filter(|i| i.skill() == skill)
            .map(|i| serde_json::to_string(i).expect("instances serialise"))
            .collect();
        let file = dir.join(format!("{}.jsonl", skill.name()));
        if lines.is_empty() {
            let _ = std::fs::remove_file(&file);
            continue;
        }
        trajectory::write_atomic(&file, (lines.join("\n") + "\n").as_bytes()).map_err(
            |source| Error::Io {
                path: file.clone(),
                source,
            },
        )?;
    }
    Ok(())
}
