//! The `str_replace_editor` tool (SWE-agent's interface): `view`, `create`, `str_replace`,
//! `insert` and `undo_edit`, over the episode's confined `read_file` / `write_file`.
//!
//! Paths are relative to the workspace or absolute under it; nothing outside can be named.
//! Mistakes of the model (a missing file, an ambiguous `old_str`) are error observations with
//! a message that says what to do; only a failure of the sandbox itself is an `Err`. Small
//! shell probes (`test`, `find`, `rm`) run as the agent inside the episode.

use std::collections::HashMap;

use sandbox::{ExecRequest, Workspace, WORKSPACE};
use serde_json::Value;

use super::{Observation, ToolSettings};
use crate::error::Result;

/// Earlier contents of edited files, for `undo_edit`; `None` = the file did not exist.
#[derive(Debug, Default)]
pub struct EditHistory {
    files: HashMap<String, Vec<Option<Vec<u8>>>>,
}

/// A path the model named, resolved below the workspace.
struct Target {
    /// Workspace-relative path; `None` for the workspace root.
    rel: Option<String>,
    /// How the path is shown back: absolute, under the workspace.
    shown: String,
}

fn resolve(path: &str) -> std::result::Result<Target, String> {
    let path = path.trim();
    let relative = if path == WORKSPACE || path == format!("{WORKSPACE}/") {
        return Ok(Target {
            rel: None,
            shown: WORKSPACE.to_string(),
        });
    } else if let Some(rest) = path.strip_prefix(&format!("{WORKSPACE}/")) {
        rest
    } else if path.starts_with('/') {
        return Err(format!(
            "The path {path} is outside the repository; give a path under {WORKSPACE} or relative to it."
        ));
    } else {
        path
    };
    if matches!(relative.trim_matches('/'), "" | ".") {
        return Ok(Target {
            rel: None,
            shown: WORKSPACE.to_string(),
        });
    }
    match sandbox::normalise_path(relative) {
        Ok(rel) => Ok(Target {
            shown: format!("{WORKSPACE}/{rel}"),
            rel: Some(rel),
        }),
        Err(e) => Err(format!("The path {path} cannot be used: {e}.")),
    }
}

/// Mistakes of the agent become observations; anything else is a sandbox failure.
fn agent_facing(error: &sandbox::Error) -> bool {
    matches!(
        error,
        sandbox::Error::PathRefused { .. } | sandbox::Error::WorkspaceFile { .. }
    )
}

/// What a path is, as the agent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Missing,
    File {
        executable: bool,
    },
    Directory,
    /// A symlink, device, socket or fifo.
    Other,
}

const PROBE: &str = r#"if [ -L "$1" ]; then echo other; elif [ -d "$1" ]; then echo dir; find "$1" -maxdepth 2 -not -path '*/.*' | sort; elif [ -f "$1" ]; then if [ -x "$1" ]; then echo exec; else echo file; fi; elif [ -e "$1" ]; then echo other; else echo missing; fi"#;

/// The kind of `shown`, and for a directory its listing two levels deep.
async fn probe(episode: &dyn Workspace, shown: &str) -> Result<(Kind, String)> {
    let request = ExecRequest::new(["bash", "-c", PROBE, "probe", shown]);
    let result = episode.exec(&request).await?;
    let text = result.stdout.to_text();
    let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    let kind = match first.trim() {
        "dir" => Kind::Directory,
        "file" => Kind::File { executable: false },
        "exec" => Kind::File { executable: true },
        "missing" => Kind::Missing,
        _ => Kind::Other,
    };
    Ok((kind, rest.to_string()))
}

fn string_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

/// An integer argument, also accepted as a numeric string.
fn int_arg(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

fn required<'a>(args: &'a Value, key: &str, command: &str) -> std::result::Result<&'a str, String> {
    string_arg(args, key)
        .ok_or_else(|| format!("Parameter `{key}` is required for command `{command}`."))
}

/// `cat -n` numbering of `lines`, the first being line `first`.
fn numbered<'a>(lines: impl Iterator<Item = &'a str>, first: usize) -> String {
    let mut out = String::new();
    for (i, line) in lines.enumerate() {
        out.push_str(&format!("{:6}\t{line}\n", first + i));
    }
    out
}

/// Lines of a text, without the empty piece after a final newline.
fn lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    lines
}

/// Lines `from..=to` (1-based, clamped) of `text`, numbered.
fn snippet(text: &str, from: usize, to: usize) -> String {
    let all = lines(text);
    let from = from.max(1);
    let to = to.min(all.len());
    if from > to {
        return String::new();
    }
    numbered(all[from - 1..to].iter().copied(), from)
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte].matches('\n').count() + 1
}

