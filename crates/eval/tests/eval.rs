//! Evaluation end to end on instances of every skill made by the task factory from a small real
//! pytest project, in the real sandbox: the oracle earns the top reward everywhere (through a
//! real HTTP server speaking the OpenAI API, and in process), the null policy the bottom
//! reward; a rerun continues; a dead server, a malformed model output and a command that runs
//! past the episode's budget each give their outcome without stopping the run.
//!
//! Needs root (the sandbox) and ATOMSKILL_TEST_VENV (scripts/test makes it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent::{AgentSettings, OutcomeKind, Prompts};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use eval::{run_eval, EvalOptions, PolicyChoice, Projects, Rollout};
use policy::{OpenAiConfig, OpenAiPolicy, ScriptedPolicy, ScriptedTurn};
use serde_json::{json, Value};
use tasks::{Instance, Skill};

struct World {
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    rollout: Rollout,
    instances: Vec<Instance>,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mini = test_support::fixture::mini_tasks(dir.path(), 2, 11).await;
    let (sandbox, prepared, snapshot, instances) =
        (mini.sandbox, mini.prepared, mini.snapshot, mini.instances);
    let skills: std::collections::BTreeSet<Skill> = instances.iter().map(Instance::skill).collect();
    assert_eq!(
        skills.len(),
        Skill::ALL.len(),
        "every skill has instances: {skills:?}"
    );

    let mut projects = Projects::new();
    projects.add(prepared, snapshot);
    let mut prompts = Prompts::embedded().unwrap();
    rollout::task::add_templates(&mut prompts).unwrap();
    let mut settings = AgentSettings::new(prompts);
    settings.budgets.max_steps = 12;
    settings.budgets.wall_clock = Duration::from_secs(120);
    let rollout = Rollout::new(sandbox, projects, settings, Duration::from_secs(120));
    World {
        out: dir.path().join("eval"),
        _dir: dir,
        rollout,
        instances,
    }
}

fn options(out: std::path::PathBuf, label: &str, k: u32) -> EvalOptions {
    EvalOptions {
        k,
        concurrency: 2,
        seed: 3,
        out,
        policy_label: label.into(),
        tasks_label: "mini".into(),
        report_title: format!("eval {label}"),
    }
}

/// Oracle turns by first user message, and whether they are written as text.
type Scripts = BTreeMap<String, (Vec<ScriptedTurn>, bool)>;

