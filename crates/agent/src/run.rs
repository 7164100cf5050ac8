//! The agent loop: ask the policy, run the tool calls in the episode, show the results, until
//! the model submits or a budget runs out. One loop for every skill, training and evaluation.
//!
//! Every way an episode can end is an [`Outcome`] in the returned [`Trajectory`]; the loop never
//! panics on model output or infrastructure failures and never turns them into a score.
//! `Err` is kept for a broken prompt template.

use std::time::{Duration, Instant};

use policy::{
    derive_seed, estimate_message_tokens, estimate_tokens, ChatRequest, Completion, FinishReason,
    Message, ParsedCall, Policy, SamplingParams, Usage,
};
use sandbox::Workspace;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::prompts::{Prompts, FORMAT_ERROR_TEMPLATE, SYSTEM_TEMPLATE};
use crate::tools::{CallResult, EnabledTools, SubmitSpec, ToolSettings, Toolbox};
use trajectory::Outcome;
use trajectory::{CallRecord, SegmentBuilder, Step, Trajectory};

/// What the agent is asked to do: the caller (the task factory) fills it per instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentTask {
    pub id: String,
    /// Variables of the system prompt template (e.g. `instructions` for the skill).
    pub system_vars: Map<String, Value>,
    /// The first user message, already rendered from the caller's instance template.
    pub user_prompt: String,
    pub submit: SubmitSpec,
    pub tools: EnabledTools,
    /// Environment of every `bash` command (e.g. the project's virtualenv on `PATH`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

/// When an episode is stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budgets {
    /// Policy calls.
    pub max_steps: u32,
    /// Prompt plus completion tokens of one call. Counts the server did not report (the first
    /// prompt, new observations) are estimated at four bytes a token and padded by a quarter.
    pub max_context_tokens: u64,
    #[serde(with = "crate::serde_seconds")]
    pub wall_clock: Duration,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets {
            max_steps: 30,
            max_context_tokens: 16_384,
            wall_clock: Duration::from_secs(900),
        }
    }
}

/// Everything about how episodes run that is not the task.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub budgets: Budgets,
    pub tools: ToolSettings,
    /// Sampling of every step; `n` is forced to 1 and `seed` derived per step.
    pub sampling: SamplingParams,
    /// Ask the policy for token ids and log-probs (token-in/token-out training).
    pub token_trace: bool,
    /// Consecutive replies without a usable tool call that end the episode.
    pub max_format_errors: u32,
    /// Also describe the tools and the `<tool_call>` format in the system prompt, for servers
    /// that do not render tools into the chat template.
    pub tools_in_prompt: bool,
    pub prompts: Prompts,
}

impl AgentSettings {
    pub fn new(prompts: Prompts) -> AgentSettings {
        AgentSettings {
            budgets: Budgets::default(),
            tools: ToolSettings::default(),
            sampling: SamplingParams::default(),
            token_trace: false,
            max_format_errors: 3,
            tools_in_prompt: false,
            prompts,
        }
    }
}

#[derive(Serialize)]
struct FormatErrorVars<'a> {
    reason: &'a str,
    error: String,
    tool: &'a str,
    tools: Vec<&'static str>,
    text_format: bool,
}

