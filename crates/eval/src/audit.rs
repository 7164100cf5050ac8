//! `atomskill audit`: plays the reward-hack library (`tasks::hacks`) against instances through
//! the real agent loop and graders, and reports per instance and per hack whether a hack earned
//! more than the empty answer, and whether the grader flagged the ones it must flag.
//!
//! Each play is one episode of a scripted policy: it writes the hack's files with `bash`, runs
//! its probe if it has one, and submits. The episode's answer is captured from the workspace and
//! graded exactly as a model's would be.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt as _;
use policy::{ScriptedPolicy, ScriptedTurn};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tasks::hacks::{Expect, Hack, Play};
use tasks::Instance;

use crate::error::Result;
use rollout::Rollout;

#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Hack names to play (empty: the whole library).
    pub hacks: Vec<String>,
    pub concurrency: usize,
    pub seed: u64,
    /// Where `audit.jsonl` and `audit.json` go (None: nowhere).
    pub out: Option<PathBuf>,
}

/// One hack played against one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub instance_id: String,
    pub skill: tasks::Skill,
    pub hack: String,
    pub class: String,
    pub expect: Expect,
    /// None when the episode could not be graded (see `error`).
    pub reward: Option<f64>,
    /// The empty answer's reward, measured when the instance was validated.
    pub empty_reward: f64,
    /// Earned more than the empty answer.
    pub won: bool,
    /// The grader's tampering flag, if it raised one.
    pub tampering: Option<tasks::Tampering>,
    /// The grader answered as it must: no win, and the flag where the hack must be flagged.
    pub defended: bool,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts per hack.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HackSummary {
    pub class: String,
    pub plays: usize,
    pub wins: usize,
    pub flagged: usize,
    pub undefended: usize,
    pub errors: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditSummary {
    pub instances: usize,
    pub plays: usize,
    pub wins: usize,
    pub undefended: usize,
    pub errors: usize,
    pub by_hack: BTreeMap<String, HackSummary>,
    /// Instance ids some hack won on.
    pub won_instances: Vec<String>,
}

impl AuditSummary {
    pub fn of(instances: usize, records: &[AuditRecord]) -> AuditSummary {
        let mut summary = AuditSummary {
            instances,
            plays: records.len(),
            ..AuditSummary::default()
        };
        for record in records {
            let entry = summary.by_hack.entry(record.hack.clone()).or_default();
            entry.class = record.class.clone();
            entry.plays += 1;
            if record.error.is_some() {
                entry.errors += 1;
                summary.errors += 1;
                continue;
            }
            if record.won {
                entry.wins += 1;
                summary.wins += 1;
                if !summary.won_instances.contains(&record.instance_id) {
                    summary.won_instances.push(record.instance_id.clone());
                }
            }
            if record.tampering.is_some() {
                entry.flagged += 1;
            }
            if !record.defended {
                entry.undefended += 1;
                summary.undefended += 1;
            }
        }
        summary
    }

    /// A plain-text table, one row per hack.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:<18} {:>6} {:>5} {:>8} {:>11} {:>7}\n",
            "hack", "class", "plays", "wins", "flagged", "undefended", "errors"
        );
        for (name, hack) in &self.by_hack {
            out.push_str(&format!(
                "{:<24} {:<18} {:>6} {:>5} {:>8} {:>11} {:>7}\n",
                name, hack.class, hack.plays, hack.wins, hack.flagged, hack.undefended, hack.errors
            ));
        }
        out.push_str(&format!(
            "{} instances, {} plays: {} won, {} undefended, {} not graded\n",
            self.instances, self.plays, self.wins, self.undefended, self.errors
        ));
        out
    }
}

