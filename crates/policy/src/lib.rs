//! Chat policies for atomskill agents.
//!
//! A [`Policy`] turns a [`ChatRequest`] (messages, tools, [`SamplingParams`]) into one or more
//! [`Completion`]s, each holding the assistant message, its tool calls read and repaired (or a
//! [`FormatError`]), the finish reason, token usage and, where the server offers them, the exact
//! token ids and sampled log-probs. Backends: [`OpenAiPolicy`] (any OpenAI-compatible server,
//! several endpoints), [`ScriptedPolicy`] and [`NullPolicy`]. [`PolicySpec`] parses the
//! command line's `--policy` value.
//!
//! This crate knows nothing of sandboxes, tools' meaning or skills, never reads environment
//! variables, and draws no randomness it was not given a seed for.

mod chat;
mod error;
pub mod json_repair;
mod openai;
mod scripted;
mod seed;
mod toolcall;

pub use crate::chat::{
    estimate_message_tokens, estimate_tokens, ChatRequest, Completion, FinishReason, FunctionCall,
    Message, Role, SamplingParams, TokenTrace, ToolCall, ToolSpec, Usage,
};
pub use crate::error::{Error, Result};
pub use crate::json_repair::Repair;
pub use crate::openai::wire;
pub use crate::openai::wire::token_id_of;
pub use crate::openai::{OpenAiConfig, OpenAiPolicy};
pub use crate::scripted::{empty_arguments, NullPolicy, ScriptedPolicy, ScriptedTurn, SUBMIT_TOOL};
pub use crate::seed::{derive_seed, Backoff, SplitMix64};
pub use crate::toolcall::{
    parse_structured, parse_text, FormatError, FormatErrorKind, ParsedCall, CLOSE_TAG, OPEN_TAG,
};

/// Something that answers chat requests: a model server, a script, a rule.
#[async_trait::async_trait]
pub trait Policy: Send + Sync {
    /// What trajectories record as the policy (backend, endpoints, model).
    fn describe(&self) -> String;

    /// Samples `request.sampling.n` completions. `Err` means none could be had; a completion
    /// with unreadable tool calls is still `Ok`.
    async fn complete(&self, request: &ChatRequest) -> Result<Vec<Completion>>;
}

/// Which policy plays an instance.
#[derive(Clone)]
pub enum PolicyChoice {
    /// One policy for every episode (a model server, the embedded model).
    Shared(std::sync::Arc<dyn Policy>),
    /// The oracle of each instance, built per instance from its gold answer.
    Oracle,
    /// Submits at once.
    Null,
}

/// A policy named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicySpec {
    /// `openai:URL[,URL...]`: OpenAI-compatible servers (API base URLs, e.g.
    /// `http://127.0.0.1:8000/v1`), load-balanced.
    OpenAi { endpoints: Vec<String> },
    /// `null`: submits at once.
    Null,
    /// `oracle`: solves each instance from its gold answer; built per instance by the caller as
    /// a [`ScriptedPolicy`].
    Oracle,
    /// `local:DIR`: the embedded model from a checkpoint directory, in process.
    Local { model_dir: std::path::PathBuf },
}

impl std::str::FromStr for PolicySpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<PolicySpec> {
        let invalid = |reason: &str| Error::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        match spec.trim() {
            "null" => Ok(PolicySpec::Null),
            "oracle" => Ok(PolicySpec::Oracle),
            other if other.starts_with("local:") => {
                let dir = other["local:".len()..].trim();
                if dir.is_empty() {
                    return Err(invalid("no checkpoint directory after `local:`"));
                }
                Ok(PolicySpec::Local {
                    model_dir: dir.into(),
                })
            }
            other => {
                let urls = other
                    .strip_prefix("openai:")
                    .ok_or_else(|| invalid("unknown policy kind"))?;
                let endpoints: Vec<String> = urls
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect();
                if endpoints.is_empty() {
                    return Err(invalid("no URL after `openai:`"));
                }
                for url in &endpoints {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(invalid(&format!(
                            "`{url}` is not an http:// or https:// URL"
                        )));
                    }
                }
                Ok(PolicySpec::OpenAi { endpoints })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, expected: Option<PolicySpec>) {
        assert_eq!(spec.parse::<PolicySpec>().ok(), expected, "{spec:?}");
    }

    #[test]
    fn specs() {
        check("null", Some(PolicySpec::Null));
        check("oracle", Some(PolicySpec::Oracle));
        check(
            "openai:http://127.0.0.1:8000/v1",
            Some(PolicySpec::OpenAi {
                endpoints: vec!["http://127.0.0.1:8000/v1".into()],
            }),
        );
        check(
            "openai:http://a:1/v1, https://b/v1,",
            Some(PolicySpec::OpenAi {
                endpoints: vec!["http://a:1/v1".into(), "https://b/v1".into()],
            }),
        );
        check("openai:", None);
        check(
            "local:/models/tiny",
            Some(PolicySpec::Local {
                model_dir: "/models/tiny".into(),
            }),
        );
        check("local:", None);
        check("openai:localhost:8000", None);
        check("vllm:http://a", None);
        check("", None);
    }
}
