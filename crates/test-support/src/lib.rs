//! Fixtures for the tests of atomskill's crates, kept out of every library:
//!
//! - [`FakeWorkspace`]: a [`sandbox::Workspace`] over a temporary directory, commands run
//!   unisolated, so agent and rollout logic can be tested without root;
//! - [`fixture`]: the mini Python project and the mini crate with real test suites, and task
//!   instances of every skill made from them (these need root for the sandbox and, for Python,
//!   the virtualenv named by `ATOMSKILL_TEST_VENV`);
//! - [`instance`]: instance builders for tests that only need an instance's shape.
//!
//! Never a dependency of a library: `[dev-dependencies]` only.

pub mod fixture;
mod workspace;

pub use crate::workspace::FakeWorkspace;

/// A localization instance of project `p` 1 for bug `bug`, with nothing else filled in.
pub fn instance(id: &str, bug: &str) -> tasks::Instance {
    let line = serde_json::json!({
        "schema_version": tasks::SCHEMA_VERSION,
        "instance_id": id,
        "project": {"name": "p", "version": "1", "ecosystem": "pypi", "snapshot": "s"},
        "bug": {"bug_id": bug, "file": "f.py", "function": null, "operators": [], "line": 1, "description": "", "seed": 0},
        "setup": {},
        "task": {"skill": "localization", "issue": "", "gold_files": []},
    });
    serde_json::from_value(line).expect("a well-formed instance")
}
