//! The embedded model as a [`policy::Policy`] in the same process: each request takes exactly
//! the path an HTTP request to `atomskill serve` takes (chat template, tokenizer, batched
//! worker, tool-call parsing, vLLM-style token ids and log-probs), minus the socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use policy::{ChatRequest, Completion, Policy};
use serde_json::Map;

use crate::{answer, Answer, EngineState, Result, ServeOptions};

/// The embedded model, in process.
#[derive(Clone)]
pub struct LocalPolicy {
    state: Arc<EngineState>,
    label: String,
    version: Arc<AtomicU64>,
}

impl LocalPolicy {
    /// Loads the checkpoint and starts its worker thread.
    pub fn load(options: &ServeOptions) -> Result<LocalPolicy> {
        let state = EngineState::load(options)?;
        Ok(LocalPolicy::new(
            state,
            options.model_dir.display().to_string(),
        ))
    }

    pub fn new(state: Arc<EngineState>, label: String) -> LocalPolicy {
        LocalPolicy {
            state,
            label,
            version: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Swaps in new weights (a trainer's weight sync) and records their version.
    pub async fn set_model(&self, model: model::CausalLm, version: u64) -> Result<()> {
        self.state.set_model(model).await?;
        self.version.store(version, Ordering::SeqCst);
        Ok(())
    }

    /// The version of the weights in use (0 for those loaded at start).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Policy for LocalPolicy {
    fn describe(&self) -> String {
        format!("local:{}", self.label)
    }

    async fn complete(&self, request: &ChatRequest) -> policy::Result<Vec<Completion>> {
        let body = policy::wire::request_body(self.state.model_name(), request, &Map::new());
        let bytes = serde_json::to_vec(&body).expect("request bodies serialise");
        match answer(&self.state, &bytes).await {
            Ok(Answer::Stream(_)) => Err(policy::Error::BadResponse {
                endpoint: self.describe(),
                message: "a streamed answer to a request that did not ask for one".into(),
            }),
            Ok(Answer::Full(response)) => {
                let bytes = serde_json::to_vec(&response).expect("responses serialise");
                policy::wire::parse_response(&bytes, request.sampling.n).map_err(|message| {
                    policy::Error::BadResponse {
                        endpoint: self.describe(),
                        message,
                    }
                })
            }
            Err(error) if error.message.contains("maximum context length") => {
                Err(policy::Error::ContextLength {
                    message: error.message,
                })
            }
            Err(error) => Err(policy::Error::Http {
                endpoint: self.describe(),
                status: error.status,
                body: error.body().to_string(),
                retry_after: None,
            }),
        }
    }
}
