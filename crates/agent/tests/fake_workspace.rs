//! The agent loop over the [`test_support::FakeWorkspace`]: the same tools and budgets as in
//! a sandbox episode, testable without root (no isolation; the commands here are the test's).

mod common;

use agent::{run_episode, Outcome, OutcomeKind};
use common::{settings, task, CALC};
use policy::{ScriptedPolicy, ScriptedTurn};
use sandbox::{Entry, Workspace};
use serde_json::json;
use test_support::FakeWorkspace;

#[tokio::test]
async fn the_tools_act_on_a_fake_workspace_and_the_diff_sees_it() {
    let workspace =
        FakeWorkspace::new(&[("pkg/calc.py", CALC), ("README.md", "# demo\n")]).unwrap();
    let policy = ScriptedPolicy::new(vec![
        ScriptedTurn::call(
            "bash",
            json!({"command": "grep -n 'a - b' /workspace/pkg/calc.py"}),
        ),
        ScriptedTurn::call(
            "str_replace_editor",
            json!({"command": "view", "path": "/workspace/pkg/calc.py"}),
        ),
        ScriptedTurn::call(
            "str_replace_editor",
            json!({"command": "str_replace", "path": "/workspace/pkg/calc.py",
                   "old_str": "return a - b", "new_str": "return a - b  # checked"}),
        ),
        ScriptedTurn::call(
            "bash",
            json!({"command": "echo note > /workspace/NOTES.txt"}),
        ),
        ScriptedTurn::call("submit", json!({"files": ["pkg/calc.py"]})),
    ]);
    let trajectory = run_episode(&policy, &workspace, &task(), &settings(), 3)
        .await
        .unwrap();
    assert_eq!(
        trajectory.outcome.kind(),
        OutcomeKind::Submitted,
        "{:?}",
        trajectory.outcome
    );
    let Outcome::Submitted { arguments } = &trajectory.outcome else {
        unreachable!()
    };
    assert_eq!(arguments["files"], json!(["pkg/calc.py"]));
    // The grep ran in the workspace and its output reached the model.
    let grep = &trajectory.messages[trajectory.steps[0].calls[0].observation_message.unwrap()];
    assert!(
        grep.content.contains("6:    return a - b"),
        "{}",
        grep.content
    );
    // The editor's view numbers the lines of the file.
    let view = &trajectory.messages[trajectory.steps[1].calls[0].observation_message.unwrap()];
    assert!(
        view.content.contains("     6\t    return a - b"),
        "{}",
        view.content
    );

    let diff = workspace.diff().unwrap();
    assert_eq!(diff.changed_paths(), vec!["NOTES.txt", "pkg/calc.py"]);
    let calc = diff
        .changes
        .iter()
        .find(|c| c.path == "pkg/calc.py")
        .unwrap();
    let Some(Entry::File { content, .. }) = &calc.new else {
        panic!("{calc:?}")
    };
    assert_eq!(
        String::from_utf8_lossy(content),
        CALC.replace("return a - b", "return a - b  # checked")
    );
}

#[tokio::test]
async fn paths_outside_the_fake_workspace_are_refused() {
    let workspace = FakeWorkspace::new(&[("a.txt", "a\n")]).unwrap();
    assert!(workspace.read_file("../../etc/passwd", 1 << 20).is_err());
    assert!(workspace
        .write_file("/workspace/../x", b"x", false)
        .is_err());
    assert_eq!(
        workspace.read_file("/workspace/a.txt", 1 << 20).unwrap(),
        b"a\n"
    );
}
