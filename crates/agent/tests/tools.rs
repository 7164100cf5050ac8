//! The tools against a real sandbox episode: `bash`, every `str_replace_editor` command and its
//! error cases, and `submit`'s schema check.

mod common;

use std::time::Duration;

use agent::{CallResult, EnabledTools, Observation, Prompts, ToolSettings, Toolbox};
use common::{harness, task, CALC};
use sandbox::Episode;
use serde_json::{json, Value};

async fn call(tools: &mut Toolbox<'_>, name: &str, arguments: Value) -> Observation {
    match tools.call(name, &arguments).await.expect("tool call") {
        CallResult::Observation(observation) => observation,
        CallResult::Submitted(arguments) => panic!("unexpected submission {arguments}"),
    }
}

async fn edit(tools: &mut Toolbox<'_>, arguments: Value) -> Observation {
    call(tools, "str_replace_editor", arguments).await
}

fn read(episode: &Episode, path: &str) -> String {
    String::from_utf8(episode.read_file(path, 1 << 20).expect("read")).expect("utf-8")
}

/// An observation that must be an error mentioning `needle`.
fn assert_error(observation: &Observation, needle: &str) {
    assert!(
        observation.is_error,
        "expected an error: {}",
        observation.text
    );
    assert!(
        observation.text.contains(needle),
        "{:?} does not mention {needle:?}",
        observation.text
    );
}

#[tokio::test]
async fn bash_runs_commands_and_reports_what_happened() {
    let h = harness(1);
    let episode = h.episode();
    let prompts = Prompts::embedded().unwrap();
    let submit = task().submit;
    let settings = ToolSettings {
        command_timeout: Duration::from_secs(1),
        output_head_bytes: 100,
        output_tail_bytes: 100,
        ..ToolSettings::default()
    };
    let mut tools = Toolbox::new(
        &episode,
        &settings,
        &prompts,
        &submit,
        EnabledTools::default(),
        &[],
    );

    let o = call(
        &mut tools,
        "bash",
        json!({"command": "echo hi; echo err >&2; exit 3"}),
    )
    .await;
    assert_eq!(
        o.text,
        "<returncode>3</returncode>\n<output>\nhi\nerr\n</output>"
    );
    assert!(!o.is_error);
    assert_eq!(o.exec.as_ref().unwrap().exit_code, 3);

    let o = call(&mut tools, "bash", json!({"command": "pwd && ls pkg"})).await;
    assert_eq!(
        o.text,
        "<returncode>0</returncode>\n<output>\n/workspace\n__init__.py\ncalc.py\ndeep\n</output>"
    );

    let o = call(&mut tools, "bash", json!({"command": "true"})).await;
    assert_eq!(o.text, "<returncode>0</returncode>\n<output>\n</output>");

    let o = call(&mut tools, "bash", json!({"command": "sleep 5"})).await;
    assert!(
        o.text
            .starts_with("The command did not finish within 1 seconds and was stopped.\n"),
        "{}",
        o.text
    );
    assert_eq!(
        o.exec.as_ref().unwrap().killed_by,
        Some("wall_clock".to_string())
    );

    // seq 1 20000 writes 108,894 bytes; 100 + 100 are shown.
    let o = call(&mut tools, "bash", json!({"command": "seq 1 20000"})).await;
    let exec = o.exec.clone().unwrap();
    assert_eq!((exec.output_bytes, exec.elided_bytes), (108_894, 108_694));
    assert!(
        o.text.contains("\n[... 108694 bytes elided ...]\n"),
        "{}",
        o.text
    );
    assert!(o
        .text
        .starts_with("<returncode>0</returncode>\n<output>\n1\n2\n3\n"));
    assert!(o.text.ends_with("19999\n20000\n</output>"), "{}", o.text);

    assert_error(
        &call(&mut tools, "bash", json!({"command": "  "})).await,
        "empty",
    );
    assert_error(
        &call(&mut tools, "bash", json!({"cmd": "ls"})).await,
        "`command`",
    );
}

