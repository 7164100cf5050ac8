//! Per-test outcomes and the report of one test run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    Passed,
    Failed,
    Error,
    Skipped,
    Xfail,
}

impl TestStatus {
    /// A test counts as passing only when it ran and passed (skipped and xfail do not count, as
    /// in SWE-bench: a skipped FAIL_TO_PASS test is a failure).
    pub fn is_pass(self) -> bool {
        self == TestStatus::Passed
    }

    /// When one id is reported twice (a test failing in call and erroring in teardown), the
    /// worse outcome is kept.
    pub fn severity(self) -> u8 {
        match self {
            TestStatus::Passed => 0,
            TestStatus::Xfail => 1,
            TestStatus::Skipped => 2,
            TestStatus::Failed => 3,
            TestStatus::Error => 4,
        }
    }
}

/// Outcomes parsed from one run, before the exit-code cross-check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    pub statuses: BTreeMap<String, TestStatus>,
    /// Seconds per test id, where the framework reports them.
    pub durations: BTreeMap<String, f64>,
    /// The framework's one-line failure message per failed or errored test.
    #[serde(default)]
    pub messages: BTreeMap<String, String>,
    /// What the parser found suspicious (counts that disagree with a summary line...).
    pub anomalies: Vec<String>,
}

impl Parsed {
    pub(crate) fn record(&mut self, id: String, status: TestStatus, seconds: Option<f64>) {
        let entry = self.statuses.entry(id.clone()).or_insert(status);
        if status.severity() > entry.severity() {
            *entry = status;
        }
        if let Some(seconds) = seconds {
            *self.durations.entry(id).or_insert(0.0) += seconds;
        }
    }

    pub fn count(&self, status: TestStatus) -> usize {
        self.statuses.values().filter(|s| **s == status).count()
    }
}
