//! The agent's tools, one minimal interface for every skill: `bash`, `str_replace_editor` and
//! `submit` (whose arguments the task defines).
//!
//! A [`Toolbox`] belongs to one episode: it holds the editor's undo history and runs calls in
//! that episode only. Tools never see the host file system, never decide what an answer is
//! worth, and turn every mistake of the model into an observation.

pub mod bash;
pub mod editor;
pub mod output;
pub mod submit;

use std::time::Duration;

use policy::{ToolSpec, SUBMIT_TOOL};
use sandbox::Workspace;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::prompts::Prompts;
pub use submit::SubmitSpec;
use trajectory::ExecSummary;

pub const BASH: &str = "bash";
pub const EDITOR: &str = "str_replace_editor";
pub const SUBMIT: &str = SUBMIT_TOOL;

/// Limits and sizes of the tools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolSettings {
    /// Wall-clock limit of one `bash` command.
    #[serde(with = "crate::serde_seconds")]
    pub command_timeout: Duration,
    /// Bytes of command output shown from the start and from the end.
    pub output_head_bytes: usize,
    pub output_tail_bytes: usize,
    /// Largest file the editor reads.
    pub max_file_bytes: u64,
    /// Longest `view` answer before it is clipped.
    pub max_view_bytes: usize,
    /// Lines of context around an edit in the editor's answer.
    pub snippet_lines: usize,
}

impl Default for ToolSettings {
    fn default() -> ToolSettings {
        ToolSettings {
            command_timeout: Duration::from_secs(60),
            output_head_bytes: 5_000,
            output_tail_bytes: 5_000,
            max_file_bytes: 4 << 20,
            max_view_bytes: 16_000,
            snippet_lines: 4,
        }
    }
}

/// Which tools besides `submit` the model gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnabledTools {
    pub bash: bool,
    pub editor: bool,
}

impl Default for EnabledTools {
    fn default() -> EnabledTools {
        EnabledTools {
            bash: true,
            editor: true,
        }
    }
}

/// What a tool call returns to the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub text: String,
    /// The call was refused or failed because of the model's arguments.
    pub is_error: bool,
    pub exec: Option<ExecSummary>,
}

impl Observation {
    pub fn ok(text: impl Into<String>) -> Observation {
        Observation {
            text: text.into(),
            is_error: false,
            exec: None,
        }
    }

    pub fn error(text: impl Into<String>) -> Observation {
        Observation {
            text: text.into(),
            is_error: true,
            exec: None,
        }
    }
}

/// What a call to a tool came to.
#[derive(Clone, Debug, PartialEq)]
pub enum CallResult {
    Observation(Observation),
    /// `submit` with arguments that fit its schema: the episode ends.
    Submitted(Value),
}

/// The tools of one episode.
pub struct Toolbox<'a> {
    episode: &'a dyn Workspace,
    settings: &'a ToolSettings,
    prompts: &'a Prompts,
    submit: &'a SubmitSpec,
    enabled: EnabledTools,
    env: &'a [(String, String)],
    history: editor::EditHistory,
}

impl<'a> Toolbox<'a> {
    pub fn new(
        episode: &'a dyn Workspace,
        settings: &'a ToolSettings,
        prompts: &'a Prompts,
        submit: &'a SubmitSpec,
        enabled: EnabledTools,
        env: &'a [(String, String)],
    ) -> Toolbox<'a> {
        Toolbox {
            episode,
            settings,
            prompts,
            submit,
            enabled,
            env,
            history: editor::EditHistory::default(),
        }
    }

    /// Names of the tools the model has, `submit` last.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.enabled.bash {
            names.push(BASH);
        }
        if self.enabled.editor {
            names.push(EDITOR);
        }
        names.push(SUBMIT);
        names
    }

    /// The specs given to the model.
    pub fn specs(&self) -> Result<Vec<ToolSpec>> {
        let mut specs = Vec::new();
        for name in self.names() {
            if name == SUBMIT {
                specs.push(ToolSpec {
                    name: SUBMIT.into(),
                    description: self.submit.description.clone(),
                    parameters: self.submit.parameters.clone(),
                });
            } else {
                specs.push(self.prompts.tool_spec(name)?);
            }
        }
        Ok(specs)
    }

    pub fn has(&self, name: &str) -> bool {
        self.names().contains(&name)
    }

    /// Runs one call of a tool the model has. `Err` only if the sandbox or a template failed.
    pub async fn call(&mut self, name: &str, arguments: &Value) -> Result<CallResult> {
        let observation = match name {
            SUBMIT => {
                return Ok(match self.submit.check(arguments) {
                    None => CallResult::Submitted(arguments.clone()),
                    Some(problem) => CallResult::Observation(Observation::error(format!(
                        "Nothing was submitted: {problem}. Call `submit` again with arguments that fit its schema."
                    ))),
                })
            }
            BASH if self.enabled.bash => match arguments.get("command").and_then(Value::as_str) {
                Some(command) => {
                    bash::run(self.episode, self.settings, self.prompts, self.env, command).await?
                }
                None => Observation::error(
                    "Parameter `command` (a string) is required for `bash`; nothing was run.",
                ),
            },
            EDITOR if self.enabled.editor => {
                editor::Editor {
                    episode: self.episode,
                    settings: self.settings,
                    history: &mut self.history,
                }
                .run(arguments)
                .await?
            }
            other => Observation::error(format!("There is no tool named `{other}`.")),
        };
        Ok(CallResult::Observation(observation))
    }
}