#[tokio::test]
async fn editor_views_files_and_directories() {
    let h = harness(2);
    let episode = h.episode();
    let prompts = Prompts::embedded().unwrap();
    let submit = task().submit;
    let settings = ToolSettings::default();
    let mut tools = Toolbox::new(
        &episode,
        &settings,
        &prompts,
        &submit,
        EnabledTools::default(),
        &[],
    );

    let o = edit(
        &mut tools,
        json!({"command": "view", "path": "pkg/calc.py"}),
    )
    .await;
    assert_eq!(
        o.text,
        "Here's the result of running `cat -n` on /workspace/pkg/calc.py:\n     1\tdef add(a, b):\n     2\t    return a + b\n     3\t\n     4\t\n     5\tdef sub(a, b):\n     6\t    return a - b\n"
    );
    let o = edit(
        &mut tools,
        json!({"command": "view", "path": "/workspace/pkg/calc.py", "view_range": [5, -1]}),
    )
    .await;
    assert!(
        o.text
            .ends_with(":\n     5\tdef sub(a, b):\n     6\t    return a - b\n"),
        "{}",
        o.text
    );
    let o = edit(
        &mut tools,
        json!({"command": "view", "path": "pkg/calc.py", "view_range": ["2", 2]}),
    )
    .await;
    assert!(
        o.text.ends_with(":\n     2\t    return a + b\n"),
        "{}",
        o.text
    );
    for (range, needle) in [
        (json!([0, 2]), "first line must be between 1 and 6"),
        (json!([7, 7]), "first line must be between 1 and 6"),
        (json!([3, 2]), "last line must be between 3 and 6"),
        (json!([1, 100]), "last line must be between 1 and 6"),
        (json!([1]), "give two line numbers"),
        (json!("1-2"), "give two line numbers"),
    ] {
        let o = edit(
            &mut tools,
            json!({"command": "view", "path": "pkg/calc.py", "view_range": range}),
        )
        .await;
        assert_error(&o, needle);
    }

    let o = edit(&mut tools, json!({"command": "view", "path": "/workspace"})).await;
    assert!(!o.is_error, "{}", o.text);
    let listing: Vec<&str> = o.text.lines().skip(1).collect();
    assert_eq!(
        listing,
        vec![
            "/workspace",
            "/workspace/README.md",
            "/workspace/data.bin",
            "/workspace/pkg",
            "/workspace/pkg/__init__.py",
            "/workspace/pkg/calc.py",
            "/workspace/pkg/deep",
            "/workspace/run.sh",
            "/workspace/tests",
            "/workspace/tests/test_calc.py",
        ]
    );
    let o = edit(&mut tools, json!({"command": "view", "path": "pkg"})).await;
    assert!(
        o.text.contains("/workspace/pkg/deep/nested\n"),
        "{}",
        o.text
    );
    assert!(!o.text.contains("leaf.py"), "{}", o.text);
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "view", "path": "pkg", "view_range": [1, 2]}),
        )
        .await,
        "applies to files",
    );

    assert_error(
        &edit(&mut tools, json!({"command": "view", "path": "nope.py"})).await,
        "The path /workspace/nope.py does not exist.",
    );
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "view", "path": "/etc/passwd"}),
        )
        .await,
        "outside the repository",
    );
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "view", "path": "../etc/passwd"}),
        )
        .await,
        "cannot be used",
    );
    assert_error(
        &edit(&mut tools, json!({"command": "view", "path": "data.bin"})).await,
        "not UTF-8",
    );
    call(
        &mut tools,
        "bash",
        json!({"command": "ln -s /etc/passwd link"}),
    )
    .await;
    assert_error(
        &edit(&mut tools, json!({"command": "view", "path": "link"})).await,
        "symbolic link",
    );
    assert_error(
        &edit(&mut tools, json!({"command": "view"})).await,
        "Parameter `path` is required",
    );
    assert_error(
        &edit(&mut tools, json!({"path": "a"})).await,
        "Parameter `command` is required",
    );
    assert_error(
        &edit(&mut tools, json!({"command": "delete", "path": "a"})).await,
        "Unknown command `delete`",
    );

    let settings = ToolSettings {
        max_view_bytes: 80,
        ..ToolSettings::default()
    };
    let mut tools = Toolbox::new(
        &episode,
        &settings,
        &prompts,
        &submit,
        EnabledTools::default(),
        &[],
    );
    let o = edit(
        &mut tools,
        json!({"command": "view", "path": "pkg/calc.py"}),
    )
    .await;
    assert!(o.text.contains("<response clipped>"), "{}", o.text);
}

/// (file before, `old_str`, `new_str`, file after or a piece of the error).
type ReplaceCase<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Result<&'a str, &'a str>,
);

