//! The clean suite, run several times: which tests pass, fail or skip on pristine code, and which
//! are flaky (their outcome differed between runs, or they were missing from one). Flaky tests
//! are left out of every label.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sandbox::{Sandbox, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runner::{Selection, TestRunner};
use crate::status::TestStatus;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    /// Outcome of every test that behaved the same in every run.
    pub statuses: BTreeMap<String, TestStatus>,
    pub flaky: BTreeSet<String>,
    /// Median seconds per test over the runs.
    pub durations: BTreeMap<String, f64>,
    pub run_seconds: Vec<f64>,
}

impl Baseline {
    /// Tests that pass on pristine code in every run.
    pub fn passing(&self) -> impl Iterator<Item = &String> {
        self.statuses
            .iter()
            .filter(|(_, s)| s.is_pass())
            .map(|(id, _)| id)
    }

    /// Runs the whole suite `runs` times, each in a fresh episode of `snapshot`.
    pub async fn measure(
        runner: &TestRunner,
        sandbox: &Sandbox,
        snapshot: &Snapshot,
        runs: usize,
        timeout: Duration,
    ) -> Result<Baseline> {
        let limits = TestRunner::episode_limits(sandbox.default_limits());
        let mut all = Vec::new();
        for run_idx in 0..runs.max(1) {
            let episode = sandbox.create_episode_with(snapshot, limits.clone())?;
            let run = runner.run(&episode, &Selection::All, timeout).await;
            episode.destroy()?;
            let run = run?;
            if !run.consistent {
                return Err(Error::Baseline(format!(
                    "clean run {} of {} is unusable: {}\n{}",
                    run_idx + 1,
                    runner.prepared().spec.key(),
                    run.anomalies.join("; "),
                    run.output_tail
                )));
            }
            if run.statuses.is_empty() {
                return Err(Error::Baseline(format!(
                    "clean run {} of {} ran no tests (exit {:?}):\n{}",
                    run_idx + 1,
                    runner.prepared().spec.key(),
                    run.exit,
                    run.output_tail
                )));
            }
            all.push(run);
        }
        let mut ids: BTreeSet<&String> = BTreeSet::new();
        for run in &all {
            ids.extend(run.statuses.keys());
        }
        let mut baseline = Baseline {
            statuses: BTreeMap::new(),
            flaky: BTreeSet::new(),
            durations: BTreeMap::new(),
            run_seconds: all.iter().map(|r| r.wall_seconds).collect(),
        };
        for id in ids {
            let outcomes: Vec<Option<TestStatus>> =
                all.iter().map(|r| r.statuses.get(id).copied()).collect();
            if outcomes.iter().all(|o| *o == outcomes[0]) {
                baseline
                    .statuses
                    .insert(id.clone(), outcomes[0].expect("present in some run"));
                let mut times: Vec<f64> = all
                    .iter()
                    .filter_map(|r| r.durations.get(id).copied())
                    .collect();
                times.sort_by(f64::total_cmp);
                if !times.is_empty() {
                    baseline
                        .durations
                        .insert(id.clone(), times[times.len() / 2]);
                }
            } else {
                baseline.flaky.insert(id.clone());
            }
        }
        Ok(baseline)
    }
}
