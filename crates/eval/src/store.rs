//! A run's directory: `run.json` (what was asked), `episodes.jsonl` (one [`EpisodeRecord`] per
//! finished episode, append-only, with its trajectory), `summary.json` and `report.html`.
//! A rerun with the same options runs only the episodes without a scored record.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use rollout::EpisodeRecord;

pub const EPISODES_FILE: &str = "episodes.jsonl";
pub const RUN_FILE: &str = "run.json";
pub const SUMMARY_FILE: &str = "summary.json";
pub const REPORT_FILE: &str = "report.html";

/// What a run directory was made for; a rerun must ask for the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub schema_version: u32,
    pub atomskill_version: String,
    /// The policy as given (`oracle`, `null`, `openai:URL` with the model, `local:DIR`).
    pub policy: String,
    pub k: u32,
    pub seed: u64,
    pub tasks: String,
    pub instances: usize,
}

impl RunInfo {
    /// Checks `self` against the run directory's `run.json`, writing it if there is none.
    pub fn claim(&self, out: &Path) -> Result<()> {
        let path = out.join(RUN_FILE);
        if let Ok(bytes) = std::fs::read(&path) {
            let earlier: RunInfo =
                serde_json::from_slice(&bytes).map_err(|e| Error::RunMismatch {
                    path: path.clone(),
                    what: format!("unreadable: {e}"),
                })?;
            for (what, a, b) in [
                ("policy", &earlier.policy, &self.policy),
                ("k", &earlier.k.to_string(), &self.k.to_string()),
                ("seed", &earlier.seed.to_string(), &self.seed.to_string()),
            ] {
                if a != b {
                    return Err(Error::RunMismatch {
                        path,
                        what: format!("{what} was `{a}`, now `{b}`"),
                    });
                }
            }
            return Ok(());
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let bytes = serde_json::to_vec_pretty(self).expect("run info serialises");
        Ok(corpus::fetch::write_atomically(&path, &bytes)?)
    }
}

/// The last record of each (instance, sample) in `path` (none if the file does not exist).
pub fn latest_records(path: &Path) -> Result<BTreeMap<(String, u32), EpisodeRecord>> {
    let mut latest = BTreeMap::new();
    if !path.exists() {
        return Ok(latest);
    }
    let report = agent::read_jsonl::<EpisodeRecord>(path)?;
    if let Some(tail) = report.truncated_tail {
        tracing::warn!(
            "{}: a partial last line ({} bytes, line {}) is ignored; its episode runs again",
            path.display(),
            tail.bytes,
            tail.line
        );
    }
    for record in report.records {
        latest.insert((record.instance_id.clone(), record.sample), record);
    }
    Ok(latest)
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("results serialise");
    Ok(corpus::fetch::write_atomically(path, &bytes)?)
}
