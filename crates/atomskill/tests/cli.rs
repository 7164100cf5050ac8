//! The `atomskill` command as a user runs it: help on every subcommand, and `sandbox run`
//! passing output and exit status through. The sandbox runs need root, like the sandbox tests.

use std::process::Command;

fn atomskill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atomskill"))
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "sandbox",
        "corpus",
        "synth",
        "decontam",
        "eval",
        "audit",
        "model",
        "serve",
        "sft",
        "train",
        "quickstart",
        "bench",
    ] {
        let out = atomskill().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help failed");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: atomskill"),
            "{sub}"
        );
    }
}

#[test]
fn sandbox_run_passes_output_and_status_through() {
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("hello.py"), "print('hi')\n").unwrap();
    let run = |args: &[&str]| {
        atomskill()
            .arg("--home")
            .arg(home.path())
            .args(["sandbox", "run", "--repo"])
            .arg(repo.path())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--", "python3", "hello.py"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hi\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("isolation: full"));
    assert_eq!(run(&["--", "bash", "-c", "exit 7"]).status.code(), Some(7));
    let timed_out = run(&["--timeout", "0.5", "--", "sleep", "30"]);
    assert_eq!(timed_out.status.code(), Some(128 + 9));
    assert!(String::from_utf8_lossy(&timed_out.stderr).contains("WallClock"));
    let missing = run(&["--", "no-such-tool"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("could not be started"));
    let diff = run(&["--diff", "--", "bash", "-c", "echo x >> hello.py"]);
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains("+x"),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    // The repository itself is never touched.
    assert_eq!(
        std::fs::read(repo.path().join("hello.py")).unwrap(),
        b"print('hi')\n"
    );
}

/// A malformed training config is refused before anything runs, naming the file and the field.
#[test]
fn a_malformed_train_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "model = \"m\"\ntasks = \"t\"\nstepz = 3\n").unwrap();
    let out = atomskill()
        .arg("--home")
        .arg(dir.path())
        .args(["train", "--config"])
        .arg(&config)
        .args(["--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("run.toml") && stderr.contains("stepz"),
        "{stderr}"
    );
    assert!(!dir.path().join("run").exists());
}

/// kill -9 of the supervisor takes its sandboxed processes with it, and the next run removes
/// the cgroups it left behind.
#[test]
fn a_killed_supervisor_leaves_no_process_behind() {
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let marker = format!("atomskill-orphan-{}", std::process::id());
    let mut child = atomskill()
        .arg("--home")
        .arg(home.path())
        .args(["sandbox", "run", "--repo"])
        .arg(repo.path())
        .args([
            "--",
            "bash",
            "-c",
            &format!("(exec -a {marker} sleep 1000) & exec -a {marker} sleep 1000"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let alive = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alive() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandboxed processes never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let supervisor = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sandboxed processes outlived their supervisor"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The next sandbox removes the dead supervisor's cgroups (another test's sandbox may have
    // done so already: they run in parallel).
    let leftovers = || -> Vec<_> {
        std::fs::read_dir("/sys/fs/cgroup/pids/atomskill")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("ep-{supervisor}-"))
            })
            .collect()
    };
    let out = atomskill().args(["sandbox", "info"]).output().unwrap();
    assert!(out.status.success());
    assert!(leftovers().is_empty(), "stale cgroups: {:?}", leftovers());
}

/// Without root the sandbox runs rootless (user namespace first, no cgroups), says so, and
/// still confines the command. Run here by dropping to an unprivileged uid with `setpriv`.
#[test]
fn rootless_mode_isolates_and_reports_itself() {
    use std::os::unix::fs::chown;
    let uid = 60_000 + std::process::id() % 1000;
    let home = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("a.py"), "print('rootless hi')\n").unwrap();
    for dir in [home.path(), repo.path()] {
        chown(dir, Some(uid), Some(uid)).unwrap();
    }
    chown(repo.path().join("a.py"), Some(uid), Some(uid)).unwrap();
    let run = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg(env!("CARGO_BIN_EXE_atomskill"))
            .arg("--home")
            .arg(home.path())
            .args(["sandbox", "run", "--repo"])
            .arg(repo.path())
            .args(args)
            .env("HOME", home.path())
            .output()
            .expect("setpriv (util-linux) runs the command as another user")
    };
    let script = "id -u; python3 a.py; echo more >> a.py; echo x > /etc/x 2>/dev/null || echo RO; \
                  (sleep 1000 &); python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 80), timeout=1)' 2>&1 | tail -1";
    let out = run(&["--diff", "--", "bash", "-c", script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("namespaces without cgroups") && stderr.contains("rootless"),
        "{stderr}"
    );
    assert!(
        stdout.starts_with("1000\nrootless hi\nRO\n"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Network is unreachable"), "{stdout}");
    assert!(stdout.contains("+more"), "the diff is missing: {stdout}");
    assert_eq!(
        std::fs::read(repo.path().join("a.py")).unwrap(),
        b"print('rootless hi')\n"
    );
    let timed_out = run(&["--timeout", "0.5", "--", "sleep", "30"]);
    assert_eq!(
        timed_out.status.code(),
        Some(128 + 9),
        "{}",
        String::from_utf8_lossy(&timed_out.stderr)
    );
    let leftovers: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(&uid.to_string())
                })
            })
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "processes of the rootless run survived: {leftovers:?}"
    );
}

