//! How episodes run, as one plain config with one set of defaults: what `atomskill eval`'s
//! flags, `atomskill train`'s `[agent]` table and the quickstart all start from.

use std::path::PathBuf;
use std::time::Duration;

use agent::{AgentSettings, Budgets, Prompts};
use serde::{Deserialize, Serialize};

/// The agent's budgets and prompts for every episode of a run (sampling is the caller's:
/// evaluation and training sample differently).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Policy calls per episode.
    pub max_steps: u32,
    /// Context budget in tokens.
    pub max_context_tokens: u64,
    /// Wall-clock budget of one episode.
    pub episode_timeout_seconds: u64,
    /// Wall-clock limit of one test run while grading.
    pub test_timeout_seconds: u64,
    /// Describe the tools in the system prompt (for servers that do not render tools).
    pub tools_in_prompt: bool,
    /// A directory of prompt templates overriding the embedded ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PathBuf>,
}

/// How long one test run may take while grading, unless configured.
pub const DEFAULT_TEST_TIMEOUT_SECONDS: u64 = 300;

impl Default for AgentConfig {
    fn default() -> AgentConfig {
        let budgets = Budgets::default();
        AgentConfig {
            max_steps: budgets.max_steps,
            max_context_tokens: budgets.max_context_tokens,
            episode_timeout_seconds: budgets.wall_clock.as_secs(),
            test_timeout_seconds: DEFAULT_TEST_TIMEOUT_SECONDS,
            tools_in_prompt: false,
            prompts: None,
        }
    }
}

impl AgentConfig {
    /// The agent settings of these budgets: the prompts (embedded, or from `prompts`) with the
    /// per-skill task templates added, default sampling.
    pub fn settings(&self) -> crate::Result<AgentSettings> {
        let mut prompts = match &self.prompts {
            Some(dir) => Prompts::from_dir(dir)?,
            None => Prompts::embedded()?,
        };
        crate::task::add_templates(&mut prompts)?;
        let mut settings = AgentSettings::new(prompts);
        settings.budgets.max_steps = self.max_steps;
        settings.budgets.max_context_tokens = self.max_context_tokens;
        settings.budgets.wall_clock = Duration::from_secs(self.episode_timeout_seconds);
        settings.tools_in_prompt = self.tools_in_prompt;
        Ok(settings)
    }

    pub fn test_timeout(&self) -> Duration {
        Duration::from_secs(self.test_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_agents_and_settings_carry_them() {
        let config = AgentConfig::default();
        let settings = config.settings().unwrap();
        assert_eq!(settings.budgets, Budgets::default());
        assert_eq!(config.test_timeout(), Duration::from_secs(300));
        let custom = AgentConfig {
            max_steps: 4,
            episode_timeout_seconds: 7,
            ..AgentConfig::default()
        };
        let settings = custom.settings().unwrap();
        assert_eq!(settings.budgets.max_steps, 4);
        assert_eq!(settings.budgets.wall_clock, Duration::from_secs(7));
        let parsed: AgentConfig = serde_json::from_str(r#"{"max_steps": 5}"#).unwrap();
        assert_eq!(parsed.max_context_tokens, config.max_context_tokens);
        assert!(serde_json::from_str::<AgentConfig>(r#"{"max_step": 5}"#).is_err());
    }
}
