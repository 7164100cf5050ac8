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
    /// Rounds of both phases; the order alternates (agent first in even rounds) so that drift
    /// in machine load and kernel state affects both alike.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

/// CPU seconds, user and system, of this process and of its reaped children.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    self_user: f64,
    self_system: f64,
    children_user: f64,
    children_system: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let read = |who| {
            // SAFETY: getrusage writes into the zeroed struct we own.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(who, &mut usage) };
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            (seconds(usage.ru_utime), seconds(usage.ru_stime))
        };
        let (self_user, self_system) = read(libc::RUSAGE_SELF);
        let (children_user, children_system) = read(libc::RUSAGE_CHILDREN);
        Cpu {
            self_user,
            self_system,
            children_user,
            children_system,
        }
    }

    /// `self - other` with `sign` -1, `self + other` with `sign` 1.
    fn combine(self, other: Cpu, sign: f64) -> Cpu {
        Cpu {
            self_user: self.self_user + sign * other.self_user,
            self_system: self.self_system + sign * other.self_system,
            children_user: self.children_user + sign * other.children_user,
            children_system: self.children_system + sign * other.children_system,
        }
    }

    fn total(&self) -> f64 {
        self.self_user + self.self_system + self.children_user + self.children_system
    }
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

/// What a phase cost (summed over rounds; memory is the largest peak).
#[derive(Debug, Default)]
struct Phase {
    wall: f64,
    cpu: Cpu,
    peak_rss_delta: u64,
}

impl Phase {
    fn add(&mut self, other: Phase) {
        self.wall += other.wall;
        self.cpu = self.cpu.combine(other.cpu, 1.0);
        self.peak_rss_delta = self.peak_rss_delta.max(other.peak_rss_delta);
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
    let before = Cpu::now();
    let start = Instant::now();
    body.await?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = Cpu::now().combine(before, -1.0);
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    Ok(Phase {
        wall,
        cpu,
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
        env: Vec::new(),
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
    let rounds = options.rounds.max(1);
    println!(
        "{} concurrent episodes, {} policy calls each ({} x bash `true`, then submit), {} ms simulated policy latency, {rounds} round(s); open-file limit {open_files}",
        options.episodes,
        options.steps,
        options.steps.saturating_sub(1),
        options.latency_ms
    );

    // The agent phase runs first in the first round, so that its memory figure is not
    // flattered by pages the baseline left to the allocator.
    let (mut agent, mut base) = (Phase::default(), Phase::default());
    let mut outcomes = Vec::new();
    let mut trajectory_bytes = 0;
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for agent_turn in order {
            if agent_turn {
                let _ = std::fs::remove_file(&trajectories);
                let phase = measure(async {
                    let kinds = agent_loop(options, &sandbox, &snapshot, &trajectories).await?;
                    outcomes.extend(kinds);
                    Ok(())
                })
                .await?;
                agent.add(phase);
                trajectory_bytes = std::fs::metadata(&trajectories).map_or(0, |m| m.len());
            } else {
                base.add(measure(baseline(options, &sandbox, &snapshot)).await?);
            }
        }
    }

    let episodes = options.episodes.max(1) as f64;
    println!(
        "\nCPU seconds, summed over rounds\n{:<14} {:>8} {:>10} {:>10} {:>11} {:>10} {:>9} {:>14}",
        "phase",
        "wall s",
        "self user",
        "self sys",
        "child user",
        "child sys",
        "total",
        "peak RSS +MiB"
    );
    for (label, phase) in [("sandbox only", &base), ("agent loop", &agent)] {
        println!(
            "{label:<14} {:>8.2} {:>10.2} {:>10.2} {:>11.2} {:>10.2} {:>9.2} {:>14.1}",
            phase.wall,
            phase.cpu.self_user,
            phase.cpu.self_system,
            phase.cpu.children_user,
            phase.cpu.children_system,
            phase.cpu.total(),
            phase.peak_rss_delta as f64 / (1 << 20) as f64,
        );
    }
    let sandbox_cpu = base.cpu.total().max(1e-9);
    let extra_user = agent.cpu.self_user - base.cpu.self_user;
    let extra_total = agent.cpu.total() - base.cpu.total();
    let runs = episodes * rounds as f64;
    println!(
        "\norchestration CPU (supervisor user time, agent minus sandbox only): {extra_user:.2} s = {:.2}% of the sandbox-only CPU (target < 5%); {:.3} ms per episode",
        100.0 * extra_user / sandbox_cpu,
        1e3 * extra_user / runs
    );
    println!(
        "all CPU, agent minus sandbox only (kernel-side noise included): {extra_total:.2} s = {:.1}% of the sandbox-only CPU",
        100.0 * extra_total / sandbox_cpu
    );
    println!(
        "memory per episode: {:.0} KiB in the agent run ({:.0} KiB sandbox only), target < 1024 KiB; trajectories: {:.1} KiB per episode on disk",
        agent.peak_rss_delta as f64 / 1024.0 / episodes,
        base.peak_rss_delta as f64 / 1024.0 / episodes,
        trajectory_bytes as f64 / 1024.0 / episodes
    );
    let submitted = outcomes
        .iter()
        .filter(|k| **k == OutcomeKind::Submitted)
        .count();
    println!("outcomes: {submitted} of {} submitted", outcomes.len());
    let _ = std::fs::remove_dir_all(&scratch);
    if submitted != outcomes.len() {
        return Err(Error::Task(format!(
            "only {submitted} of {} episodes submitted: {outcomes:?}",
            outcomes.len()
        )));
    }
    Ok(())
}
