//! The escape checklist: every way an untrusted command might reach the host, outlive its
//! command, exhaust the machine or tamper with what the grader reads, each tried for real and
//! contained. These tests need root (the namespace backend with cgroups).

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandbox::{Entry, Error, LimitKind, Limits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_the_workspace_never_reach_the_host() {
    let h = harness(1, Limits::default());
    let ep = h.episode();
    let marker = format!("atomskill-escape-{}", std::process::id());
    let script = format!(
        "for p in /etc/{m} /usr/{m} /{m} /workspace/../{m} /proc/{m} /dev/{m}; do echo x > $p 2>/dev/null && echo WROTE $p; done; \
         echo inside > /tmp/{m} && echo TMP_OK; echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo SYSCTL",
        m = marker
    );
    let result = sh(&ep, &script).await;
    let out = stdout(&result);
    assert!(
        !out.contains("WROTE"),
        "a write outside the workspace succeeded: {out}"
    );
    assert!(!out.contains("SYSCTL"), "a sysctl write succeeded: {out}");
    assert!(
        out.contains("TMP_OK"),
        "the private /tmp must be writable: {out}"
    );
    for host in ["/etc", "/usr", "/", "/tmp", "/proc", "/dev"] {
        let path = std::path::Path::new(host).join(&marker);
        assert!(!path.exists(), "{} appeared on the host", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_secrets_and_environment_are_invisible() {
    let h = harness(2, Limits::default());
    // A secret in the supervisor's own environment and a secret file at a host path.
    std::env::set_var("ATOMSKILL_TEST_SECRET", "hunter2");
    let secret_file = h.dir.path().join("secret.txt");
    std::fs::write(&secret_file, "hunter2-file").unwrap();
    let ep = h.episode();
    let script = format!(
        "env; cat {} /etc/shadow /root/.bashrc /proc/1/environ /proc/1/cmdline 2>&1; ls -d /root /home /sys /run 2>&1; \
         cat /proc/self/status | grep -E '^(Cap(Eff|Prm|Bnd)|NoNewPrivs)'",
        secret_file.display()
    );
    let out = stdout(&sh(&ep, &script).await);
    assert!(!out.contains("hunter2"), "a host secret leaked: {out}");
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    for name in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "USER",
                "LANG",
                "LC_ALL",
                "TERM",
                "PAGER",
                "GIT_PAGER",
                "PYTHONDONTWRITEBYTECODE",
                "PYTHONUNBUFFERED",
                "PWD",
                "SHLVL",
                "_"
            ]
            .contains(name),
            "unexpected variable {name} in the sandbox environment"
        );
    }
    for absent in ["/root", "/home", "/sys", "/run", "/etc/shadow"] {
        assert!(
            out.contains(&format!("{absent}: No such file or directory"))
                || out.contains(&format!("'{absent}': No such file or directory")),
            "{absent} is visible: {out}"
        );
    }
    assert!(
        out.contains("CapEff:\t0000000000000000"),
        "capabilities left: {out}"
    );
    assert!(
        out.contains("CapBnd:\t0000000000000000"),
        "bounding set left: {out}"
    );
    assert!(out.contains("NoNewPrivs:\t1"), "no_new_privs unset: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_loopback_only() {
    let h = harness(3, Limits::default());
    // A listener on the host's loopback must not be reachable from the sandbox's.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ep = h.episode();
    let script = format!(
        r#"python3 - <<'EOF'
import socket, threading
def attempt(addr):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(addr); return "CONNECTED"
    except OSError as e:
        return type(e).__name__ + str(e.errno)
print("external", attempt(("1.1.1.1", 80)))
print("host-loopback", attempt(("127.0.0.1", {port})))
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
threading.Thread(target=lambda: srv.accept()[0].sendall(b"pong"), daemon=True).start()
c = socket.create_connection(srv.getsockname(), timeout=2)
print("inner-loopback", c.recv(4).decode())
EOF"#
    );
    let out = stdout(&sh(&ep, &script).await);
    assert!(
        out.contains("external OSError101"),
        "external network reachable or odd error: {out}"
    );
    assert!(
        out.contains("host-loopback ConnectionRefusedError111"),
        "host loopback reachable: {out}"
    );
    assert!(
        out.contains("inner-loopback pong"),
        "the sandbox's own loopback must work: {out}"
    );
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_contained_and_cleaned_up() {
    let limits = Limits {
        max_processes: 64,
        timeout: Duration::from_secs(4),
        ..Limits::default()
    };
    let h = harness(4, limits);
    let ep = h.episode();
    let result = sh(&ep, "bomb() { bomb | bomb & }; bomb; sleep 10").await;
    assert!(
        result.process_limit_hits > 0,
        "the process limit was never hit: {result:?}"
    );
    assert!(
        h.host_processes().is_empty(),
        "leftover processes: {:?}",
        h.host_processes()
    );
    // The episode is still usable afterwards.
    assert_eq!(stdout(&sh(&ep, "echo alive").await), "alive\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_oom_killed() {
    let limits = Limits {
        memory_bytes: 128 << 20,
        ..Limits::default()
    };
    let h = harness(5, limits);
    let ep = h.episode();
    let result = sh(&ep, "python3 -c 'x = bytearray(1 << 30); print(len(x))'").await;
    assert!(result.oom_killed, "not OOM-killed: {result:?}");
    assert_eq!(result.killed_by, Some(LimitKind::Memory));
    assert!(!stdout(&result).contains("1073741824"));
    assert_eq!(stdout(&sh(&ep, "echo alive").await), "alive\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_flood_is_bounded() {
    let limits = Limits {
        output_kill_bytes: 4 << 20,
        output_head_bytes: 1000,
        output_tail_bytes: 500,
        ..Limits::default()
    };
    let h = harness(6, limits);
    let ep = h.episode();
    let started = Instant::now();
    let result = sh(&ep, "yes; echo never").await;
    assert_eq!(result.killed_by, Some(LimitKind::Output), "{result:?}");
    assert!(result.stdout.total_bytes > 4 << 20);
    assert_eq!(result.stdout.head.len(), 1000);
    assert_eq!(result.stdout.tail.len(), 500);
    assert!(result.stdout.head.starts_with(b"y\ny\n"));
    assert!(started.elapsed() < Duration::from_secs(30));
    // Binary output is captured byte for byte.
    let binary = sh(
        &ep,
        "head -c 300 /dev/urandom > /tmp/b; cat /tmp/b; cat /tmp/b >&2",
    )
    .await;
    assert_eq!(binary.stdout.head.len(), 300);
    assert_eq!(binary.stdout.head, binary.stderr.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_forever_hits_the_timeout() {
    let h = harness(7, Limits::default());
    let ep = h.episode();
    let result = sh_timeout(&ep, "echo before; sleep infinity", Duration::from_secs(1)).await;
    assert!(result.timed_out);
    assert_eq!(result.killed_by, Some(LimitKind::WallClock));
    assert!(
        result.duration >= Duration::from_secs(1) && result.duration < Duration::from_secs(5),
        "{:?}",
        result.duration
    );
    assert_eq!(stdout(&result), "before\n");
    assert!(
        h.host_processes().is_empty(),
        "leftover processes: {:?}",
        h.host_processes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_daemons_die_with_their_command() {
    let h = harness(8, Limits::default());
    let ep = h.episode();
    let started = Instant::now();
    let script = "(while true; do date +%s%N > /workspace/heartbeat; sleep 0.05; done) & \
                  setsid sleep 1000 & nohup sleep 1000 >/dev/null 2>&1 & (sleep 1000 &) ; \
                  python3 -c 'import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        import time; time.sleep(1000)' ; \
                  sleep 0.2; echo started";
    let result = sh(&ep, script).await;
    assert_eq!(stdout(&result), "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the command waited for its daemons"
    );
    assert!(
        h.host_processes().is_empty(),
        "leftover processes: {:?}",
        h.host_processes()
    );
    let first = ep.read_file("heartbeat", 1 << 10).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ep.read_file("heartbeat", 1 << 10).unwrap(),
        first,
        "the heartbeat daemon is still running"
    );
    // The next command sees only itself: bash execs python, which is pid 2 (the init is hidden).
    let ps = stdout(&sh(&ep, "python3 -c \"import os; print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\"").await);
    assert_eq!(
        ps.trim(),
        "['2']",
        "processes of earlier commands are visible: {ps}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_are_never_followed_by_the_host() {
    let h = harness(9, Limits::default());
    let ep = h.episode();
    sh(&ep, "ln -s / escape; ln -s /etc/passwd pw; mkdir d; ln -s /etc d/etc; ln -sf /etc/hostname pkg/calc.py").await;
    let diff = ep.diff().unwrap();
    let find = |p: &str| {
        diff.changes
            .iter()
            .find(|c| c.path == p)
            .unwrap_or_else(|| panic!("{p} not in diff: {:?}", diff.changed_paths()))
    };
    assert_eq!(
        find("escape").new,
        Some(Entry::Symlink {
            target: b"/".to_vec()
        })
    );
    assert_eq!(
        find("pw").new,
        Some(Entry::Symlink {
            target: b"/etc/passwd".to_vec()
        })
    );
    assert_eq!(
        find("d/etc").new,
        Some(Entry::Symlink {
            target: b"/etc".to_vec()
        })
    );
    assert!(matches!(find("pkg/calc.py").old, Some(Entry::File { .. })));
    let patch = diff.to_patch();
    assert!(patch.contains("new file mode 120000"));
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let first_line = host_passwd.lines().next().unwrap();
    assert!(!patch.contains(first_line), "host file content in the diff");
    for path in ["pw", "escape/etc/passwd", "d/etc/hostname", "pkg/calc.py"] {
        match ep.read_file(path, 1 << 20) {
            Err(Error::WorkspaceFile { reason, .. }) => {
                assert!(reason.contains("symbolic link"), "{path}: {reason}")
            }
            other => panic!("{path} was read through a symlink: {other:?}"),
        }
    }
    let marker = format!("atomskill-symlink-{}", std::process::id());
    assert!(ep
        .write_file(&format!("escape/tmp/{marker}"), b"x", false)
        .is_err());
    assert!(ep
        .write_file(&format!("d/etc/{marker}"), b"x", false)
        .is_err());
    assert!(!std::path::Path::new("/tmp").join(&marker).exists());
    assert!(!std::path::Path::new("/etc").join(&marker).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pristine_snapshot_is_never_modified() {
    let h = harness(10, Limits::default());
    let snapshot = h.repo();
    let before = tree_hash(&snapshot.path);
    let ep = h.sandbox.create_episode(&snapshot).unwrap();
    let result = sh(
        &ep,
        "echo changed >> pkg/calc.py && rm README.md && rm -r docs && chmod 777 tests/test_calc.py && \
         mv pkg/__init__.py pkg/init2.py && echo new > new.txt && truncate -s 0 tests/test_calc.py && \
         find / -xdev -name calc.py 2>/dev/null | grep -v '^/workspace' || true",
    )
    .await;
    assert!(result.success(), "{result:?}");
    assert_eq!(
        stdout(&result),
        "",
        "the snapshot is reachable at another path"
    );
    assert_eq!(
        tree_hash(&snapshot.path),
        before,
        "the pristine snapshot changed"
    );
    let diff = ep.diff().unwrap();
    assert_eq!(
        diff.changed_paths(),
        [
            "README.md",
            "docs/guide/intro.txt",
            "new.txt",
            "pkg/__init__.py",
            "pkg/calc.py",
            "pkg/init2.py",
            "tests/test_calc.py"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_history_is_not_visible() {
    let h = harness(11, Limits::default());
    let src = h.dir.path().join("git-repo");
    write_tree(&src, &[("a.py", "x = 1\n"), ("sub/b.py", "y = 2\n")]);
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(&src)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "secret history: the fix is in a.py"]);
    let snapshot = h.store.import_dir(&src, Some("with-git")).unwrap();
    let ep = h.sandbox.create_episode(&snapshot).unwrap();
    let out = stdout(&sh(&ep, "ls -a; git log 2>&1 | head -3; find /workspace /tmp /etc -name '.git' 2>/dev/null; grep -r 'secret history' /workspace /tmp 2>/dev/null | head -1").await);
    assert!(!out.contains(".git\n"), "{out}");
    assert!(!out.contains("secret history"), "{out}");
    assert!(out.contains("not a git repository"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_episodes_run_in_parallel_without_interfering() {
    let h = std::sync::Arc::new(harness(12, Limits::default()));
    let snapshot = h.repo();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let h = h.clone();
        let snapshot = snapshot.clone();
        tasks.push(tokio::spawn(async move {
            let ep = h.sandbox.create_episode(&snapshot).unwrap();
            let token = format!("token-{i}");
            let r = sh(&ep, &format!("echo {token} > mine.txt; echo {token} >> pkg/calc.py; sleep 0.$((RANDOM % 5)); cat mine.txt; ls")).await;
            assert!(r.success(), "{r:?}");
            assert!(stdout(&r).starts_with(&format!("{token}\n")), "{}", stdout(&r));
            let listing = stdout(&r);
            assert_eq!(listing.matches("mine.txt").count(), 1);
            // Half of the episodes are destroyed while the others are still running commands.
            if i % 2 == 0 {
                ep.destroy().unwrap();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let again = sh(&ep, "cat mine.txt; tail -1 pkg/calc.py").await;
            assert_eq!(stdout(&again), format!("{token}\n{token}\n"));
            let diff = ep.diff().unwrap();
            assert_eq!(diff.changed_paths(), ["mine.txt", "pkg/calc.py"]);
            Some(ep)
        }));
    }
    let mut survivors = Vec::new();
    for task in tasks {
        if let Some(ep) = task.await.unwrap() {
            survivors.push(ep);
        }
    }
    assert_eq!(survivors.len(), 16);
    for ep in survivors {
        ep.destroy().unwrap();
    }
    assert!(h.host_processes().is_empty());
}
