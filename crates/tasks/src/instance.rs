//! Task instances: what the agent starts from, what it is asked, and the hidden material its
//! answer is graded against. One validated bug yields one instance of each skill.
//!
//! The agent's workspace is the project's pristine snapshot with `setup` applied (the bug
//! written in, hidden test files deleted). Everything under `hidden` stays out of the agent's
//! reach and out of its prompt.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::patch::FileEdits;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skill {
    Localization,
    Editing,
    TestGeneration,
    Reproduction,
    Review,
    /// Composite: SWE-bench-style bug fixing from an issue.
    BugFixing,
}

impl Skill {
    pub const ALL: [Skill; 6] = [
        Skill::Localization,
        Skill::Editing,
        Skill::TestGeneration,
        Skill::Reproduction,
        Skill::Review,
        Skill::BugFixing,
    ];
    pub const ATOMIC: [Skill; 5] = [
        Skill::Localization,
        Skill::Editing,
        Skill::TestGeneration,
        Skill::Reproduction,
        Skill::Review,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skill::Localization => "localization",
            Skill::Editing => "editing",
            Skill::TestGeneration => "test_generation",
            Skill::Reproduction => "reproduction",
            Skill::Review => "review",
            Skill::BugFixing => "bug_fixing",
        }
    }

    pub fn is_composite(self) -> bool {
        self == Skill::BugFixing
    }

    /// The (lowest, highest) reward of the skill.
    pub fn reward_range(self) -> (f64, f64) {
        match self {
            Skill::Localization => (-1.0, 1.0),
            _ => (0.0, 1.0),
        }
    }
}

impl std::str::FromStr for Skill {
    type Err = String;
    fn from_str(text: &str) -> Result<Skill, String> {
        Skill::ALL
            .into_iter()
            .find(|s| s.name() == text || s.name().replace('_', "-") == text)
            .ok_or_else(|| {
                format!(
                    "unknown skill `{text}`: expected one of {}",
                    Skill::ALL.map(Skill::name).join(", ")
                )
            })
    }
}

/// The project an instance comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRef {
    pub name: String,
    pub version: String,
    pub ecosystem: corpus::Ecosystem,
    /// Snapshot id of the pristine tree (in place of SWE-bench's base_commit).
    pub snapshot: String,
}

/// The bug an instance derives from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BugRef {
    pub bug_id: String,
    pub file: String,
    pub function: Option<String>,
    pub operators: Vec<String>,
    pub line: usize,
    pub description: String,
    pub seed: u64,
}

/// The function a test-generation instance targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFunction {
    pub file: String,
    pub qualname: String,
    pub signature: String,
    pub docstring: Option<String>,
    pub line: usize,
    /// How to import it, e.g. `from toolz.itertoolz import groupby`.
    pub import_hint: String,
}

/// What makes a generated Rust test file part of the build: a `#[cfg(test)] #[path] mod`
/// declaration appended to the target's file, so the tests sit beside the function (private
/// items included) as the crate's own unit tests do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Harness {
    /// Source edits that declare the test module (the target's file with the declaration
    /// appended), applied for the run on the original code. Every mutant's edits already hold
    /// the declaration.
    pub edits: FileEdits,
    /// The id prefix of the generated tests (`lib::kebab::atomskill_tests::`): only tests under
    /// it are run and counted.
    pub test_prefix: String,
}

/// A buggy variant of the target function used to grade generated tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutant {
    pub id: String,
    pub description: String,
    /// Edits that turn the pristine tree into this mutant.
    pub edits: FileEdits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateKind {
    /// The gold fix.
    Gold,
    /// The gold fix written differently (same behaviour).
    Equivalent,
    /// The gold fix plus a change that breaks other tests.
    BreaksOther,
    /// A change elsewhere that leaves the bug in place.
    WrongPlace,
    /// Fixes one part of a bug made of several changes.
    Partial,
}

/// What the agent is asked, per skill, and what its answer is graded against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "skill", rename_all = "snake_case")]
pub enum Task {
    Localization {
        issue: String,
        gold_files: Vec<String>,
    },
    Editing {
        instruction: String,
        gold_patch: FileEdits,
        fail_to_pass: Vec<String>,
        pass_to_pass: Vec<String>,
    },
    TestGeneration {
        target: TargetFunction,
        /// Where the generated file is placed for grading (a new file next to the project's
        /// tests, so their conftest fixtures apply).
        grade_path: String,
        mutants: Vec<Mutant>,
        /// A test file that earns the top reward (the project's own tests of the function).
        gold_test: String,
        /// How the generated file is compiled in, where placing it is not enough (Rust: it
        /// becomes a unit-test module of the target's module). None for Python.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        harness: Option<Harness>,
    },
    Reproduction {
        issue: String,
        gold_patch: FileEdits,
        /// A script that earns the top reward.
        gold_script: String,
    },
    Review {
        issue: String,
        candidate_patch: String,
        candidate_kind: CandidateKind,
        /// Whether the candidate is correct, established by running the hidden tests.
        label: bool,
        fail_to_pass: Vec<String>,
        pass_to_pass: Vec<String>,
    },
    BugFixing {
        problem_statement: String,
        gold_patch: FileEdits,
        fail_to_pass: Vec<String>,
        pass_to_pass: Vec<String>,
    },
}

impl Task {
    pub fn skill(&self) -> Skill {
        match self {
            Task::Localization { .. } => Skill::Localization,
            Task::Editing { .. } => Skill::Editing,
            Task::TestGeneration { .. } => Skill::TestGeneration,
            Task::Reproduction { .. } => Skill::Reproduction,
            Task::Review { .. } => Skill::Review,
            Task::BugFixing { .. } => Skill::BugFixing,
        }
    }
}

/// The rewards of the gold answer and of an empty answer, measured before the instance was
/// written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub gold_reward: f64,
    pub empty_reward: f64,
    pub gold_verdict: serde_json::Value,
    pub empty_verdict: serde_json::Value,
    /// The quick reward-hack audit (`crate::hacks`): each hack played and the reward it got.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit: BTreeMap<String, f64>,
    /// Why the instance was dropped by the audit: a hack earned more than the empty answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hacked: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub schema_version: u32,
    pub instance_id: String,
    pub project: ProjectRef,
    pub bug: BugRef,
    /// Applied to the pristine snapshot to make the agent's starting workspace.
    pub setup: FileEdits,
    pub task: Task,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Instance {
    pub fn skill(&self) -> Skill {
        self.task.skill()
    }
}
