//! Prompts and tool descriptions as files: minijinja templates (`*.j2`) and tool specs
//! (`tools/*.json`), embedded in the binary as defaults and overridable from a directory.
//!
//! The wording the model sees lives in `crates/agent/prompts/`, never in strings in code.
//! Per-skill instance templates are the caller's: add them to the directory (or
//! [`Prompts::add_template`]) and render them with [`Prompts::render`].

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use policy::ToolSpec;
use serde::Serialize;

use crate::error::{Error, Result};

/// The templates the agent itself renders.
pub const SYSTEM_TEMPLATE: &str = "system.md.j2";
pub const INSTANCE_TEMPLATE: &str = "instance.md.j2";
pub const BASH_OBSERVATION_TEMPLATE: &str = "bash_observation.md.j2";
pub const FORMAT_ERROR_TEMPLATE: &str = "format_error.md.j2";

const EMBEDDED_TEMPLATES: &[(&str, &str)] = &[
    (SYSTEM_TEMPLATE, include_str!("../prompts/system.md.j2")),
    (INSTANCE_TEMPLATE, include_str!("../prompts/instance.md.j2")),
    (
        BASH_OBSERVATION_TEMPLATE,
        include_str!("../prompts/bash_observation.md.j2"),
    ),
    (
        FORMAT_ERROR_TEMPLATE,
        include_str!("../prompts/format_error.md.j2"),
    ),
];

const EMBEDDED_TOOLS: &[(&str, &str)] = &[
    ("bash", include_str!("../prompts/tools/bash.json")),
    (
        "str_replace_editor",
        include_str!("../prompts/tools/str_replace_editor.json"),
    ),
];

/// Templates and tool specs. Cheap to share by reference across episodes.
#[derive(Clone, Debug)]
pub struct Prompts {
    env: Environment<'static>,
    tools: BTreeMap<String, ToolSpec>,
}

impl Prompts {
    /// The defaults compiled into the binary.
    pub fn embedded() -> Result<Prompts> {
        let mut prompts = Prompts {
            env: environment(),
            tools: BTreeMap::new(),
        };
        for (name, source) in EMBEDDED_TEMPLATES {
            prompts.add_template(name, source)?;
        }
        for (name, json) in EMBEDDED_TOOLS {
            prompts.add_tool_spec(name, json)?;
        }
        Ok(prompts)
    }

    /// The defaults, overridden and extended by `dir`: each `*.j2` file there is a template
    /// of that name, each `tools/NAME.json` the spec of tool `NAME`.
    pub fn from_dir(dir: &Path) -> Result<Prompts> {
        let mut prompts = Prompts::embedded()?;
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| Error::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        };
        let entries = |dir: &Path| -> Result<Vec<std::path::PathBuf>> {
            let mut paths: Vec<_> = std::fs::read_dir(dir)
                .map_err(|source| Error::Io {
                    context: format!("listing prompt directory {}", dir.display()),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            paths.sort();
            Ok(paths)
        };
        for path in entries(dir)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".j2") && path.is_file() {
                prompts.add_template(name, &read(&path)?)?;
            }
        }
        let tools_dir = dir.join("tools");
        if tools_dir.is_dir() {
            for path in entries(&tools_dir)? {
                if let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                {
                    prompts.add_tool_spec(name, &read(&path)?)?;
                }
            }
        }
        Ok(prompts)
    }

    /// Adds (or replaces) a template; fails on a syntax error.
    pub fn add_template(&mut self, name: &str, source: &str) -> Result<()> {
        self.env
            .add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| template_error(name, e))
    }

    /// Whether a template of this name exists.
    pub fn has_template(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    fn add_tool_spec(&mut self, name: &str, json: &str) -> Result<()> {
        let spec: ToolSpec = serde_json::from_str(json).map_err(|e| Error::Prompt {
            name: format!("tools/{name}.json"),
            message: e.to_string(),
        })?;
        if spec.name != name {
            return Err(Error::Prompt {
                name: format!("tools/{name}.json"),
                message: format!("names tool `{}`, not `{name}`", spec.name),
            });
        }
        self.tools.insert(name.to_string(), spec);
        Ok(())
    }

    /// Renders template `name` with the fields of `vars`. Printing a variable that `vars`
    /// lacks is an error (testing it in `{% if %}` is not).
    pub fn render(&self, name: &str, vars: &impl Serialize) -> Result<String> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| template_error(name, e))?;
        template
            .render(minijinja::Value::from(minijinja::value::Serde(vars)))
            .map_err(|e| template_error(name, e))
    }

    /// The spec of a built-in tool.
    pub fn tool_spec(&self, name: &str) -> Result<ToolSpec> {
        self.tools.get(name).cloned().ok_or_else(|| Error::Prompt {
            name: format!("tools/{name}.json"),
            message: "no such tool spec".into(),
        })
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env
}