#[test]
fn factory_inputs_that_are_wrong_get_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let manifest = home.path().join("bad.toml");
    std::fs::write(&manifest, "schema_version = 1\n[[project]]\nname = 3\n").unwrap();
    let out = atomskill()
        .arg("--home")
        .arg(home.path())
        .args(["corpus", "list", "--manifest"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:3:"), "{stderr}");
    // The embedded default manifest lists its projects without touching the network.
    let out = atomskill()
        .arg("--home")
        .arg(home.path())
        .args(["corpus", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("toolz-1.2.0") && stdout.contains("not fetched"),
        "{stdout}"
    );
    for (args, needle) in [
        (
            vec!["synth", "--repo", "toolz==1.2.0", "--out", "x"],
            "pypi:NAME==VERSION",
        ),
        (
            vec!["synth", "--only", "nope", "--out", "x"],
            "no project `nope`",
        ),
        (
            vec![
                "decontam",
                "--train",
                "/nonexistent",
                "--eval",
                "/nonexistent",
                "--out",
                "x",
            ],
            "nonexistent",
        ),
    ] {
        let out = atomskill()
            .arg("--home")
            .arg(home.path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn audit_lists_its_hacks_and_refuses_unknown_ones() {
    let out = atomskill().args(["audit", "--list"]).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for hack in tasks::hacks::LIBRARY {
        assert!(
            stdout.contains(hack.name),
            "{} missing:\n{stdout}",
            hack.name
        );
    }
    let home = tempfile::tempdir().unwrap();
    let out = atomskill()
        .arg("--home")
        .arg(home.path())
        .args([
            "audit",
            "--tasks",
            "/nonexistent",
            "--out",
            "x",
            "--hacks",
            "py_nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown hack `py_nope`"), "{stderr}");
}

/// Flag values that once panicked or overflowed (`--timeout=-1` in `Duration::from_secs_f64`)
/// or that no command can use are refused by the parser: exit status 2, a message naming the
/// flag and the value, and never a panic.
#[test]
fn bad_flag_values_are_usage_errors() {
    let eval = ["eval", "--tasks", "t.jsonl", "--policy", "p", "--out", "o"];
    let sft = ["sft", "--trajectories", "t", "--model", "m", "--out", "o"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sandbox", "info", "--timeout=-1"], "negative"),
        (vec!["sandbox", "info", "--timeout=nan"], "finite"),
        (vec!["sandbox", "info", "--timeout=inf"], "finite"),
        (vec!["sandbox", "info", "--timeout=1e20"], "too long"),
        (
            vec!["sandbox", "info", "--memory=18446744073709551615"],
            "--memory",
        ),
        (
            vec![
                "sandbox",
                "run",
                "--repo",
                ".",
                "--timeout=-1",
                "--",
                "true",
            ],
            "negative",
        ),
        ([&eval[..], &["--episode-timeout=-5"]].concat(), "negative"),
        ([&eval[..], &["--test-timeout=1.5"]].concat(), "whole"),
        ([&eval[..], &["--device=gpu"]].concat(), "cuda:N"),
        ([&sft[..], &["--device=cuda:x"]].concat(), "cuda:N"),
        (vec!["serve", "--model", "m", "--dtype", "f64"], "bf16"),
        (vec!["serve", "--model", "m", "--device", "tpu"], "cuda:N"),
        (
            vec!["train", "--config", "c", "--out", "o", "--device", "metal"],
            "cuda:N",
        ),
        (
            vec!["quickstart", "--out", "o", "--device", "gpu"],
            "cuda:N",
        ),
        (
            vec!["corpus", "fetch", "--timeout=99999999999999999999"],
            "too long",
        ),
        (vec!["synth", "--out", "o", "--timeout=nan"], "finite"),
    ];
    for (args, needle) in cases {
        let out = atomskill().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
