//! Resource limits of an episode and of each command in it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits applied to every command of an episode. The memory and process limits hold for the
/// episode's cgroup as a whole (all of its processes together); the rlimits hold per process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock limit of one command (a request may give a shorter one).
    pub timeout: Duration,
    /// CPU seconds per process (RLIMIT_CPU).
    pub cpu_seconds: u64,
    /// Memory of the episode's processes together, tmpfs pages included.
    pub memory_bytes: u64,
    /// Processes and threads alive at once in the episode.
    pub max_processes: u64,
    /// Largest file a command may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Size of the episode's tmpfs: its writable layer, /tmp and /dev/shm together.
    pub disk_bytes: u64,
    /// Bytes kept from the start and from the end of stdout and of stderr each.
    pub output_head_bytes: usize,
    pub output_tail_bytes: usize,
    /// A command that writes more than this to stdout or stderr is killed.
    pub output_kill_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(60),
            cpu_seconds: 300,
            memory_bytes: 2 << 30,
            max_processes: 256,
            file_size_bytes: 256 << 20,
            open_files: 1024,
            disk_bytes: 1 << 30,
            output_head_bytes: 32 << 10,
            output_tail_bytes: 32 << 10,
            output_kill_bytes: 64 << 20,
        }
    }
}
