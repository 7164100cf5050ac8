//! `atomskill eval`: k episodes of every instance, a bounded number at once, each record
//! appended as it finishes; then the summary and the report. A rerun with the same options
//! runs only what is missing (and what an infrastructure failure cut short).

use std::path::PathBuf;
use std::sync::Arc;

use agent::{JsonlWriter, WriterConfig};
use policy::{NullPolicy, Policy, PolicyChoice};
use tasks::Instance;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::metrics::Summary;
use crate::store::{self, RunInfo};
use rollout::{EpisodeRecord, Rollout};

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub k: u32,
    pub concurrency: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// What `run.json` records as the policy.
    pub policy_label: String,
    /// What `run.json` records as the tasks.
    pub tasks_label: String,
    pub report_title: String,
}

/// Progress, for a progress bar.
#[derive(Clone, Debug)]
pub enum EvalEvent {
    /// `done` of `total` episodes were already finished by an earlier run.
    Planned {
        total: usize,
        done: usize,
    },
    Finished(Box<EpisodeRecord>),
}

/// The seed of sample `sample` of `instance_id`.
pub fn episode_seed(seed: u64, instance_id: &str, sample: u32) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(instance_id.as_bytes());
    let id = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    policy::derive_seed(seed, &[id, sample as u64])
}

/// Runs what is missing of `instances` × `k` samples, then writes `summary.json` and
/// `report.html` in `options.out`.
pub async fn run_eval(
    rollout: &Rollout,
    choice: &PolicyChoice,
    instances: &[Instance],
    options: &EvalOptions,
    on_event: &(dyn Fn(EvalEvent) + Send + Sync),
) -> Result<Summary> {
    let out = &options.out;
    RunInfo {
        schema_version: 1,
        atomskill_version: env!("CARGO_PKG_VERSION").to_string(),
        policy: options.policy_label.clone(),
        k: options.k,
        seed: options.seed,
        tasks: options.tasks_label.clone(),
        instances: instances.len(),
    }
    .claim(out)?;
    let episodes_path = out.join(store::EPISODES_FILE);
    let earlier = store::latest_records(&episodes_path)?;
    let mut todo = Vec::new();
    for instance in instances {
        for sample in 0..options.k {
            let done = earlier
                .get(&(instance.instance_id.clone(), sample))
                .is_some_and(EpisodeRecord::is_scored);
            if !done {
                todo.push((instance.clone(), sample));
            }
        }
    }
    let total = instances.len() * options.k as usize;
    on_event(EvalEvent::Planned {
        total,
        done: total - todo.len(),
    });
    let (writer, _) = JsonlWriter::open(&episodes_path, WriterConfig::default())?;
    let sink = Arc::new(writer.spawn());
    let semaphore = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut set = JoinSet::new();
    for (instance, sample) in todo {
        let rollout = rollout.clone();
        let choice = choice.clone();
        let sink = sink.clone();
        let semaphore = semaphore.clone();
        let seed = episode_seed(options.seed, &instance.instance_id, sample);
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            let policy: Arc<dyn Policy> = match &choice {
                PolicyChoice::Shared(policy) => policy.clone(),
                PolicyChoice::Null => Arc::new(NullPolicy::new()),
                PolicyChoice::Oracle => {
                    let snapshot = &instance.project.snapshot;
                    Arc::new(rollout::oracle::oracle_policy(&instance, |path| {
                        rollout.projects().pristine(snapshot, path)
                    }))
                }
            };
            let record = rollout
                .run(policy.as_ref(), &instance, sample, seed)
                .await?;
            sink.append(&record).await?;
            Ok::<EpisodeRecord, Error>(record)
        });
    }
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(record)) => on_event(EvalEvent::Finished(Box::new(record))),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
                set.abort_all();
            }
            Err(join) if join.is_cancelled() => {}
            Err(join) => {
                first_error
                    .get_or_insert(Error::Report(format!("an episode task panicked: {join}")));
                set.abort_all();
            }
        }
    }
    let sink =
        Arc::try_unwrap(sink).map_err(|_| Error::Report("record sink still shared".into()))?;
    sink.close()?;
    if let Some(error) = first_error {
        return Err(error);
    }
    let wanted: std::collections::HashSet<&str> =
        instances.iter().map(|i| i.instance_id.as_str()).collect();
    let records: Vec<EpisodeRecord> = store::latest_records(&episodes_path)?
        .into_values()
        .filter(|r| wanted.contains(r.instance_id.as_str()) && r.sample < options.k)
        .collect();
    let summary = Summary::of(&records, options.k as usize);
    store::write_json(&out.join(store::SUMMARY_FILE), &summary)?;
    let html = crate::report::Report {
        title: options.report_title.clone(),
        subtitle: format!(
            "policy {} · tasks {} · k = {} · seed {}",
            options.policy_label, options.tasks_label, options.k, options.seed
        ),
        runs: vec![(options.policy_label.clone(), summary.clone())],
        charts: Vec::new(),
    }
    .to_html()?;
    std::fs::write(out.join(store::REPORT_FILE), html)
        .map_err(|e| Error::io(out.join(store::REPORT_FILE), e))?;
    Ok(summary)
}
