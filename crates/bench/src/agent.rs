//! `atomskill bench agent`: what the agent loop costs on top of the sandbox, with many episodes
//! at once.
//!
//! Two phases over the same number of concurrent episodes, each making the same commands after
//! the same simulated policy latency: the agent loop (scripted policy with a fixed latency,
//! `bash` running `true`, a final `submit`, trajectories written to a JSONL file), and a
//! baseline that drives the sandbox directly (sleep, exec, no loop, no trajectory). The
//! difference in CPU (supervisor and reaped children, from `getrusage`) is the orchestration
//! cost; peak RSS above the phase's start, divided by the episodes, is the memory per episode.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::{
    AgentSettings, AgentTask, EnabledTools, JsonlWriter, OutcomeKind, Prompts, SubmitSpec,
    WriterConfig,
};
use policy::{ScriptedPolicy, ScriptedTurn};
use sandbox::{ExecRequest, Sandbox, Snapshot, SnapshotStore};
use serde_json::json;
use tokio::task::JoinSet;

use crate::Error;

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Episodes run at once.
    #[arg(long, default_value_t = 1000)]
    pub episodes: usize,
    /// Policy calls per episode: all but the last run `true` with `bash`, the last submits.
    #[arg(long, default_value_t = 5)]
    pub steps: u32,
    /// Simulated latency of each policy call, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub latency_ms: u64,
}

/// CPU seconds (user + system) of this process and of its reaped children.
fn cpu_seconds() -> (f64, f64) {
    let read = |who| {
        // SAFETY: getrusage writes into the zeroed struct we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        seconds(usage.ru_utime) + seconds(usage.ru_stime)
    };
    (read(libc::RUSAGE_SELF), read(libc::RUSAGE_CHILDREN))
}

fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Raises the soft open-file limit to the hard one: every live episode holds descriptors.
fn raise_open_files() -> u64 {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur
    }
}

/// What one phase cost.
#[derive(Debug)]
struct Phase {
    wall: f64,
    supervisor_cpu: f64,
    children_cpu: f64,
    peak_rss_delta: u64,
}

impl Phase {
    fn total_cpu(&self) -> f64 {
        self.supervisor_cpu + self.children_cpu
    }
}

/// Runs `body` while sampling the resident set every 10 ms.
async fn measure<F: std::future::Future<Output = Result<(), Error>>>(
    body: F,
) -> Result<Phase, Error> {
    let rss_before = resident_bytes();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let (self_before, children_before) = cpu_seconds();
    let start = Instant::now();
    body.await?;
    let wall = start.elapsed().as_secs_f64();
    let (self_after, children_after) = cpu_seconds();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    Ok(Phase {
        wall,
        supervisor_cpu: self_after - self_before,
        children_cpu: children_after - children_before,
        peak_rss_delta: peak.load(Ordering::Relaxed).saturating_sub(rss_before),
    })
}

/// The command the `bash` tool runs for `true`, so both phases do the same sandbox work.
fn true_request() -> ExecRequest {
    ExecRequest::shell("exec 2>&1; true").timeout(Duration::from_secs(60))
}

