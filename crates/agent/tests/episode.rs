//! The agent loop over real sandbox episodes: a scripted policy solving a task to `Submitted`,
//! and every other outcome (step limit, format error, context overflow, policy error from a dead
//! server, sandbox error, timeout) produced for real.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent::{run_episode, AgentSettings, Outcome, OutcomeKind, Trajectory};
use common::{harness, settings, task};
use policy::{
    derive_seed, Backoff, ChatRequest, Completion, Error as PolicyError, FinishReason, NullPolicy,
    OpenAiConfig, OpenAiPolicy, Policy, Role, ScriptedPolicy, ScriptedTurn, Usage,
};
use sandbox::Episode;
use serde_json::json;

async fn run(policy: &dyn Policy, episode: &Episode, settings: &AgentSettings) -> Trajectory {
    run_episode(policy, episode, &task(), settings, 7)
        .await
        .expect("the loop itself must not fail")
}

fn bash(command: &str) -> ScriptedTurn {
    ScriptedTurn::call("bash", json!({"command": command}))
}

#[tokio::test]
async fn a_scripted_policy_solves_the_task_and_submits() {
    let h = harness(11);
    let episode = h.episode();
    let policy = ScriptedPolicy::new(vec![
        ScriptedTurn::call(
            "str_replace_editor",
            json!({"command": "view", "path": "pkg/calc.py"}),
        ),
        // Written as text, with a trailing comma the parser repairs.
        ScriptedTurn::text(concat!(
            "The subtraction looks fine; I will make it explicit.\n<tool_call>\n",
            r#"{"name": "str_replace_editor", "arguments": {"command": "str_replace", "path": "pkg/calc.py", "old_str": "return a - b", "new_str": "return a - b  # checked",}}"#,
            "\n</tool_call>"
        )),
        bash("python3 -c 'from pkg.calc import sub; print(sub(5, 3))'"),
        ScriptedTurn::call("submit", json!({"files": ["pkg/calc.py"]})),
    ]);
    let trajectory = run(&policy, &episode, &settings()).await;
    assert_eq!(
        trajectory.outcome,
        Outcome::Submitted {
            arguments: json!({"files": ["pkg/calc.py"]})
        }
    );
    assert_eq!(trajectory.steps.len(), 4);
    assert_eq!(trajectory.task_id, "demo-1");
    assert_eq!(trajectory.episode_id, episode.id());
    assert_eq!(trajectory.policy, "scripted");
    let roles: Vec<Role> = trajectory.messages.iter().map(|m| m.role).collect();
    use Role::*;
    assert_eq!(
        roles,
        vec![System, User, Assistant, Tool, Assistant, Tool, Assistant, Tool, Assistant]
    );
    let system = &trajectory.messages[0].content;
    assert!(
        system.contains("`bash`") && system.contains("`str_replace_editor`"),
        "{system}"
    );
    assert!(system.contains("Submit the files you changed."), "{system}");
    assert!(system.contains("after 60 seconds"), "{system}");
    assert_eq!(trajectory.tools.len(), 3);

    let edit = &trajectory.steps[1].calls[0];
    assert_eq!(edit.id, "call_1_0");
    assert_eq!(edit.repairs, vec![policy::Repair::TrailingComma]);
    assert!(!edit.is_error);
    let bash_step = &trajectory.steps[2];
    let observation = &trajectory.messages[bash_step.calls[0].observation_message.unwrap()];
    assert_eq!(
        observation.content,
        "<returncode>0</returncode>\n<output>\n2\n</output>"
    );
    assert_eq!(observation.tool_call_id.as_deref(), Some("call_2_0"));
    assert_eq!(bash_step.calls[0].exec.as_ref().unwrap().exit_code, 0);
    for (i, step) in trajectory.steps.iter().enumerate() {
        assert_eq!(step.index as usize, i);
        assert_eq!(step.sampling_seed, derive_seed(7, &[i as u64]));
        assert_eq!(trajectory.messages[step.assistant_message].role, Assistant);
    }
    assert!(trajectory.usage.prompt_tokens > 0);
    assert!(trajectory.token_segments.is_empty());
    let patch = episode.diff().unwrap().to_patch();
    assert!(patch.contains("+    return a - b  # checked"), "{patch}");

    // The trajectory survives a JSON round trip unchanged.
    let text = serde_json::to_string(&trajectory).unwrap();
    assert_eq!(
        serde_json::from_str::<Trajectory>(&text).unwrap(),
        trajectory
    );
}