fn template_error(name: &str, error: minijinja::Error) -> Error {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Prompt {
        name: name.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_templates_render() {
        let prompts = Prompts::embedded().unwrap();
        let observation = prompts
            .render(
                BASH_OBSERVATION_TEMPLATE,
                &json!({"returncode": 1, "output": "boom\n", "timed_out": false, "killed_by": null, "timeout_seconds": "60"}),
            )
            .unwrap();
        assert_eq!(
            observation,
            "<returncode>1</returncode>\n<output>\nboom\n</output>"
        );
        let system = prompts
            .render(
                SYSTEM_TEMPLATE,
                &json!({
                    "workspace": "/workspace", "tools": ["bash", "submit"],
                    "tool_specs": [r#"{"name":"bash","description":"a && b"}"#],
                    "submit_description": "Submit.", "tools_in_prompt": true,
                    "command_timeout_seconds": "30", "instructions": "Only look.",
                }),
            )
            .unwrap();
        assert!(system.contains("stopped after 30 seconds"), "{system}");
        assert!(!system.contains("str_replace_editor"), "{system}");
        assert!(system.contains("\n\nOnly look.\n"), "{system}");
        assert!(
            system.contains("\n{\"name\":\"bash\",\"description\":\"a && b\"}\n</tools>"),
            "{system}"
        );
        assert_eq!(prompts.tool_spec("bash").unwrap().name, "bash");
        assert!(prompts.tool_spec("python").is_err());
    }

    #[test]
    fn templates_can_be_overridden_added_and_fail_clearly() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        std::fs::create_dir_all(dir.join("tools")).unwrap();
        std::fs::write(dir.join("instance.md.j2"), "Issue: {{ issue }}").unwrap();
        std::fs::write(
            dir.join("localize.md.j2"),
            "Find the files for {{ issue }}.",
        )
        .unwrap();
        std::fs::write(
            dir.join("tools/bash.json"),
            r#"{"name": "bash", "description": "run", "parameters": {"type": "object"}}"#,
        )
        .unwrap();
        let prompts = Prompts::from_dir(dir).unwrap();
        let vars = json!({"issue": "crash on empty input"});
        assert_eq!(
            prompts.render(INSTANCE_TEMPLATE, &vars).unwrap(),
            "Issue: crash on empty input"
        );
        assert_eq!(
            prompts.render("localize.md.j2", &vars).unwrap(),
            "Find the files for crash on empty input."
        );
        assert_eq!(prompts.tool_spec("bash").unwrap().description, "run");
        assert!(prompts.tool_spec("str_replace_editor").is_ok());
        let missing = prompts.render("localize.md.j2", &json!({})).unwrap_err();
        assert!(missing.to_string().contains("localize.md.j2"), "{missing}");
        let mut prompts = prompts;
        assert!(prompts.add_template("broken.j2", "{% if %}").is_err());
        std::fs::write(
            dir.join("tools/bash.json"),
            r#"{"name": "sh", "description": "", "parameters": {}}"#,
        )
        .unwrap();
        let error = Prompts::from_dir(dir).unwrap_err();
        assert!(error.to_string().contains("names tool `sh`"), "{error}");
    }
}