async fn baseline(
    options: &Options,
    sandbox: &Arc<Sandbox>,
    snapshot: &Arc<Snapshot>,
) -> Result<(), Error> {
    let latency = Duration::from_millis(options.latency_ms);
    let mut set = JoinSet::new();
    for _ in 0..options.episodes {
        let (sandbox, snapshot, steps) = (sandbox.clone(), snapshot.clone(), options.steps);
        set.spawn(async move {
            let episode = sandbox.create_episode(&snapshot)?;
            for _ in 1..steps {
                tokio::time::sleep(latency).await;
                episode.exec(&true_request()).await?;
            }
            tokio::time::sleep(latency).await;
            episode.destroy()?;
            Ok::<_, Error>(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.map_err(|e| Error::Task(e.to_string()))??;
    }
    Ok(())
}

async fn agent_loop(
    options: &Options,
    sandbox: &Arc<Sandbox>,
    snapshot: &Arc<Snapshot>,
    trajectories: &std::path::Path,
) -> Result<Vec<OutcomeKind>, Error> {
    let mut script: Vec<ScriptedTurn> = (1..options.steps)
        .map(|_| ScriptedTurn::call("bash", json!({"command": "true"})))
        .collect();
    script.push(ScriptedTurn::call("submit", json!({})));
    let policy = Arc::new(
        ScriptedPolicy::new(script)
            .with_latency(Duration::from_millis(options.latency_ms))
            .named("simulated"),
    );
    let mut settings = AgentSettings::new(Prompts::embedded()?);
    settings.budgets.max_steps = options.steps;
    let settings = Arc::new(settings);
    let task = Arc::new(AgentTask {
        id: "bench".into(),
        system_vars: serde_json::Map::new(),
        user_prompt: "Run `true`, then submit.".into(),
        submit: SubmitSpec::no_arguments("Submit when done."),
        tools: EnabledTools::default(),
    });
    let (writer, _) = JsonlWriter::open(trajectories, WriterConfig::default())?;
    let sink = Arc::new(writer.spawn());
    let mut set = JoinSet::new();
    for i in 0..options.episodes {
        let (sandbox, snapshot) = (sandbox.clone(), snapshot.clone());
        let (policy, settings, task, sink) =
            (policy.clone(), settings.clone(), task.clone(), sink.clone());
        set.spawn(async move {
            let episode = sandbox.create_episode(&snapshot)?;
            let trajectory =
                agent::run_episode(&*policy, &episode, &task, &settings, i as u64).await?;
            sink.append(&trajectory).await?;
            episode.destroy()?;
            Ok::<_, Error>(trajectory.outcome.kind())
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = set.join_next().await {
        outcomes.push(joined.map_err(|e| Error::Task(e.to_string()))??);
    }
    Arc::try_unwrap(sink)
        .map_err(|_| Error::Task("the trajectory sink is still shared".into()))?
        .close()?;
    Ok(outcomes)
}

pub async fn run(
    options: &Options,
    sandbox: Arc<Sandbox>,
    store: &SnapshotStore,
) -> Result<(), Error> {
    println!("{}", sandbox.isolation());
    let open_files = raise_open_files();
    let scratch =
        std::env::temp_dir().join(format!("atomskill-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io("creating the scratch dir", e))?;
    std::fs::write(scratch.join("hello.py"), "print('hello')\n")
        .map_err(|e| Error::io("writing the scratch file", e))?;
    let snapshot = Arc::new(store.import_dir(&scratch, None)?);
    let trajectories = scratch.join("trajectories.jsonl");
    println!(
        "{} concurrent episodes, {} policy calls each ({} x bash `true`, then submit), {} ms simulated policy latency; open-file limit {open_files}",
        options.episodes,
        options.steps,
        options.steps.saturating_sub(1),
        options.latency_ms
    );

    // The agent phase first, so that its memory figure is not flattered by pages the
    // baseline left to the allocator.
    let mut outcomes = Vec::new();
    let agent = measure(async {
        outcomes = agent_loop(options, &sandbox, &snapshot, &trajectories).await?;
        Ok(())
    })
    .await?;
    let trajectory_bytes = std::fs::metadata(&trajectories).map_or(0, |m| m.len());
    let base = measure(baseline(options, &sandbox, &snapshot)).await?;

    let n = options.episodes.max(1) as f64;
    println!(
        "\n{:<14} {:>8} {:>16} {:>14} {:>11} {:>17} {:>16}",
        "phase",
        "wall s",
        "supervisor CPU s",
        "children CPU s",
        "total CPU s",
        "peak RSS +MiB",
        "RSS/episode KiB"
    );
    for (label, phase) in [("sandbox only", &base), ("agent loop", &agent)] {
        println!(
            "{label:<14} {:>8.2} {:>16.2} {:>14.2} {:>11.2} {:>17.1} {:>16.1}",
            phase.wall,
            phase.supervisor_cpu,
            phase.children_cpu,
            phase.total_cpu(),
            phase.peak_rss_delta as f64 / (1 << 20) as f64,
            phase.peak_rss_delta as f64 / 1024.0 / n
        );
    }
    let extra_cpu = agent.total_cpu() - base.total_cpu();
    println!(
        "\norchestration CPU beyond the sandbox's own work: {extra_cpu:.2} s = {:.1}% of the sandbox-only CPU (target < 5%); {:.2} ms per episode",
        100.0 * extra_cpu / base.total_cpu().max(1e-9),
        1e3 * extra_cpu / n
    );
    println!(
        "supervisor CPU of the agent run: {:.1}% of one core over its wall time",
        100.0 * agent.supervisor_cpu / agent.wall.max(1e-9)
    );
    println!(
        "memory per episode: {:.0} KiB in the agent run ({:.0} KiB sandbox only), target < 1024 KiB; trajectories: {:.1} KiB per episode on disk",
        agent.peak_rss_delta as f64 / 1024.0 / n,
        base.peak_rss_delta as f64 / 1024.0 / n,
        trajectory_bytes as f64 / 1024.0 / n
    );
    let submitted = outcomes
        .iter()
        .filter(|k| **k == OutcomeKind::Submitted)
        .count();
    println!("outcomes: {submitted} of {} submitted", outcomes.len());
    let _ = std::fs::remove_dir_all(&scratch);
    if submitted != options.episodes {
        return Err(Error::Task(format!(
            "only {submitted} of {} episodes submitted: {outcomes:?}",
            options.episodes
        )));
    }
    Ok(())
}