#[tokio::test]
async fn step_limit() {
    let h = harness(12);
    let episode = h.episode();
    let policy = ScriptedPolicy::new(vec![bash("true")]).cycling();
    let mut settings = settings();
    settings.budgets.max_steps = 3;
    let trajectory = run(&policy, &episode, &settings).await;
    assert_eq!(trajectory.outcome, Outcome::StepLimit { steps: 3 });
    assert_eq!(trajectory.steps.len(), 3);
    assert!(!trajectory.outcome.is_infrastructure_failure());
}

#[tokio::test]
async fn unreadable_turns_get_an_error_observation_then_end_the_episode() {
    let h = harness(13);
    let episode = h.episode();
    let policy = ScriptedPolicy::new(vec![
        ScriptedTurn::text("I think the bug is in calc.py."),
        ScriptedTurn::text(
            "<tool_call>{\"name\": \"bash\", \"arguments\": {\"command\": </tool_call>",
        ),
        ScriptedTurn::call("grep", json!({"pattern": "sub"})),
    ]);
    let trajectory = run(&policy, &episode, &settings()).await;
    match &trajectory.outcome {
        Outcome::FormatError {
            consecutive,
            last_error,
        } => {
            assert_eq!(*consecutive, 3);
            assert_eq!(last_error, "unknown tool `grep`");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    let errors: Vec<&str> = trajectory
        .steps
        .iter()
        .map(|s| s.format_error.as_deref().unwrap())
        .collect();
    assert_eq!(errors[0], "no call");
    assert!(
        errors[1].starts_with("tool call 1 is not valid JSON"),
        "{}",
        errors[1]
    );
    // Text replies are answered by a user message that shows the format; structured calls by a
    // tool message per call.
    let first = &trajectory.messages[3];
    assert_eq!(first.role, Role::User);
    assert!(
        first
            .content
            .starts_with("Your reply did not call any tool."),
        "{}",
        first.content
    );
    assert!(first.content.contains("<tool_call>"), "{}", first.content);
    let last = trajectory.messages.last().unwrap();
    assert_eq!(last.role, Role::Tool);
    assert!(
        last.content.starts_with("There is no tool named `grep`, so nothing was run. The tools are: bash, str_replace_editor, submit."),
        "{}",
        last.content
    );
}

#[tokio::test]
async fn a_readable_turn_resets_the_format_error_count() {
    let h = harness(14);
    let episode = h.episode();
    let policy = ScriptedPolicy::new(vec![
        ScriptedTurn::text("no call"),
        ScriptedTurn::text("still no call"),
        bash("true"),
        ScriptedTurn::text("no call"),
        ScriptedTurn::Truncated("<tool_call>{\"name\": \"bash\", \"argu".into()),
        ScriptedTurn::call("submit", json!({"files": "calc.py"})),
        ScriptedTurn::call("submit", json!({"files": ["pkg/calc.py"]})),
    ]);
    let mut settings = settings();
    settings.sampling.max_tokens = Some(1000);
    let trajectory = run(&policy, &episode, &settings).await;
    assert_eq!(trajectory.outcome.kind(), OutcomeKind::Submitted);
    assert_eq!(
        trajectory.steps[4].format_error.as_deref(),
        Some("truncated")
    );
    assert_eq!(trajectory.steps[4].finish_reason, FinishReason::Length);
    // The malformed submission was refused with an explanation, then fixed.
    let refused = &trajectory.steps[5].calls[0];
    assert!(refused.is_error);
    let text = &trajectory.messages[refused.observation_message.unwrap()].content;
    assert!(text.contains("`files` must be of type array"), "{text}");
}

#[tokio::test]
async fn context_overflow() {
    let h = harness(15);
    let episode = h.episode();
    // 10,000 bytes of shown output are about 2,500 tokens: over a 2,000-token budget.
    let policy = ScriptedPolicy::new(vec![bash("seq 1 5000"), bash("true")]);
    let mut settings = settings();
    settings.budgets.max_context_tokens = 2_000;
    let trajectory = run(&policy, &episode, &settings).await;
    match trajectory.outcome {
        Outcome::ContextOverflow {
            context_tokens,
            limit,
        } => {
            assert_eq!(limit, 2_000);
            assert!(context_tokens > 2_000, "{context_tokens}");
        }
        other => panic!("expected a context overflow, got {other:?}"),
    }
    assert_eq!(trajectory.steps.len(), 1);

    // A reply cut off where the context budget ends is an overflow too.
    let policy = ScriptedPolicy::new(vec![ScriptedTurn::Truncated("<tool_call>{".into())]);
    let trajectory = run(&policy, &episode, &settings).await;
    assert_eq!(trajectory.outcome.kind(), OutcomeKind::ContextOverflow);
}

/// A policy that fails every call with the error `make` returns.
struct Failing(fn() -> PolicyError);

#[async_trait::async_trait]
impl Policy for Failing {
    fn describe(&self) -> String {
        "failing".into()
    }
    async fn complete(&self, _: &ChatRequest) -> policy::Result<Vec<Completion>> {
        Err((self.0)())
    }
}

#[tokio::test]
async fn policy_failures() {
    let h = harness(16);
    let episode = h.episode();
    // A server that refuses the prompt as too long: an overflow, not an infrastructure failure.
    let too_long = Failing(|| PolicyError::ContextLength {
        message: "maximum context length is 4096 tokens".into(),
    });
    let trajectory = run(&too_long, &episode, &settings()).await;
    assert_eq!(trajectory.outcome.kind(), OutcomeKind::ContextOverflow);

    // A dead server: a port that was bound, then released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let mut config = OpenAiConfig::new(vec![url], "model");
    config.max_retries = 2;
    config.backoff = Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };
    let dead = OpenAiPolicy::new(config).unwrap();
    let trajectory = run(&dead, &episode, &settings()).await;
    match &trajectory.outcome {
        Outcome::PolicyError { message } => {
            assert!(message.contains("gave up after 3 attempts"), "{message}");
            assert!(message.contains("could not reach"), "{message}");
        }
        other => panic!("expected a policy error, got {other:?}"),
    }
    assert!(trajectory.outcome.is_infrastructure_failure());
    assert!(trajectory.steps.is_empty());

    let script_error = ScriptedPolicy::new(vec![bash("true"), ScriptedTurn::Fail("boom".into())]);
    let trajectory = run(&script_error, &episode, &settings()).await;
    assert_eq!(
        trajectory.outcome,
        Outcome::PolicyError {
            message: "scripted failure: boom".into()
        }
    );
    assert_eq!(trajectory.steps.len(), 1);
}

#[tokio::test]
async fn wall_clock_timeout_in_a_command_and_in_the_policy() {
    let h = harness(17);
    let episode = h.episode();
    let mut settings = settings();
    settings.budgets.wall_clock = Duration::from_millis(1500);
    let start = Instant::now();
    let policy = ScriptedPolicy::new(vec![bash("sleep 30")]);
    let trajectory = run(&policy, &episode, &settings).await;
    assert_eq!(trajectory.outcome.kind(), OutcomeKind::Timeout);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(trajectory.steps.len(), 1);
    let slow = ScriptedPolicy::new(vec![bash("true")]).with_latency(Duration::from_secs(30));
    let start = Instant::now();
    let trajectory = run(&slow, &episode, &settings).await;
    match trajectory.outcome {
        Outcome::Timeout {
            elapsed_seconds,
            limit_seconds,
        } => {
            assert_eq!(limit_seconds, 1.5);
            assert!((1.4..5.0).contains(&elapsed_seconds), "{elapsed_seconds}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Runs a script, but removes the episode's pids cgroup before its second answer, so the
/// sandbox can no longer start commands.
struct Sabotage {
    inner: ScriptedPolicy,
    episode_id: String,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Policy for Sabotage {
    fn describe(&self) -> String {
        "sabotage".into()
    }
    async fn complete(&self, request: &ChatRequest) -> policy::Result<Vec<Completion>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 1 {
            let found = find_dir("/sys/fs/cgroup/pids", &self.episode_id, 6)
                .expect("the episode's pids cgroup");
            std::fs::remove_dir(&found).expect("remove the cgroup");
        }
        self.inner.complete(request).await
    }
}

fn find_dir(root: &str, name: &str, depth: usize) -> Option<std::path::PathBuf> {
    let mut frontier = vec![std::path::PathBuf::from(root)];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dir in frontier {
            for entry in std::fs::read_dir(&dir).ok()?.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if entry.file_name() == name {
                        return Some(entry.path());
                    }
                    next.push(entry.path());
                }
            }
        }
        frontier = next;
    }
    None
}

#[tokio::test]
async fn a_failing_sandbox_is_a_sandbox_error() {
    let h = harness(18);
    let episode = h.episode();
    let policy = Sabotage {
        inner: ScriptedPolicy::new(vec![bash("true")]).cycling(),
        episode_id: episode.id().to_string(),
        calls: AtomicUsize::new(0),
    };
    let trajectory = run(&policy, &episode, &settings()).await;
    match &trajectory.outcome {
        Outcome::SandboxError { message } => assert!(message.contains("cgroup"), "{message}"),
        other => panic!("expected a sandbox error, got {other:?}"),
    }
    assert!(trajectory.outcome.is_infrastructure_failure());
    assert_eq!(trajectory.steps.len(), 2);
}

#[tokio::test]
async fn the_null_policy_submits_empty_arguments_at_once() {
    let h = harness(19);
    let episode = h.episode();
    let trajectory = run(&NullPolicy::new(), &episode, &settings()).await;
    assert_eq!(
        trajectory.outcome,
        Outcome::Submitted {
            arguments: json!({"files": []})
        }
    );
    assert_eq!(trajectory.steps.len(), 1);
    assert!(episode.diff().unwrap().to_patch().is_empty());
}

/// A token-level policy over a byte "tokenizer" and a toy chat template in which every
/// message renders as `<role>content<end>` and the prompt ends with `<assistant>`. With
/// `drift_at`, history is re-rendered differently from that step on (a template that drops
/// earlier assistant text), which breaks the exact-prefix rule.
struct ByteTokens {
    inner: ScriptedPolicy,
    drift_at: Option<usize>,
}

fn render(request: &ChatRequest, drift: bool) -> Vec<u32> {
    let mut text = String::new();
    for message in &request.messages {
        let role = format!("{:?}", message.role).to_lowercase();
        let content = if drift && message.role == Role::Assistant {
            ""
        } else {
            message.content.as_str()
        };
        text.push_str(&format!("<{role}>{content}<end>"));
    }
    text.push_str("<assistant>");
    text.bytes().map(u32::from).collect()
}

#[async_trait::async_trait]
impl Policy for ByteTokens {
    fn describe(&self) -> String {
        "byte-tokens".into()
    }
    async fn complete(&self, request: &ChatRequest) -> policy::Result<Vec<Completion>> {
        assert!(request.token_trace);
        let turn = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        let drift = self.drift_at.is_some_and(|at| turn >= at);
        let mut completions = self.inner.complete(request).await?;
        for completion in &mut completions {
            let generated: Vec<u32> = format!("{}<end>", completion.message.content)
                .bytes()
                .map(u32::from)
                .collect();
            let prompt = render(request, drift);
            completion.usage = Usage {
                prompt_tokens: prompt.len() as u64,
                completion_tokens: generated.len() as u64,
            };
            completion.tokens = Some(policy::TokenTrace {
                prompt_token_ids: prompt,
                logprobs: vec![-0.5; generated.len()],
                completion_token_ids: generated,
            });
        }
        Ok(completions)
    }
}

fn text_call(name: &str, arguments: serde_json::Value) -> ScriptedTurn {
    ScriptedTurn::text(format!(
        "<tool_call>{}</tool_call>",
        json!({"name": name, "arguments": arguments})
    ))
}

#[tokio::test]
async fn token_traces_give_segments_with_a_loss_mask_over_model_tokens_only() {
    let h = harness(20);
    let episode = h.episode();
    let script = vec![
        text_call("bash", json!({"command": "echo hello"})),
        text_call("bash", json!({"command": "true"})),
        text_call("submit", json!({"files": []})),
    ];
    let mut settings = settings();
    settings.token_trace = true;
    let policy = ByteTokens {
        inner: ScriptedPolicy::new(script.clone()),
        drift_at: None,
    };
    let trajectory = run(&policy, &episode, &settings).await;
    assert_eq!(trajectory.outcome.kind(), OutcomeKind::Submitted);
    assert_eq!(trajectory.token_segments.len(), 1);
    let segment = &trajectory.token_segments[0];
    assert_eq!((segment.first_step, segment.last_step), (0, 2));
    let masked: String = segment
        .token_ids
        .iter()
        .zip(&segment.loss_mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&t, _)| t as u8 as char)
        .collect();
    let expected: String = trajectory
        .messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| format!("{}<end>", m.content))
        .collect();
    assert_eq!(masked, expected);
    // Observations are in the sequence, unmasked.
    let unmasked: String = segment
        .token_ids
        .iter()
        .zip(&segment.loss_mask)
        .filter(|(_, &m)| m == 0)
        .map(|(&t, _)| t as u8 as char)
        .collect();
    assert!(
        unmasked.contains("<tool><returncode>0</returncode>\n<output>\nhello\n</output><end>"),
        "{unmasked}"
    );
    for (mask, logprob) in segment.loss_mask.iter().zip(&segment.logprobs) {
        assert_eq!(*logprob, if *mask == 1 { -0.5 } else { 0.0 });
    }
    let steps: Vec<_> = trajectory
        .steps
        .iter()
        .map(|s| s.tokens.clone().unwrap())
        .collect();
    assert_eq!(
        steps[2].completion_start + steps[2].completion_tokens,
        segment.token_ids.len()
    );

    // A template that re-renders history differently splits the sequence.
    let policy = ByteTokens {
        inner: ScriptedPolicy::new(script),
        drift_at: Some(2),
    };
    let episode = h.episode();
    let trajectory = run(&policy, &episode, &settings).await;
    let spans: Vec<(u32, u32)> = trajectory
        .token_segments
        .iter()
        .map(|s| (s.first_step, s.last_step))
        .collect();
    assert_eq!(spans, vec![(0, 1), (2, 2)]);
}