/// An OpenAI-compatible server that plays each instance's oracle, chosen by the first user
/// message; every other instance writes its calls as `<tool_call>` text instead of structured
/// calls, so both readings of a model's answer are exercised.
async fn oracle_server(world: &World) -> String {
    let mut scripts: Scripts = BTreeMap::new();
    for (i, instance) in world.instances.iter().enumerate() {
        let task =
            rollout::task::agent_task(instance, &world.rollout.settings().prompts, vec![]).unwrap();
        let snapshot = &instance.project.snapshot;
        let turns = rollout::oracle::oracle_turns(instance, |p| {
            world.rollout.projects().pristine(snapshot, p)
        });
        scripts.insert(task.user_prompt, (turns, i % 2 == 1));
    }
    async fn chat(State(scripts): State<Arc<Scripts>>, Json(body): Json<Value>) -> Json<Value> {
        let messages = body["messages"].as_array().unwrap();
        let first_user = messages.iter().find(|m| m["role"] == "user").unwrap();
        let (turns, as_text) = &scripts[first_user["content"].as_str().unwrap()];
        let played = messages.iter().filter(|m| m["role"] == "assistant").count();
        let ScriptedTurn::Calls(calls) = &turns[played] else {
            panic!("oracle turns are calls")
        };
        let message = if *as_text {
            let text: String = calls
                .iter()
                .map(|(name, arguments)| {
                    format!(
                        "<tool_call>\n{}\n</tool_call>\n",
                        json!({"name": name, "arguments": arguments})
                    )
                })
                .collect();
            json!({"role": "assistant", "content": text})
        } else {
            let tool_calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, arguments))| {
                    json!({
                        "id": format!("call_{played}_{i}"),
                        "type": "function",
                        "function": {"name": name, "arguments": arguments.to_string()},
                    })
                })
                .collect();
            json!({"role": "assistant", "content": null, "tool_calls": tool_calls})
        };
        Json(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": if *as_text { "stop" } else { "tool_calls" }}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }))
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::new(scripts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

fn http_policy(url: String, retries: u32) -> Arc<OpenAiPolicy> {
    let mut config = OpenAiConfig::new(vec![url], "oracle");
    config.max_retries = retries;
    config.request_timeout = Duration::from_secs(30);
    config.connect_timeout = Duration::from_secs(2);
    Arc::new(OpenAiPolicy::new(config).unwrap())
}

/// The observations of calls the tools refused.
fn tool_errors(record: &eval::EpisodeRecord) -> Vec<String> {
    let Some(trajectory) = &record.trajectory else {
        return vec![];
    };
    trajectory
        .steps
        .iter()
        .flat_map(|s| &s.calls)
        .filter(|c| c.is_error)
        .filter_map(|c| c.observation_message)
        .map(|i| format!("{:?}", trajectory.messages[i].content))
        .collect()
}

fn check_all(records: &[eval::EpisodeRecord], top: bool) {
    for record in records {
        let (low, high) = record.skill.reward_range();
        let want = if top { high } else { low };
        assert_eq!(
            record.reward,
            Some(want),
            "{} ({}) sample {}: outcome {}, verdict {:?}, error {:?}, tool errors {:?}",
            record.instance_id,
            record.skill.name(),
            record.sample,
            record.outcome,
            record.verdict,
            record.error,
            tool_errors(record)
        );
        assert_eq!(record.outcome, OutcomeKind::Submitted);
    }
}

fn read_records(out: &std::path::Path) -> Vec<eval::EpisodeRecord> {
    eval::store::latest_records(&out.join(eval::store::EPISODES_FILE))
        .unwrap()
        .into_values()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_null_resume_and_failures() {
    let world = world().await;
    let n = world.instances.len();

    // The oracle through a real HTTP server: the top reward on every instance of every skill.
    let url = oracle_server(&world).await;
    let http_out = world.out.join("oracle-http");
    let summary = run_eval(
        &world.rollout,
        &PolicyChoice::Shared(http_policy(url, 0)),
        &world.instances,
        &options(http_out.clone(), "openai-oracle", 1),
        &|_| {},
    )
    .await
    .unwrap();
    let records = read_records(&http_out);
    assert_eq!(records.len(), n);
    check_all(&records, true);
    assert!(
        (summary.total.avg_success - 1.0).abs() < 1e-12,
        "{summary:?}"
    );
    for skill in &summary.skills {
        assert_eq!(skill.pass_at, vec![1.0], "{}", skill.skill);
    }
    let html = std::fs::read_to_string(http_out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("test_generation"),
        "report"
    );

    // The in-process oracle, two samples each; then a rerun finds everything done.
    let oracle_out = world.out.join("oracle");
    run_eval(
        &world.rollout,
        &PolicyChoice::Oracle,
        &world.instances,
        &options(oracle_out.clone(), "oracle", 2),
        &|_| {},
    )
    .await
    .unwrap();
    let records = read_records(&oracle_out);
    assert_eq!(records.len(), 2 * n);
    check_all(&records, true);
    // A torn last line (a crash mid-write) and a missing episode: only that one runs again.
    let episodes = oracle_out.join(eval::store::EPISODES_FILE);
    let text = std::fs::read_to_string(&episodes).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let dropped = lines.pop().unwrap();
    let dropped: Value = serde_json::from_str(dropped).unwrap();
    std::fs::write(
        &episodes,
        format!("{}\n{{\"schema_version\": 1, \"instance", lines.join("\n")),
    )
    .unwrap();
    let planned = std::sync::Mutex::new(Vec::new());
    let finished = std::sync::Mutex::new(Vec::new());
    run_eval(
        &world.rollout,
        &PolicyChoice::Oracle,
        &world.instances,
        &options(oracle_out.clone(), "oracle", 2),
        &|event| match event {
            eval::EvalEvent::Planned { total, done } => planned.lock().unwrap().push((total, done)),
            eval::EvalEvent::Finished(record) => finished
                .lock()
                .unwrap()
                .push((record.instance_id.clone(), record.sample)),
        },
    )
    .await
    .unwrap();
    assert_eq!(planned.into_inner().unwrap(), vec![(2 * n, 2 * n - 1)]);
    assert_eq!(
        finished.into_inner().unwrap(),
        vec![(
            dropped["instance_id"].as_str().unwrap().to_string(),
            dropped["sample"].as_u64().unwrap() as u32
        )]
    );
    assert_eq!(read_records(&oracle_out).len(), 2 * n);
    // Other options in the same directory are refused.
    let mismatch = run_eval(
        &world.rollout,
        &PolicyChoice::Null,
        &world.instances,
        &options(oracle_out, "null", 2),
        &|_| {},
    )
    .await;
    assert!(
        matches!(mismatch, Err(eval::Error::RunMismatch { .. })),
        "{mismatch:?}"
    );

    // The null policy: the bottom reward everywhere.
    let null_out = world.out.join("null");
    run_eval(
        &world.rollout,
        &PolicyChoice::Null,
        &world.instances,
        &options(null_out.clone(), "null", 1),
        &|_| {},
    )
    .await
    .unwrap();
    check_all(&read_records(&null_out), false);

    // A dead server: policy errors, unscored, and the run goes on to the end.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let dead_out = world.out.join("dead");
    let summary = run_eval(
        &world.rollout,
        &PolicyChoice::Shared(http_policy(dead, 1)),
        &world.instances[..2],
        &options(dead_out.clone(), "dead", 1),
        &|_| {},
    )
    .await
    .unwrap();
    for record in read_records(&dead_out) {
        assert_eq!(record.outcome, OutcomeKind::PolicyError);
        assert_eq!(record.reward, None);
        assert!(record.error.is_some());
    }
    assert_eq!(summary.total.infrastructure_failures, 2);
    assert_eq!(summary.total.scored, 0);

    // Malformed model output: a format error, scored as an answer that submitted nothing.
    let instance = world
        .instances
        .iter()
        .find(|i| i.skill() == Skill::Editing)
        .unwrap();
    let garbled = ScriptedPolicy::new(vec![ScriptedTurn::text(
        "<tool_call>{\"name\": \"bash\", \"arguments\": {\"command\": ",
    )])
    .cycling();
    let record = world.rollout.run(&garbled, instance, 0, 1).await.unwrap();
    assert_eq!(record.outcome, OutcomeKind::FormatError);
    assert_eq!(record.reward, Some(0.0));

    // A command that outlives the episode's wall-clock budget: a timeout outcome.
    let mut settings = world.rollout.settings().clone();
    settings.budgets.wall_clock = Duration::from_secs(2);
    let short = world.rollout.with_settings(settings);
    let sleeper = ScriptedPolicy::new(vec![ScriptedTurn::call(
        "bash",
        json!({"command": "sleep 30"}),
    )])
    .cycling();
    let started = std::time::Instant::now();
    let record = short.run(&sleeper, instance, 0, 1).await.unwrap();
    assert_eq!(record.outcome, OutcomeKind::Timeout, "{record:?}");
    assert!(started.elapsed() < Duration::from_secs(25));
}