/// One `str_replace` on a fresh file holding `original`: the file afterwards, or an error
/// mentioning the given text.
async fn check_replace(
    tools: &mut Toolbox<'_>,
    episode: &Episode,
    case: usize,
    original: &str,
    old: Option<&str>,
    new: Option<&str>,
    expected: Result<&str, &str>,
) {
    let path = format!("cases/case{case}.py");
    episode
        .write_file(&path, original.as_bytes(), false)
        .unwrap();
    let mut arguments = json!({"command": "str_replace", "path": path});
    if let Some(old) = old {
        arguments["old_str"] = old.into();
    }
    if let Some(new) = new {
        arguments["new_str"] = new.into();
    }
    let o = edit(tools, arguments).await;
    match expected {
        Ok(after) => {
            assert!(!o.is_error, "case {case}: {}", o.text);
            assert_eq!(read(episode, &path), after, "case {case}");
            assert!(
                o.text.contains("has been edited"),
                "case {case}: {}",
                o.text
            );
        }
        Err(needle) => {
            assert!(o.is_error, "case {case} should fail: {}", o.text);
            assert!(
                o.text.contains(needle),
                "case {case}: {:?} lacks {needle:?}",
                o.text
            );
            assert_eq!(
                read(episode, &path),
                original,
                "case {case} changed the file"
            );
        }
    }
}

#[tokio::test]
async fn str_replace_cases() {
    let h = harness(3);
    let episode = h.episode();
    let prompts = Prompts::embedded().unwrap();
    let submit = task().submit;
    let settings = ToolSettings::default();
    let mut tools = Toolbox::new(
        &episode,
        &settings,
        &prompts,
        &submit,
        EnabledTools::default(),
        &[],
    );
    let cases: &[ReplaceCase] = &[
        ("a = 1\nb = 2\n", Some("b = 2"), Some("b = 3"), Ok("a = 1\nb = 3\n")),
        ("a = 1\nb = 2\n", Some("a = 1\nb"), Some("c"), Ok("c = 2\n")),
        ("a = 1\nb = 2\n", Some("b = 2\n"), None, Ok("a = 1\n")),
        ("π = 3.14\n", Some("π"), Some("pi"), Ok("pi = 3.14\n")),
        ("x\n", Some("x"), Some("x\ny\nz"), Ok("x\ny\nz\n")),
        ("a = 1\n", Some("a = 2"), Some("a = 3"), Err("No replacement was performed: `old_str` does not appear verbatim in /workspace/cases/case5.py")),
        ("    a = 1\n", Some("a = 1  \n  "), Some("b"), Err("leading and trailing whitespace")),
        ("x = 1\ny = 2\nx = 1\n", Some("x = 1"), Some("x = 2"), Err("occurs 2 times in /workspace/cases/case7.py, at lines 1, 3")),
        ("aaa\n", Some("aa"), Some("b"), Err("occurs 2 times in /workspace/cases/case8.py, at lines 1, 1")),
        ("a\n", Some("a"), Some("a"), Err("are the same")),
        ("a\n", Some(""), Some("b"), Err("must not be empty")),
        ("a\n", None, Some("b"), Err("Parameter `old_str` is required for command `str_replace`")),
    ];
    for (case, (original, old, new, expected)) in cases.iter().enumerate() {
        check_replace(&mut tools, &episode, case, original, *old, *new, *expected).await;
    }
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "str_replace", "path": "missing.py", "old_str": "a", "new_str": "b"}),
        )
        .await,
        "does not exist",
    );
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "str_replace", "path": "pkg", "old_str": "a", "new_str": "b"}),
        )
        .await,
        "is a directory",
    );
}

