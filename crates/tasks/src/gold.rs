//! The answers a perfect agent would leave, per task: what the oracle policy replays, what the
//! factory validates every instance with, and where scripted policies put their files.

use corpus::Ecosystem;
use serde_json::json;

use crate::instance::{Instance, Task};
use crate::patch::FileEdits;
use crate::verify::Answer;

/// The answer a perfect agent would leave: submit arguments and changed files (relative to the
/// pristine snapshot, as the agent runtime captures them).
pub fn gold_answer(instance: &Instance) -> Answer {
    match &instance.task {
        Task::Localization { gold_files, .. } => Answer {
            submission: json!({ "files": gold_files }),
            files: instance.setup.clone(),
        },
        Task::Editing { gold_patch, .. } | Task::BugFixing { gold_patch, .. } => Answer {
            submission: json!({}),
            files: instance.setup.then(gold_patch),
        },
        Task::TestGeneration {
            gold_test,
            grade_path,
            harness,
            ..
        } => {
            // Python: any path (the grader places the file); Rust: the declared module's file.
            let path = if harness.is_some() {
                grade_path.as_str()
            } else {
                "test_generated.py"
            };
            Answer {
                submission: json!({ "path": path }),
                files: instance
                    .setup
                    .then(&FileEdits::new().write(path, gold_test.clone())),
            }
        }
        Task::Reproduction { gold_script, .. } => {
            let path = reproduction_path(instance.project.ecosystem);
            Answer {
                submission: json!({ "path": path }),
                files: instance
                    .setup
                    .then(&FileEdits::new().write(path, gold_script.clone())),
            }
        }
        Task::Review { label, .. } => Answer {
            submission: json!({ "verdict": if *label { "YES" } else { "NO" }, "review": "gold label" }),
            files: instance.setup.clone(),
        },
    }
}

/// Where a reproduction script goes in the workspace (and where the grader looks for it).
pub fn reproduction_path(ecosystem: Ecosystem) -> &'static str {
    match ecosystem {
        Ecosystem::Pypi => "reproduce_issue.py",
        Ecosystem::Crates => "reproduce_issue.sh",
    }
}