/// Runs one episode of `task` in `episode` with `policy`. The episode is left as the agent
/// left it (for grading); the caller destroys it.
pub async fn run_episode(
    policy: &dyn Policy,
    episode: &dyn Workspace,
    task: &AgentTask,
    settings: &AgentSettings,
    seed: u64,
) -> Result<Trajectory> {
    let started = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // A budget too large for the clock (a settings file can say anything) means no deadline.
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(settings.budgets.wall_clock)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
    let mut toolbox = Toolbox::new(
        episode,
        &settings.tools,
        &settings.prompts,
        &task.submit,
        task.tools,
        &task.env,
    );
    let tools = toolbox.specs()?;
    let mut vars = task.system_vars.clone();
    vars.insert("workspace".into(), sandbox::WORKSPACE.into());
    vars.insert(
        "tools".into(),
        serde_json::to_value(toolbox.names()).unwrap_or_default(),
    );
    vars.insert(
        "tool_specs".into(),
        serde_json::to_value(&tools).unwrap_or_default(),
    );
    vars.insert(
        "submit_description".into(),
        task.submit.description.clone().into(),
    );
    vars.insert("tools_in_prompt".into(), settings.tools_in_prompt.into());
    vars.insert(
        "command_timeout_seconds".into(),
        crate::tools::bash::seconds(settings.tools.command_timeout).into(),
    );
    let system = settings.prompts.render(SYSTEM_TEMPLATE, &vars)?;
    let mut request = ChatRequest {
        messages: vec![
            Message::system(system),
            Message::user(task.user_prompt.clone()),
        ],
        tools: tools.clone(),
        sampling: SamplingParams {
            n: 1,
            ..settings.sampling.clone()
        },
        token_trace: settings.token_trace,
    };
    let limit = settings.budgets.max_context_tokens;
    let tool_tokens = estimate_tokens(&serde_json::to_string(&tools).unwrap_or_default());
    // Estimated token counts are padded by a quarter, so that a prompt whose size is only
    // estimated (before the server reports usage) does not ask for more tokens than fit.
    let padded = |tokens: u64| tokens + tokens.div_ceil(4);
    let mut context = padded(tool_tokens + estimate_message_tokens(&request.messages));
    let mut steps: Vec<Step> = Vec::new();
    let mut segments = SegmentBuilder::default();
    let mut usage = Usage::default();
    let mut final_context_tokens = 0;
    let mut consecutive_format_errors = 0u32;
    let timeout = |started: Instant| Outcome::Timeout {
        elapsed_seconds: started.elapsed().as_secs_f64(),
        limit_seconds: settings.budgets.wall_clock.as_secs_f64(),
    };

    let outcome = loop {
        let index = steps.len() as u32;
        if index >= settings.budgets.max_steps {
            break Outcome::StepLimit { steps: index };
        }
        // A policy that answers at once would otherwise never hit the deadline.
        if tokio::time::Instant::now() >= deadline {
            break timeout(started);
        }
        if context >= limit {
            break Outcome::ContextOverflow {
                context_tokens: context,
                limit,
            };
        }
        let room = limit - context;
        let wanted = settings.sampling.max_tokens.map_or(u64::MAX, u64::from);
        let clamped = room < wanted;
        request.sampling.max_tokens = Some(room.min(wanted).min(u64::from(u32::MAX)) as u32);
        let sampling_seed = derive_seed(seed, &[u64::from(index)]);
        request.sampling.seed = Some(sampling_seed);

        let step_started = Instant::now();
        let answer = tokio::time::timeout_at(deadline, policy.complete(&request)).await;
        let policy_seconds = step_started.elapsed().as_secs_f64();
        let completion: Completion = match answer {
            Err(_) => break timeout(started),
            Ok(Err(e)) if e.is_context_length() => {
                break Outcome::ContextOverflow {
                    context_tokens: context,
                    limit,
                }
            }
            Ok(Err(e)) => {
                break Outcome::PolicyError {
                    message: e.to_string(),
                }
            }
            Ok(Ok(mut completions)) if !completions.is_empty() => completions.swap_remove(0),
            Ok(Ok(_)) => {
                break Outcome::PolicyError {
                    message: "the policy returned no completion".into(),
                }
            }
        };
        usage += completion.usage;
        let used = if completion.usage.prompt_tokens > 0 {
            completion.usage.prompt_tokens + completion.usage.completion_tokens
        } else {
            context
                + padded(estimate_message_tokens(std::slice::from_ref(
                    &completion.message,
                )))
        };
        final_context_tokens = used;
        let tokens = match &completion.tokens {
            Some(trace) => Some(segments.push(index, trace)),
            None => {
                segments.interrupt();
                None
            }
        };
        let assistant_message = request.messages.len();
        let native = !completion.message.tool_calls.is_empty();
        request.messages.push(completion.message.clone());
        let mut step = Step {
            index,
            sampling_seed,
            started_seconds: (step_started - started).as_secs_f64(),
            policy_seconds,
            tool_seconds: 0.0,
            finish_reason: completion.finish_reason.clone(),
            usage: completion.usage,
            assistant_message,
            calls: Vec::new(),
            format_error: None,
            tokens,
        };

        // A reply cut off by the context budget ends the episode; one cut off by max_tokens
        // is a format error (its calls may be incomplete, so none is run).
        let problem = if completion.finish_reason == FinishReason::Length {
            if clamped {
                steps.push(step);
                break Outcome::ContextOverflow {
                    context_tokens: used,
                    limit,
                };
            }
            Some(("truncated", String::new(), ""))
        } else {
            match &completion.calls {
                Err(e) => Some(("invalid", e.to_string(), "")),
                Ok(calls) if calls.is_empty() => Some(("no_call", String::new(), "")),
                Ok(calls) => calls
                    .iter()
                    .find(|c| !toolbox.has(&c.name))
                    .map(|c| ("unknown_tool", String::new(), c.name.as_str())),
            }
        };
        let before = request.messages.len();
        if let Some((reason, error, tool)) = problem {
            consecutive_format_errors += 1;
            let text = settings.prompts.render(
                FORMAT_ERROR_TEMPLATE,
                &FormatErrorVars {
                    reason,
                    error: error.clone(),
                    tool,
                    tools: toolbox.names(),
                    text_format: !native,
                },
            )?;
            step.format_error = Some(match reason {
                "invalid" => error,
                "unknown_tool" => format!("unknown tool `{tool}`"),
                other => other.replace('_', " "),
            });
            if native {
                for call in &completion.message.tool_calls {
                    request
                        .messages
                        .push(Message::tool(call.id.clone(), text.clone()));
                }
            } else {
                request.messages.push(Message::user(text));
            }
            context = used + padded(estimate_message_tokens(&request.messages[before..]));
            let last_error = step.format_error.clone().unwrap_or_default();
            steps.push(step);
            if consecutive_format_errors >= settings.max_format_errors {
                break Outcome::FormatError {
                    consecutive: consecutive_format_errors,
                    last_error,
                };
            }
            continue;
        }
        consecutive_format_errors = 0;

        let calls: &[ParsedCall] = completion.calls.as_deref().unwrap_or_default();
        let tools_started = Instant::now();
        let mut ended = None;
        for (i, call) in calls.iter().enumerate() {
            let id = call
                .id
                .clone()
                .unwrap_or_else(|| format!("call_{index}_{i}"));
            let mut record = CallRecord {
                id: id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
                repairs: call.repairs.clone(),
                observation_message: None,
                is_error: false,
                exec: None,
            };
            let result =
                tokio::time::timeout_at(deadline, toolbox.call(&call.name, &call.arguments)).await;
            match result {
                Err(_) => ended = Some(timeout(started)),
                Ok(Err(Error::Sandbox(e))) => {
                    ended = Some(Outcome::SandboxError {
                        message: e.to_string(),
                    })
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(CallResult::Submitted(arguments))) => {
                    ended = Some(Outcome::Submitted { arguments })
                }
                Ok(Ok(CallResult::Observation(observation))) => {
                    record.observation_message = Some(request.messages.len());
                    record.is_error = observation.is_error;
                    record.exec = observation.exec;
                    request.messages.push(Message::tool(id, observation.text));
                }
            }
            step.calls.push(record);
            if ended.is_some() {
                break;
            }
        }
        step.tool_seconds = tools_started.elapsed().as_secs_f64();
        context = used + padded(estimate_message_tokens(&request.messages[before..]));
        steps.push(step);
        if let Some(outcome) = ended {
            break outcome;
        }
    };

    let policy_seconds = steps.iter().map(|s| s.policy_seconds).sum();
    let tool_seconds = steps.iter().map(|s| s.tool_seconds).sum();
    Ok(Trajectory {
        task_id: task.id.clone(),
        episode_id: episode.id().to_string(),
        policy: policy.describe(),
        seed,
        outcome,
        messages: request.messages,
        tools,
        steps,
        usage,
        final_context_tokens,
        started_unix_ms,
        wall_seconds: started.elapsed().as_secs_f64(),
        policy_seconds,
        tool_seconds,
        token_segments: segments.finish(),
    })
}
