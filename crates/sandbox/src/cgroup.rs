//! Per-episode cgroups (v1 `memory` and `pids` hierarchies) for limits that hold for a whole
//! process tree, and the counters that tell an OOM kill or a refused fork apart.
//!
//! Must never touch a cgroup it did not create.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::limits::Limits;

/// Where episode cgroups can be created on this machine.
#[derive(Clone, Debug, Default)]
pub struct CgroupSupport {
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    /// Why a controller is missing, for the isolation report.
    pub notes: Vec<String>,
}

impl CgroupSupport {
    /// Finds the v1 `memory` and `pids` hierarchies and our place in them, and checks that an
    /// `atomskill` group can be created there.
    pub fn detect() -> CgroupSupport {
        let mut support = CgroupSupport::default();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let membership = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        for controller in ["memory", "pids"] {
            match find_v1_base(&mountinfo, &membership, controller) {
                Some(base) => match fs::create_dir_all(&base) {
                    Ok(()) => {
                        remove_stale_groups(&base);
                        if controller == "memory" {
                            support.memory = Some(base);
                        } else {
                            support.pids = Some(base);
                        }
                    }
                    Err(e) => support
                        .notes
                        .push(format!("{controller} cgroup {}: {e}", base.display())),
                },
                None => support
                    .notes
                    .push(format!("no writable cgroup v1 `{controller}` hierarchy")),
            }
        }
        support
    }

    pub fn complete(&self) -> bool {
        self.memory.is_some() && self.pids.is_some()
    }
}

/// Removes the empty groups of episodes whose supervisor process is gone (killed before it could
/// clean up; its sandboxed processes died with it). Groups of live processes are left alone.
fn remove_stale_groups(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix("ep-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner {
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
}

/// `<mount point>/<our cgroup>/atomskill` for a v1 controller.
fn find_v1_base(mountinfo: &str, membership: &str, controller: &str) -> Option<PathBuf> {
    let mount_point = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        let fstype = right.next()?;
        let options = right.nth(1)?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup" && options.split(',').any(|o| o == controller))
            .then(|| mount_point.to_string())
    })?;
    let own = membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })?;
    Some(
        Path::new(&mount_point)
            .join(own.trim_start_matches('/'))
            .join("atomskill"),
    )
}

/// The cgroups of one episode.
#[derive(Debug)]
pub struct EpisodeCgroups {
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value)
        .map_err(|e| Error::io(format!("writing {value} to {}", path.display()), e))
}

impl EpisodeCgroups {
    pub fn create(support: &CgroupSupport, name: &str, limits: &Limits) -> Result<EpisodeCgroups> {
        let mut groups = EpisodeCgroups {
            memory: None,
            pids: None,
        };
        if let Some(base) = &support.memory {
            let dir = base.join(name);
            fs::create_dir(&dir)
                .map_err(|e| Error::io(format!("creating cgroup {}", dir.display()), e))?;
            groups.memory = Some(dir.clone());
            write(
                &dir.join("memory.limit_in_bytes"),
                &limits.memory_bytes.to_string(),
            )?;
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &limits.memory_bytes.to_string())?;
            }
        }
        if let Some(base) = &support.pids {
            let dir = base.join(name);
            fs::create_dir(&dir)
                .map_err(|e| Error::io(format!("creating cgroup {}", dir.display()), e))?;
            groups.pids = Some(dir.clone());
            write(&dir.join("pids.max"), &limits.max_processes.to_string())?;
        }
        Ok(groups)
    }

    /// Open `cgroup.procs` files, written to by each command's init to join the groups.
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>> {
        [&self.memory, &self.pids]
            .into_iter()
            .flatten()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))
            })
            .collect()
    }

    fn read_counter(&self, dir: &Option<PathBuf>, file: &str, key: &str) -> Option<u64> {
        let text = fs::read_to_string(dir.as_ref()?.join(file)).ok()?;
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
    }

    /// Processes of the episode killed by the OOM killer so far.
    pub fn oom_kills(&self) -> Option<u64> {
        self.read_counter(&self.memory, "memory.oom_control", "oom_kill")
    }

    /// Forks refused by the process limit so far.
    pub fn process_limit_hits(&self) -> Option<u64> {
        self.read_counter(&self.pids, "pids.events", "max")
    }

    pub fn reset_peak_memory(&self) {
        if let Some(dir) = &self.memory {
            let _ = fs::write(dir.join("memory.max_usage_in_bytes"), "0");
        }
    }

    pub fn peak_memory(&self) -> Option<u64> {
        let dir = self.memory.as_ref()?;
        fs::read_to_string(dir.join("memory.max_usage_in_bytes"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills every process still in the episode's groups (there should be none: each command's
    /// pid namespace dies with it) and removes the groups.
    pub fn remove(&self) -> Result<()> {
        for dir in [&self.memory, &self.pids].into_iter().flatten() {
            for attempt in 0..50 {
                if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill on a pid listed in our own cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if attempt == 49 => {
                        return Err(Error::io(format!("removing cgroup {}", dir.display()), e))
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_base_from_mountinfo_and_membership() {
        let mountinfo =
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                         39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n";
        let membership = "8:pids:/\n4:memory:/process_api/abc\n";
        assert_eq!(
            find_v1_base(mountinfo, membership, "memory"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/process_api/abc/atomskill"
            ))
        );
        assert_eq!(
            find_v1_base(mountinfo, membership, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/pids/atomskill"))
        );
        assert_eq!(find_v1_base(mountinfo, membership, "cpu"), None);
        assert_eq!(find_v1_base("", membership, "memory"), None);
    }
}