#[tokio::test]
async fn edits_show_a_snippet_keep_the_mode_and_can_be_undone() {
    let h = harness(4);
    let episode = h.episode();
    let prompts = Prompts::embedded().unwrap();
    let submit = task().submit;
    let settings = ToolSettings {
        snippet_lines: 1,
        ..ToolSettings::default()
    };
    let mut tools = Toolbox::new(
        &episode,
        &settings,
        &prompts,
        &submit,
        EnabledTools::default(),
        &[],
    );

    let o = edit(&mut tools, json!({"command": "str_replace", "path": "pkg/calc.py", "old_str": "return a - b", "new_str": "return a - b  # fixed"})).await;
    assert_eq!(
        o.text,
        "The file /workspace/pkg/calc.py has been edited. Here's the result of running `cat -n` on a snippet of /workspace/pkg/calc.py:\n     5\tdef sub(a, b):\n     6\t    return a - b  # fixed\nReview the changes and make sure they are as expected. Edit the file again if necessary."
    );
    let o = edit(&mut tools, json!({"command": "insert", "path": "pkg/calc.py", "insert_line": 0, "new_str": "import os"})).await;
    assert!(
        o.text
            .contains("     1\timport os\n     2\tdef add(a, b):\n"),
        "{}",
        o.text
    );
    assert!(read(&episode, "pkg/calc.py").starts_with("import os\ndef add"));
    edit(&mut tools, json!({"command": "insert", "path": "pkg/calc.py", "insert_line": 7, "new_str": "\n# end\n"})).await;
    assert!(read(&episode, "pkg/calc.py").ends_with("    return a - b  # fixed\n\n# end\n"));
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "insert", "path": "pkg/calc.py", "insert_line": 99, "new_str": "x"}),
        )
        .await,
        "has 9 lines, so give a number between 0 and 9",
    );
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "insert", "path": "pkg/calc.py", "new_str": "x"}),
        )
        .await,
        "`insert_line`",
    );
    // Undo the three edits in reverse order, then nothing is left to undo.
    for _ in 0..3 {
        let o = edit(
            &mut tools,
            json!({"command": "undo_edit", "path": "pkg/calc.py"}),
        )
        .await;
        assert!(!o.is_error, "{}", o.text);
    }
    assert_eq!(read(&episode, "pkg/calc.py"), CALC);
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "undo_edit", "path": "pkg/calc.py"}),
        )
        .await,
        "no edit of /workspace/pkg/calc.py to undo",
    );

    // Insert into a file without a final newline.
    episode.write_file("nonl.txt", b"a\nb", false).unwrap();
    edit(
        &mut tools,
        json!({"command": "insert", "path": "nonl.txt", "insert_line": 2, "new_str": "c"}),
    )
    .await;
    assert_eq!(read(&episode, "nonl.txt"), "a\nb\nc\n");

    // The executable bit survives an edit and its undo.
    edit(&mut tools, json!({"command": "str_replace", "path": "run.sh", "old_str": "echo run", "new_str": "echo ran"})).await;
    let o = call(&mut tools, "bash", json!({"command": "./run.sh"})).await;
    assert!(o.text.contains("\nran\n"), "{}", o.text);
    edit(
        &mut tools,
        json!({"command": "undo_edit", "path": "run.sh"}),
    )
    .await;
    let o = call(&mut tools, "bash", json!({"command": "./run.sh"})).await;
    assert!(o.text.contains("\nrun\n"), "{}", o.text);

    // Create, refuse to overwrite, undo the creation.
    let o = edit(
        &mut tools,
        json!({"command": "create", "path": "/workspace/new/dir/mod.py", "file_text": "x = 1\n"}),
    )
    .await;
    assert_eq!(
        o.text,
        "File created successfully at: /workspace/new/dir/mod.py"
    );
    assert_eq!(read(&episode, "new/dir/mod.py"), "x = 1\n");
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "create", "path": "new/dir/mod.py", "file_text": "y"}),
        )
        .await,
        "already exists",
    );
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "create", "path": "pkg", "file_text": "y"}),
        )
        .await,
        "is a directory",
    );
    assert_error(
        &edit(&mut tools, json!({"command": "create", "path": "other.py"})).await,
        "`file_text` is required",
    );
    edit(
        &mut tools,
        json!({"command": "undo_edit", "path": "new/dir/mod.py"}),
    )
    .await;
    assert_error(
        &edit(
            &mut tools,
            json!({"command": "view", "path": "new/dir/mod.py"}),
        )
        .await,
        "does not exist",
    );

    // The episode's diff shows what the editor left.
    edit(&mut tools, json!({"command": "str_replace", "path": "pkg/calc.py", "old_str": "a - b", "new_str": "a - b - 0"})).await;
    let patch = episode.diff().unwrap().to_patch();
    assert!(patch.contains("+    return a - b - 0"), "{patch}");
}

#[tokio::test]
async fn submit_checks_its_schema_and_tools_can_be_disabled() {
    let h = harness(5);
    let episode = h.episode();
    let prompts = Prompts::embedded().unwrap();
    let submit = task().submit;
    let settings = ToolSettings::default();
    let enabled = EnabledTools {
        bash: false,
        editor: true,
    };
    let mut tools = Toolbox::new(&episode, &settings, &prompts, &submit, enabled, &[]);
    assert_eq!(tools.names(), vec!["str_replace_editor", "submit"]);
    let specs = tools.specs().unwrap();
    assert_eq!(specs[1].name, "submit");
    assert_eq!(specs[1].parameters, submit.parameters);
    assert!(!tools.has("bash"));
    assert_error(
        &call(&mut tools, "bash", json!({"command": "ls"})).await,
        "no tool named `bash`",
    );

    assert_error(
        &call(&mut tools, "submit", json!({"files": "pkg/calc.py"})).await,
        "Nothing was submitted: `files` must be of type array, not a string",
    );
    match tools
        .call("submit", &json!({"files": ["pkg/calc.py"]}))
        .await
        .unwrap()
    {
        CallResult::Submitted(arguments) => {
            assert_eq!(arguments, json!({"files": ["pkg/calc.py"]}))
        }
        other => panic!("expected a submission, got {other:?}"),
    }
}