/// Start offsets of every occurrence of `needle`, overlapping ones included.
fn occurrences(haystack: &str, needle: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut start = 0;
    while let Some(i) = haystack[start..].find(needle) {
        found.push(start + i);
        let step = haystack[start + i..]
            .chars()
            .next()
            .map_or(1, char::len_utf8);
        start += i + step;
        if start > haystack.len() {
            break;
        }
    }
    found
}

pub struct Editor<'a> {
    pub episode: &'a dyn Workspace,
    pub settings: &'a ToolSettings,
    pub history: &'a mut EditHistory,
}

/// What the tool says: a result, or a mistake to show the model.
type Outcome = std::result::Result<String, String>;

/// What a path holds.
enum Read {
    Text(String),
    /// A directory, with its listing.
    Directory(String),
    /// Something the model should hear about (missing, binary, a symlink).
    Problem(String),
}

impl Editor<'_> {
    pub async fn run(&mut self, args: &Value) -> Result<Observation> {
        let outcome = match self.dispatch(args).await {
            Ok(outcome) => outcome,
            Err(crate::Error::Sandbox(e)) if agent_facing(&e) => Err(format!("{e}.")),
            Err(e) => return Err(e),
        };
        Ok(match outcome {
            Ok(text) => Observation::ok(text),
            Err(text) => Observation::error(text),
        })
    }

    async fn dispatch(&mut self, args: &Value) -> Result<Outcome> {
        let Some(command) = string_arg(args, "command") else {
            return Ok(Err("Parameter `command` is required: one of view, create, str_replace, insert, undo_edit.".into()));
        };
        let path = match required(args, "path", command) {
            Ok(path) => path,
            Err(e) => return Ok(Err(e)),
        };
        let target = match resolve(path) {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        match command {
            "view" => self.view(&target, args.get("view_range")).await,
            "create" => self.create(&target, args).await,
            "str_replace" => self.str_replace(&target, args).await,
            "insert" => self.insert(&target, args).await,
            "undo_edit" => self.undo(&target).await,
            other => Ok(Err(format!(
                "Unknown command `{other}`; use one of view, create, str_replace, insert, undo_edit."
            ))),
        }
    }

    /// What a path the model names holds.
    async fn read(&self, target: &Target) -> Result<Read> {
        let Some(rel) = &target.rel else {
            let (_, listing) = probe(self.episode, &target.shown).await?;
            return Ok(Read::Directory(listing));
        };
        let bytes = match self.episode.read_file(rel, self.settings.max_file_bytes) {
            Ok(bytes) => bytes,
            Err(e) if agent_facing(&e) => {
                let (kind, listing) = probe(self.episode, &target.shown).await?;
                return Ok(match kind {
                    Kind::Directory => Read::Directory(listing),
                    Kind::Missing => {
                        Read::Problem(format!("The path {} does not exist.", target.shown))
                    }
                    _ => Read::Problem(format!("{} cannot be read: {e}.", target.shown)),
                });
            }
            Err(e) => return Err(e.into()),
        };
        Ok(match String::from_utf8(bytes) {
            Ok(text) => Read::Text(text),
            Err(_) => Read::Problem(format!(
                "{} is not UTF-8 text; inspect it with bash instead.",
                target.shown
            )),
        })
    }

    /// The text of a file to edit, or an error for the model.
    async fn read_text(&self, target: &Target) -> Result<std::result::Result<String, String>> {
        Ok(match self.read(target).await? {
            Read::Text(text) => Ok(text),
            Read::Directory(_) => Err(format!("{} is a directory, not a file.", target.shown)),
            Read::Problem(problem) => Err(problem),
        })
    }

    /// Writes `text`, keeping the executable bit of the file it replaces.
    async fn write(
        &mut self,
        target: &Target,
        rel: &str,
        previous: Option<Vec<u8>>,
        text: &[u8],
    ) -> Result<()> {
        let executable = match previous {
            Some(_) => matches!(
                probe(self.episode, &target.shown).await?.0,
                Kind::File { executable: true }
            ),
            None => false,
        };
        self.episode.write_file(rel, text, executable)?;
        self.history
            .files
            .entry(rel.to_string())
            .or_default()
            .push(previous);
        Ok(())
    }

    async fn view(&mut self, target: &Target, range: Option<&Value>) -> Result<Outcome> {
        let range = range.filter(|r| !r.is_null());
        let text = match self.read(target).await? {
            Read::Text(text) => text,
            Read::Directory(_) if range.is_some() => {
                return Ok(Err("`view_range` applies to files, not directories.".into()))
            }
            Read::Directory(listing) => {
                return Ok(Ok(format!(
                    "Here are the files and directories up to 2 levels deep in {}, hidden entries left out:\n{listing}",
                    target.shown
                )))
            }
            Read::Problem(problem) => return Ok(Err(problem)),
        };
        let all = lines(&text);
        let n = all.len();
        let (from, to) = match range {
            None => (1, n),
            Some(range) => {
                let bounds: Option<Vec<i64>> = range
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .and_then(|a| a.iter().map(int_arg).collect());
                let Some(bounds) = bounds else {
                    return Ok(Err(format!(
                        "Invalid `view_range` {range}: give two line numbers [first, last]."
                    )));
                };
                let (first, last) = (bounds[0], bounds[1]);
                if first < 1 || first as usize > n.max(1) {
                    return Ok(Err(format!(
                        "Invalid `view_range` [{first}, {last}]: the first line must be between 1 and {n}."
                    )));
                }
                let last = if last == -1 { n as i64 } else { last };
                if last < first || last as usize > n {
                    return Ok(Err(format!(
                        "Invalid `view_range` [{first}, {last}]: the last line must be between {first} and {n}, or -1 for the end of the file."
                    )));
                }
                (first as usize, last as usize)
            }
        };
        let body = if n == 0 {
            "(the file is empty)\n".to_string()
        } else {
            numbered(all[from - 1..to].iter().copied(), from)
        };
        let mut out = format!(
            "Here's the result of running `cat -n` on {}:\n{body}",
            target.shown
        );
        if out.len() > self.settings.max_view_bytes {
            let mut cut = self.settings.max_view_bytes;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("\n<response clipped><NOTE>Only part of the file was shown to save context. Use `view_range`, or `grep -n` in bash, to see the rest.</NOTE>\n");
        }
        Ok(Ok(out))
    }

    async fn create(&mut self, target: &Target, args: &Value) -> Result<Outcome> {
        let Some(rel) = target.rel.clone() else {
            return Ok(Err(format!("{} is a directory, not a file.", target.shown)));
        };
        let text = match required(args, "file_text", "create") {
            Ok(text) => text,
            Err(e) => return Ok(Err(e)),
        };
        match probe(self.episode, &target.shown).await?.0 {
            Kind::Missing => {}
            Kind::Directory => {
                return Ok(Err(format!("{} is a directory, not a file.", target.shown)))
            }
            _ => {
                return Ok(Err(format!(
                    "A file already exists at {}; `create` never overwrites. Edit it with `str_replace`, or remove it with bash first.",
                    target.shown
                )))
            }
        }
        self.write(target, &rel, None, text.as_bytes()).await?;
        Ok(Ok(format!(
            "File created successfully at: {}",
            target.shown
        )))
    }

    fn edited(&self, target: &Target, text: &str, first_line: usize, last_line: usize) -> String {
        let context = self.settings.snippet_lines;
        format!(
            "The file {shown} has been edited. Here's the result of running `cat -n` on a snippet of {shown}:\n{}Review the changes and make sure they are as expected. Edit the file again if necessary.",
            snippet(text, first_line.saturating_sub(context), last_line + context),
            shown = target.shown
        )
    }

    async fn str_replace(&mut self, target: &Target, args: &Value) -> Result<Outcome> {
        let old = match required(args, "old_str", "str_replace") {
            Ok(old) => old,
            Err(e) => return Ok(Err(e)),
        };
        let new = string_arg(args, "new_str").unwrap_or("");
        if old.is_empty() {
            return Ok(Err(
                "`old_str` must not be empty; to add text, use `insert`.".into(),
            ));
        }
        let text = match self.read_text(target).await? {
            Ok(text) => text,
            Err(e) => return Ok(Err(e)),
        };
        let found = occurrences(&text, old);
        match found.len() {
            0 => {
                let hint = if !old.trim().is_empty() && text.contains(old.trim()) {
                    " It does appear once leading and trailing whitespace are removed: check the indentation and line ends."
                } else {
                    " Check the exact text with `view` first."
                };
                return Ok(Err(format!(
                    "No replacement was performed: `old_str` does not appear verbatim in {}.{hint}",
                    target.shown
                )));
            }
            1 => {}
            n => {
                let lines: Vec<String> = found
                    .iter()
                    .map(|&i| line_of(&text, i).to_string())
                    .collect();
                return Ok(Err(format!(
                    "No replacement was performed: `old_str` occurs {n} times in {}, at lines {}. Include more surrounding lines so that it matches exactly once.",
                    target.shown,
                    lines.join(", ")
                )));
            }
        }
        if old == new {
            return Ok(Err(
                "No replacement was performed: `old_str` and `new_str` are the same.".into(),
            ));
        }
        let start = found[0];
        let edited = format!("{}{new}{}", &text[..start], &text[start + old.len()..]);
        let rel = target.rel.clone().expect("a file was read");
        self.write(target, &rel, Some(text.into_bytes()), edited.as_bytes())
            .await?;
        let first = line_of(&edited, start);
        let last = first + new.matches('\n').count();
        Ok(Ok(self.edited(target, &edited, first, last)))
    }

    async fn insert(&mut self, target: &Target, args: &Value) -> Result<Outcome> {
        let Some(line) = args.get("insert_line").and_then(int_arg) else {
            return Ok(Err(
                "Parameter `insert_line` (an integer) is required for command `insert`.".into(),
            ));
        };
        let new = match required(args, "new_str", "insert") {
            Ok(new) => new,
            Err(e) => return Ok(Err(e)),
        };
        let text = match self.read_text(target).await? {
            Ok(text) => text,
            Err(e) => return Ok(Err(e)),
        };
        let n = lines(&text).len();
        if line < 0 || line as usize > n {
            return Ok(Err(format!(
                "Invalid `insert_line` {line}: {} has {n} lines, so give a number between 0 and {n}.",
                target.shown
            )));
        }
        let line = line as usize;
        // Byte offset just after line `line`.
        let offset = if line == 0 {
            0
        } else {
            text.match_indices('\n')
                .nth(line - 1)
                .map_or(text.len(), |(i, _)| i + 1)
        };
        let mut inserted = String::new();
        if offset == text.len() && !text.is_empty() && !text.ends_with('\n') {
            inserted.push('\n');
        }
        inserted.push_str(new);
        if !new.ends_with('\n') {
            inserted.push('\n');
        }
        let edited = format!("{}{inserted}{}", &text[..offset], &text[offset..]);
        let rel = target.rel.clone().expect("a file was read");
        self.write(target, &rel, Some(text.into_bytes()), edited.as_bytes())
            .await?;
        let last = line + new.trim_end_matches('\n').matches('\n').count() + 1;
        Ok(Ok(self.edited(target, &edited, line + 1, last)))
    }

    async fn undo(&mut self, target: &Target) -> Result<Outcome> {
        let Some(rel) = target.rel.clone() else {
            return Ok(Err(format!("{} is a directory, not a file.", target.shown)));
        };
        let Some(previous) = self.history.files.get_mut(&rel).and_then(Vec::pop) else {
            return Ok(Err(format!(
                "There is no edit of {} to undo.",
                target.shown
            )));
        };
        match previous {
            None => {
                let request = ExecRequest::new(["rm", "-f", "--", target.shown.as_str()]);
                self.episode.exec(&request).await?;
                Ok(Ok(format!(
                    "Last edit to {} undone: the file it created was removed.",
                    target.shown
                )))
            }
            Some(bytes) => {
                let executable = matches!(
                    probe(self.episode, &target.shown).await?.0,
                    Kind::File { executable: true }
                );
                self.episode.write_file(&rel, &bytes, executable)?;
                let text = String::from_utf8_lossy(&bytes);
                Ok(Ok(format!(
                    "Last edit to {} undone successfully. Here's the result of running `cat -n` on its start:\n{}",
                    target.shown,
                    snippet(&text, 1, 2 * self.settings.snippet_lines + 1)
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let check = |path: &str, expected: std::result::Result<Option<&str>, ()>| {
            let got = resolve(path).map(|t| t.rel).map_err(|_| ());
            assert_eq!(got, expected.map(|r| r.map(String::from)), "{path:?}");
        };
        check("a.py", Ok(Some("a.py")));
        check("./pkg//a.py", Ok(Some("pkg/a.py")));
        check("/workspace/pkg/a.py", Ok(Some("pkg/a.py")));
        check("/workspace", Ok(None));
        check("/workspace/", Ok(None));
        check(".", Ok(None));
        check("/etc/passwd", Err(()));
        check("/workspaces/x", Err(()));
        check("../x", Err(()));
        check("/workspace/../etc", Err(()));
    }

    #[test]
    fn overlapping_occurrences() {
        assert_eq!(occurrences("aaa", "aa"), vec![0, 1]);
        assert_eq!(occurrences("xéx éx", "éx"), vec![1, 5]);
        assert_eq!(occurrences("abc", "d"), Vec::<usize>::new());
    }

    #[test]
    fn line_splitting() {
        assert_eq!(lines(""), Vec::<&str>::new());
        assert_eq!(lines("a"), vec!["a"]);
        assert_eq!(lines("a\n"), vec!["a"]);
        assert_eq!(lines("a\n\nb"), vec!["a", "", "b"]);
        assert_eq!(
            snippet("a\nb\nc\n", 0, 9),
            "     1\ta\n     2\tb\n     3\tc\n"
        );
    }
}