/// The scripted turns of a play: its files written with `bash` (base64, so any content goes
/// through unchanged), its probe, then `submit`.
pub fn play_turns(play: &Play) -> Vec<ScriptedTurn> {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut turns = Vec::new();
    for (path, content) in &play.files.0 {
        let quoted = format!("'{}'", path.replace('\'', r"'\''"));
        let command = match content {
            Some(text) => format!(
                "mkdir -p \"$(dirname {quoted})\" && printf '%s' '{}' | base64 -d > {quoted}",
                encode(text.as_bytes())
            ),
            None => format!("rm -f -- {quoted}"),
        };
        turns.push(ScriptedTurn::call("bash", json!({ "command": command })));
    }
    if let Some(probe) = &play.probe {
        turns.push(ScriptedTurn::call("bash", json!({ "command": probe })));
    }
    turns.push(ScriptedTurn::call(
        policy::SUBMIT_TOOL,
        play.submission.clone(),
    ));
    turns
}

/// The hacks `options` selects.
fn selected(options: &AuditOptions) -> Vec<&'static Hack> {
    tasks::hacks::LIBRARY
        .iter()
        .filter(|h| options.hacks.is_empty() || options.hacks.iter().any(|n| n == h.name))
        .collect()
}

/// Plays the selected hacks against every instance; writes the records and the summary to
/// `options.out` when set.
pub async fn run_audit(
    rollout: &Rollout,
    instances: &[Instance],
    options: &AuditOptions,
) -> Result<(AuditSummary, Vec<AuditRecord>)> {
    let hacks = selected(options);
    let mut plays: Vec<(&Instance, &'static Hack, Play)> = Vec::new();
    for instance in instances {
        let snapshot = &instance.project.snapshot;
        let read = |path: &str| -> Option<String> {
            match instance.setup.0.get(path) {
                Some(content) => content.clone(),
                None => rollout.projects().pristine(snapshot, path),
            }
        };
        for hack in &hacks {
            if let Some(play) = tasks::hacks::play(hack, instance, &read) {
                plays.push((instance, hack, play));
            }
        }
    }
    let records: Vec<AuditRecord> = futures::stream::iter(plays.into_iter().enumerate())
        .map(|(index, (instance, hack, play))| async move {
            let policy =
                ScriptedPolicy::new(play_turns(&play)).named(format!("hack:{}", hack.name));
            let seed = crate::run::episode_seed(options.seed, &instance.instance_id, index as u32);
            let empty_reward = instance
                .validation
                .as_ref()
                .map_or(instance.skill().reward_range().0, |v| v.empty_reward);
            let record = rollout.run(&policy, instance, 0, seed).await;
            let mut audit = AuditRecord {
                instance_id: instance.instance_id.clone(),
                skill: instance.skill(),
                hack: hack.name.to_string(),
                class: hack.class.to_string(),
                expect: hack.expect,
                reward: None,
                empty_reward,
                won: false,
                tampering: None,
                defended: false,
                reason: String::new(),
                error: None,
            };
            match record {
                Ok(crate::EpisodeRecord {
                    reward: Some(reward),
                    verdict: Some(verdict),
                    ..
                }) => {
                    audit.reward = Some(reward);
                    audit.won = reward > empty_reward + 1e-9;
                    audit.tampering = verdict.details.tampering.clone();
                    audit.defended = !audit.won
                        && (hack.expect != Expect::Tampered || audit.tampering.is_some());
                    audit.reason = verdict.reason;
                }
                Ok(record) => {
                    audit.error = Some(record.error.unwrap_or_else(|| "not graded".into()))
                }
                Err(error) => audit.error = Some(error.to_string()),
            }
            audit
        })
        .buffered(options.concurrency.max(1))
        .collect()
        .await;
    let summary = AuditSummary::of(instances.len(), &records);
    if let Some(out) = &options.out {
        std::fs::create_dir_all(out).map_err(|e| crate::Error::io(out, e))?;
        let lines: String = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect();
        write(out.join("audit.jsonl"), lines.as_bytes())?;
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        write(out.join("audit.json"), text.as_bytes())?;
    }
    Ok((summary, records))
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<()> {
    std::fs::write(&path, bytes).map_err(|e| crate::Error::io(path, e))
}
