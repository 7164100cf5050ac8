//! The oracle policy: solves an instance through the agent's own tools from its gold answer, so
//! it must earn the top reward on every valid instance. Its trajectories are the warm-start data
//! of SFT, so its edits are small `str_replace` calls around what changes, not whole files.

use policy::{ScriptedPolicy, ScriptedTurn};
use serde_json::{json, Value};
use tasks::{Instance, Task};

/// The scripted turns that turn the instance's starting workspace into the gold answer's, then
/// submit. `pristine(path)` is a file's content in the pristine snapshot.
pub fn oracle_turns(
    instance: &Instance,
    pristine: impl Fn(&str) -> Option<String>,
) -> Vec<ScriptedTurn> {
    let mut gold = tasks::gold_answer(instance);
    if let Task::TestGeneration { harness: None, .. } = instance.task {
        // The gold answer names the file the task suggests (Rust: the declared module's file,
        // as the gold answer has it already).
        gold.submission = json!({ "path": crate::task::SUGGESTED_TEST_PATH });
    }
    let mut turns = Vec::new();
    for (path, wanted) in &gold.files.0 {
        let current = match instance.setup.0.get(path) {
            Some(content) => content.clone(),
            None => pristine(path),
        };
        if &current == wanted {
            continue;
        }
        turns.push(match (current, wanted) {
            (_, None) => bash(format!("rm -f -- {}", shell_quote(path))),
            (None, Some(new)) => editor(json!({
                "command": "create", "path": path, "file_text": new,
            })),
            (Some(old), Some(new)) if old.is_empty() => editor(json!({
                "command": "insert", "path": path, "insert_line": 0, "new_str": new,
            })),
            (Some(old), Some(new)) => {
                let (old_str, new_str) = replacement(&old, new);
                editor(json!({
                    "command": "str_replace", "path": path,
                    "old_str": old_str, "new_str": new_str,
                }))
            }
        });
    }
    let submission = match &instance.task {
        Task::Review { label, .. } => json!({
            "review": if *label {
                "The patch fixes the reported behaviour and breaks nothing else."
            } else {
                "The patch does not correctly resolve the issue."
            },
            "verdict": if *label { "YES" } else { "NO" },
        }),
        Task::Editing { .. } | Task::BugFixing { .. } => json!({}),
        _ => gold.submission,
    };
    turns.push(ScriptedTurn::call(policy::SUBMIT_TOOL, submission));
    turns
}

/// The oracle for one instance.
pub fn oracle_policy(
    instance: &Instance,
    pristine: impl Fn(&str) -> Option<String>,
) -> ScriptedPolicy {
    ScriptedPolicy::new(oracle_turns(instance, pristine)).named("oracle")
}

fn bash(command: String) -> ScriptedTurn {
    ScriptedTurn::call("bash", json!({ "command": command }))
}

fn editor(arguments: Value) -> ScriptedTurn {
    ScriptedTurn::call("str_replace_editor", arguments)
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Occurrences of `needle` in `haystack`, overlapping ones included (as the editor counts).
fn occurrences(haystack: &str, needle: &str) -> usize {
    if needle.is_empty() {
        return usize::MAX;
    }
    (0..haystack.len())
        .filter(|&i| haystack.is_char_boundary(i) && haystack[i..].starts_with(needle))
        .count()
}

/// The smallest `old_str`/`new_str` pair of whole lines that turns `old` into `new`: the lines
/// between the common head and tail, widened by context lines until `old_str` occurs once.
pub fn replacement(old: &str, new: &str) -> (String, String) {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let mut head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    loop {
        let old_str: String = a[head..a.len() - tail].concat();
        if occurrences(old, &old_str) == 1 || (head == 0 && tail == 0) {
            return (old_str, b[head..b.len() - tail].concat());
        }
        // Widen towards the side with more room left, one line at a time.
        if head > 0 && (tail == 0 || head >= tail) {
            head -= 1;
        } else {
            tail -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a replacement the way the editor does: the unique occurrence is replaced.
    fn apply(text: &str, old: &str, new: &str) -> String {
        assert_eq!(occurrences(text, old), 1, "old_str {old:?} must be unique");
        text.replacen(old, new, 1)
    }

    #[test]
    fn replacements_are_small_unique_and_exact() {
        let cases: &[(&str, &str, &str)] = &[
            // (old, new, expected old_str)
            ("a\nb\nc\n", "a\nB\nc\n", "b\n"),
            ("x\ny\nx\ny\n", "x\ny\nx\nz\n", "y\nx\ny\n"),
            ("a\nb\n", "a\nb\nc\n", "b\n"),
            ("a\nb\n", "z\na\nb\n", "a\n"),
            ("same\nsame\nsame\n", "same\nsame\n", "same\nsame\nsame\n"),
            ("no newline", "no newline!", "no newline"),
            ("keep\ndrop\nkeep\n", "keep\nkeep\n", "drop\n"),
        ];
        for (old, new, expected) in cases {
            let (old_str, new_str) = replacement(old, new);
            assert_eq!(&old_str, expected, "{old:?} -> {new:?}");
            assert_eq!(apply(old, &old_str, &new_str), *new, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn overlapping_occurrences_count() {
        assert_eq!(occurrences("aaa", "aa"), 2);
        assert_eq!(occurrences("abc", "d"), 0);
    }
}
