//! What a command is asked to do and what became of it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::output::Captured;

/// One command to run in an episode.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The program and its arguments; a program without `/` is looked up on `PATH`.
    pub argv: Vec<String>,
    pub stdin: Vec<u8>,
    /// Shorter wall-clock limit than the episode's, if given.
    pub timeout: Option<Duration>,
    pub env: Vec<(String, String)>,
    /// Working directory relative to the workspace root.
    pub cwd: Option<String>,
}

impl ExecRequest {
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> ExecRequest {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            ..ExecRequest::default()
        }
    }

    /// A shell command line run by `bash -c`.
    pub fn shell(script: impl Into<String>) -> ExecRequest {
        ExecRequest::new(["bash".to_string(), "-c".to_string(), script.into()])
    }

    pub fn timeout(mut self, timeout: Duration) -> ExecRequest {
        self.timeout = Some(timeout);
        self
    }

    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> ExecRequest {
        self.stdin = stdin.into();
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> ExecRequest {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// How the command's own process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
    /// The command never started: the program was not found or could not be executed.
    NotStarted {
        errno: i32,
    },
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The conventional shell code: the exit code, 128 + signal, or 127 if it never started.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
            ExitStatus::NotStarted { .. } => 127,
        }
    }
}

/// A limit that ended a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    WallClock,
    Memory,
    CpuTime,
    FileSize,
    Output,
}

/// What became of a command. A failing command is a result, not an error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecResult {
    pub status: ExitStatus,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
    pub cpu_time: Duration,
    /// Peak memory of the episode's cgroup during the command, where cgroups are in use.
    pub peak_memory_bytes: Option<u64>,
    pub timed_out: bool,
    pub oom_killed: bool,
    /// The limit that killed the command, if one did.
    pub killed_by: Option<LimitKind>,
    /// Forks refused because the process limit was reached during the command.
    pub process_limit_hits: u64,
}

impl ExecResult {
    pub fn success(&self) -> bool {
        self.status.success() && self.killed_by.is_none()
    }
}
