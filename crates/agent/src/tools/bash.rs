//! The `bash` tool: one command line in a fresh `bash -c` in the episode, stderr merged into
//! stdout, a per-command wall-clock limit, and output shortened to head + tail.

use sandbox::{ExecRequest, Workspace};
use serde::Serialize;

use super::output::shorten;
use trajectory::ExecSummary;

use super::{Observation, ToolSettings};
use crate::error::Result;
use crate::prompts::{Prompts, BASH_OBSERVATION_TEMPLATE};

#[derive(Serialize)]
struct ObservationVars<'a> {
    returncode: i32,
    output: &'a str,
    timed_out: bool,
    killed_by: Option<String>,
    timeout_seconds: String,
}

/// Runs `command`. `Err` only if the sandbox itself failed (or the template broke); a failing,
/// killed or timed-out command is an observation.
pub async fn run(
    episode: &dyn Workspace,
    settings: &ToolSettings,
    prompts: &Prompts,
    env: &[(String, String)],
    command: &str,
) -> Result<Observation> {
    if command.trim().is_empty() {
        return Ok(Observation::error("The command is empty; nothing was run."));
    }
    // `exec 2>&1` on the command's own first line keeps the order of stdout and stderr and
    // the line numbers of bash's messages.
    let mut request =
        ExecRequest::shell(format!("exec 2>&1; {command}")).timeout(settings.command_timeout);
    request.env = env.to_vec();
    let result = episode.exec(&request).await?;
    let shown = shorten(
        &[&result.stdout, &result.stderr],
        settings.output_head_bytes,
        settings.output_tail_bytes,
    );
    let mut output = shown.text;
    if !output.is_empty() && !output.ends_with('\n') {
        output.push('\n');
    }
    let killed_by = result.killed_by.map(|limit| {
        serde_json::to_value(limit)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{limit:?}"))
    });
    let text = prompts.render(
        BASH_OBSERVATION_TEMPLATE,
        &ObservationVars {
            returncode: result.status.code(),
            output: &output,
            timed_out: result.timed_out,
            killed_by: killed_by.clone(),
            timeout_seconds: seconds(settings.command_timeout),
        },
    )?;
    Ok(Observation {
        text,
        is_error: false,
        exec: Some(ExecSummary {
            exit_code: result.status.code(),
            seconds: result.duration.as_secs_f64(),
            cpu_seconds: result.cpu_time.as_secs_f64(),
            killed_by,
            output_bytes: shown.total_bytes,
            elided_bytes: shown.elided_bytes,
        }),
    })
}

/// `1` for one second, `1.5` for one and a half.
pub(crate) fn seconds(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds.fract() == 0.0 {
        format!("{seconds:.0}")
    } else {
        format!("{seconds}")
    }
}
