//! Instance files: one JSONL file per skill in a directory. Reading names the file and line of
//! anything malformed; writing appends whole lines.

use std::path::Path;

use crate::error::{Error, Result};
use crate::instance::{Instance, Skill, SCHEMA_VERSION};

/// Reads every instance of a JSONL file. A malformed line is an error naming it, except a torn
/// last line without its newline (a crash mid-write), which is skipped with a warning.
pub fn read_jsonl(path: &Path) -> Result<Vec<Instance>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = utf8_text(path, bytes)?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Instance>(line) {
            Ok(instance) if instance.schema_version == SCHEMA_VERSION => out.push(instance),
            Ok(instance) => {
                return Err(Error::Format {
                    path: path.display().to_string(),
                    line: index + 1,
                    message: format!(
                        "schema_version {} is not supported (this build reads {SCHEMA_VERSION})",
                        instance.schema_version
                    ),
                })
            }
            Err(_) if index + 1 == lines.len() && !complete => {
                tracing::warn!(path = %path.display(), line = index + 1, "skipping a torn last line");
            }
            Err(error) => {
                return Err(Error::Format {
                    path: path.display().to_string(),
                    line: index + 1,
                    message: error.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// The text of an instance file. A write torn inside a multi-byte character leaves an incomplete
/// one at the very end, which goes with the torn last line it belongs to; invalid UTF-8 anywhere
/// else is an error naming its line.
fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String> {
    let error = match String::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(error) => error,
    };
    let valid = error.utf8_error().valid_up_to();
    let bytes = error.as_bytes();
    if error.utf8_error().error_len().is_none() {
        return Ok(String::from_utf8_lossy(&bytes[..valid]).into_owned());
    }
    Err(Error::Format {
        path: path.display().to_string(),
        line: bytes[..valid].iter().filter(|&&b| b == b'\n').count() + 1,
        message: format!("invalid UTF-8 at byte {valid}"),
    })
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
