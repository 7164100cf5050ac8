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

    /// See [`favor_dynamic_modifications`]; records the outcome in `notes`.
    pub fn tune_attach(&mut self, enable: bool) {
        match favor_dynamic_modifications(enable) {
            Ok(Some(note)) => self.notes.push(note),
            Ok(None) => {}
            Err(note) => self.notes.push(note),
        }
    }

    pub fn complete(&self) -> bool {
        self.memory.is_some() && self.pids.is_some()
    }
}

/// Makes joining a cgroup cheap. Each command's init joins the episode's groups; the kernel
/// guards that with a global per-cpu rwsem whose writer waits a full RCU grace period (about 9 ms
/// here) unless the `favordynmods` option is in effect, which keeps the rwsem in its slow mode
/// for good (slightly dearer forks and exits host-wide, no grace period per join). The option
/// is global, so remounting any cgroup2 hierarchy with it is enough, also for v1 hierarchies.
///
/// Returns `Ok(Some(note))` when this call turned it on, `Ok(None)` when it already was, and
/// `Err(note)` when it is off and stays off.
pub fn favor_dynamic_modifications(enable: bool) -> Result<Option<String>, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroup2 = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        (right.next()? == "cgroup2").then_some(())?;
        let super_options = right.nth(1)?.to_string();
        let mut left = left.split_whitespace();
        let mount_point = left.nth(4)?.to_string();
        let mount_options = left.next()?.to_string();
        Some((mount_point, mount_options, super_options))
    });
    let Some((mount_point, mount_options, super_options)) = cgroup2 else {
        return Err("no cgroup2 mount to set favordynmods on: each command pays an RCU grace period (~10 ms) to join its cgroups".into());
    };
    if super_options.split(',').any(|o| o == "favordynmods") {
        return Ok(None);
    }
    if !enable {
        return Err("cgroup favordynmods is off (disabled in the configuration): each command pays an RCU grace period to join its cgroups".into());
    }
    // A remount replaces the per-mount flags, so pass the current ones again.
    let mut flags = libc::MS_REMOUNT;
    for option in mount_options.split(',') {
        flags |= match option {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "relatime" => libc::MS_RELATIME,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            _ => 0,
        };
    }
    let target = std::ffi::CString::new(mount_point.clone())
        .map_err(|_| "odd cgroup2 mount point".to_string())?;
    // SAFETY: valid C strings; a remount of an existing cgroup2 mount.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            c"favordynmods".as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(format!(
            "could not set favordynmods on {mount_point} ({}): each command pays an RCU grace period to join its cgroups",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Some(format!("set cgroup favordynmods on {mount_point} (host-wide) so commands join their cgroups without an RCU grace period")))
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
    fn only_groups_of_dead_supervisors_are_removed() {
        let base = tempfile::tempdir().unwrap();
        // pid 0 never names a live process in /proc; our own pid always does.
        let own = std::process::id();
        for name in [
            "ep-0-1-2",
            &format!("ep-{own}-7-0"),
            "unrelated",
            "ep-notapid-1",
        ] {
            fs::create_dir(base.path().join(name)).unwrap();
        }
        remove_stale_groups(base.path());
        let mut left: Vec<String> = fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("ep-{own}-7-0"),
                "ep-notapid-1".to_string(),
                "unrelated".to_string()
            ]
        );
    }

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
