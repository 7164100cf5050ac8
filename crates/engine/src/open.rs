//! From a `--policy` value to the policy that plays: the one place every caller (evaluation,
//! the trainer's rollouts, the quickstart) opens a policy.

use std::path::PathBuf;
use std::sync::Arc;

use model::{DType, Device};
use policy::{OpenAiConfig, OpenAiPolicy, Policy, PolicyChoice, PolicySpec};

use crate::{Error, LocalPolicy, Result, ServeOptions};

/// What opening a policy may need besides its spec.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The served model's name, required for `openai:` policies.
    pub model: Option<String>,
    /// Where `local:` models run.
    pub device: Device,
    pub dtype: DType,
    /// The most sequences the in-process engine batches.
    pub max_batch: usize,
    /// Base of the in-process engine's seeds for requests that carry none.
    pub seed: u64,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            model: None,
            device: Device::Cpu,
            dtype: DType::F32,
            max_batch: 64,
            seed: 0,
        }
    }
}

/// The policy of `spec`, and the label that run records and reports name it by. `local:`
/// models are loaded into this process ([`LocalPolicy`]); the oracle and the null policy are
/// per-instance choices the rollout makes.
pub fn open_policy(spec: &PolicySpec, options: &OpenOptions) -> Result<(PolicyChoice, String)> {
    Ok(match spec {
        PolicySpec::Oracle => (PolicyChoice::Oracle, "oracle".into()),
        PolicySpec::Null => (PolicyChoice::Null, "null".into()),
        PolicySpec::OpenAi { endpoints } => {
            let model = options.model.clone().ok_or_else(|| {
                Error::Policy(policy::Error::InvalidSpec {
                    spec: format!("openai:{}", endpoints.join(",")),
                    reason: "a model name (--model NAME) is required with an openai: policy".into(),
                })
            })?;
            let label = format!("openai:{} model {model}", endpoints.join(","));
            let policy: Arc<dyn Policy> = Arc::new(OpenAiPolicy::new(OpenAiConfig::new(
                endpoints.clone(),
                model,
            ))?);
            (PolicyChoice::Shared(policy), label)
        }
        PolicySpec::Local { model_dir } => {
            let policy = load_local(model_dir, options)?;
            (
                PolicyChoice::Shared(Arc::new(policy)),
                format!("local:{}", model_dir.display()),
            )
        }
    })
}

/// The model in `model_dir` in this process, as a policy whose weights can be swapped.
pub fn load_local(model_dir: &std::path::Path, options: &OpenOptions) -> Result<LocalPolicy> {
    LocalPolicy::load(&ServeOptions {
        model_dir: PathBuf::from(model_dir),
        model_name: None,
        dtype: options.dtype,
        device: options.device.clone(),
        max_batch: options.max_batch,
        seed: options.seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_choices_and_a_missing_model_name() {
        let open = |spec: &str| open_policy(&spec.parse().unwrap(), &OpenOptions::default());
        assert!(matches!(open("oracle"), Ok((PolicyChoice::Oracle, l)) if l == "oracle"));
        assert!(matches!(open("null"), Ok((PolicyChoice::Null, l)) if l == "null"));
        let err = open("openai:http://127.0.0.1:9/v1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--model"), "{err}");
        let err = open("local:/nonexistent/model").err().unwrap().to_string();
        assert!(err.contains("/nonexistent/model"), "{err}");
    }
}
