//! What the agent is told per skill: the instance's user prompt (a template file per skill in
//! `crates/rollout/prompts/`) and the arguments of its `submit` tool.

use agent::{AgentTask, EnabledTools, Prompts, SubmitSpec};
use corpus::Ecosystem;
use serde_json::{json, Map, Value};
use tasks::{Instance, Skill, Task};

use crate::error::Result;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "localization.md.j2",
        include_str!("../prompts/localization.md.j2"),
    ),
    ("editing.md.j2", include_str!("../prompts/editing.md.j2")),
    (
        "test_generation.md.j2",
        include_str!("../prompts/test_generation.md.j2"),
    ),
    (
        "reproduction.md.j2",
        include_str!("../prompts/reproduction.md.j2"),
    ),
    ("review.md.j2", include_str!("../prompts/review.md.j2")),
    (
        "bug_fixing.md.j2",
        include_str!("../prompts/bug_fixing.md.j2"),
    ),
];

/// The path a generated test file is suggested at (and the oracle writes).
pub const SUGGESTED_TEST_PATH: &str = "test_generated.py";

/// Adds the per-skill templates unless `prompts` already has them (a prompt directory given
/// by the user overrides them).
pub fn add_templates(prompts: &mut Prompts) -> Result<()> {
    for (name, source) in TEMPLATES {
        if !prompts.has_template(name) {
            prompts.add_template(name, source)?;
        }
    }
    Ok(())
}

fn template(skill: Skill) -> String {
    format!("{}.md.j2", skill.name())
}

/// The `submit` tool of a skill.
pub fn submit_spec(skill: Skill) -> SubmitSpec {
    match skill {
        Skill::Localization => SubmitSpec {
            description: "Submit the source files that must change to fix the issue.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Paths relative to the repository root."
                    }
                },
                "required": ["files"]
            }),
        },
        Skill::Review => SubmitSpec {
            description: "Submit your review of the patch and your verdict.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "review": {"type": "string", "description": "A short review."},
                    "verdict": {
                        "type": "string",
                        "description": "`YES` if the patch correctly resolves the issue, `NO` otherwise; anything else counts as a wrong verdict."
                    }
                },
                "required": ["review", "verdict"]
            }),
        },
        Skill::Reproduction => SubmitSpec {
            description: "Submit the path of your reproduction script.".into(),
            parameters: path_parameters("The script, relative to the repository root."),
        },
        Skill::TestGeneration => SubmitSpec {
            description: "Submit the path of your test file.".into(),
            parameters: path_parameters("The test file, relative to the repository root."),
        },
        Skill::Editing | Skill::BugFixing => SubmitSpec::no_arguments(
            "Submit when your change is complete; the repository's changes are your answer.",
        ),
    }
}

fn path_parameters(description: &str) -> Value {
    json!({
        "type": "object",
        "properties": {"path": {"type": "string", "description": description}},
        "required": ["path"]
    })
}

fn prompt_vars(instance: &Instance) -> Value {
    let ecosystem = instance.project.ecosystem;
    match &instance.task {
        Task::Localization { issue, .. } => json!({ "issue": issue }),
        Task::Editing { instruction, .. } => json!({ "instruction": instruction }),
        Task::TestGeneration {
            target,
            grade_path,
            harness,
            ..
        } => json!({
            "target": target,
            "test_framework": match ecosystem {
                Ecosystem::Pypi => "pytest",
                Ecosystem::Crates => "Rust unit-test",
            },
            "suggested_path": if harness.is_some() { grade_path.as_str() } else { SUGGESTED_TEST_PATH },
            // Rust: the generated module's tests, as a `cargo test --lib` name filter.
            "test_filter": harness.as_ref().map(|h| {
                h.test_prefix.trim_start_matches("lib::").trim_end_matches("::").to_string()
            }),
        }),
        Task::Reproduction { issue, .. } => {
            let path = tasks::reproduction_path(ecosystem);
            let interpreter = if path.ends_with(".sh") {
                "bash"
            } else {
                "python"
            };
            json!({
                "issue": issue,
                "script_path": path,
                "script_command": format!("{interpreter} PATH"),
            })
        }
        Task::Review {
            issue,
            candidate_patch,
            ..
        } => json!({ "issue": issue, "candidate_patch": candidate_patch.trim_end() }),
        Task::BugFixing {
            problem_statement, ..
        } => json!({ "problem_statement": problem_statement }),
    }
}

/// The agent's task for `instance`; `env` is the environment of its commands (the project's
/// test environment, so `python` and `pytest` are the project's).
pub fn agent_task(
    instance: &Instance,
    prompts: &Prompts,
    env: Vec<(String, String)>,
) -> Result<AgentTask> {
    let skill = instance.skill();
    let user_prompt = prompts.render(&template(skill), &prompt_vars(instance))?;
    Ok(AgentTask {
        id: instance.instance_id.clone(),
        system_vars: Map::new(),
        user_prompt,
        submit: submit_spec(skill),
        tools: EnabledTools::default(),
        env,
    })
}
