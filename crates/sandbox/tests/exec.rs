//! Commands, limits, files and diffs of an episode, checked against what really happened on
//! disk and in the kernel. These tests need root (the namespace backend with cgroups).

mod common;

use std::time::Duration;

use common::*;
use sandbox::{
    Error, ExecRequest, ExitStatus, Isolation, LimitKind, Limits, Sandbox, SandboxConfig,
    SnapshotStore,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses_are_reported_exactly() {
    let h = harness(30, Limits::default());
    let ep = h.episode();
    let cases: [(&[&str], ExitStatus); 6] = [
        (&["true"], ExitStatus::Exited(0)),
        (&["bash", "-c", "exit 3"], ExitStatus::Exited(3)),
        (&["bash", "-c", "exit 137"], ExitStatus::Exited(137)),
        (
            &["bash", "-c", "kill -TERM $$"],
            ExitStatus::Signaled(libc::SIGTERM),
        ),
        (
            &["no-such-program-xyz"],
            ExitStatus::NotStarted {
                errno: libc::ENOENT,
            },
        ),
        (
            &["/workspace/README.md"],
            ExitStatus::NotStarted {
                errno: libc::EACCES,
            },
        ),
    ];
    for (argv, expected) in cases {
        let result = ep
            .exec(&ExecRequest::new(argv.iter().copied()))
            .await
            .unwrap();
        assert_eq!(result.status, expected, "{argv:?}: {result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_env_and_cwd_reach_the_command() {
    let h = harness(31, Limits::default());
    let ep = h.episode();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let request = ExecRequest::new(["sha256sum"]).stdin(big.clone());
    let result = ep.exec(&request).await.unwrap();
    let expected = {
        use sha2::Digest;
        sha2::Sha256::digest(&big)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(
        stdout(&result).starts_with(&expected),
        "{}",
        stdout(&result)
    );
    let mut request = ExecRequest::shell("pwd; echo $GREETING").env("GREETING", "hello");
    request.cwd = Some("pkg".into());
    assert_eq!(
        stdout(&ep.exec(&request).await.unwrap()),
        "/workspace/pkg\nhello\n"
    );
    // /tmp persists across the commands of one episode (agents write scripts there).
    sh(&ep, "echo 'print(6 * 7)' > /tmp/s.py").await;
    assert_eq!(stdout(&sh(&ep, "python3 /tmp/s.py").await), "42\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_file_size_and_disk_limits_are_enforced() {
    let limits = Limits {
        cpu_seconds: 1,
        file_size_bytes: 1 << 20,
        disk_bytes: 8 << 20,
        ..Limits::default()
    };
    let h = harness(32, limits);
    let ep = h.episode();
    let cpu = sh(&ep, "while :; do :; done").await;
    assert_eq!(cpu.killed_by, Some(LimitKind::CpuTime), "{cpu:?}");
    // The kernel enforces RLIMIT_CPU on its own tick-based accounting, which can run ahead of
    // the rusage figure on a loaded machine (794 ms was seen with two builds on two cores).
    assert!(
        cpu.cpu_time >= Duration::from_millis(500),
        "{:?}",
        cpu.cpu_time
    );
    let fsize = ep
        .exec(&ExecRequest::new([
            "dd",
            "if=/dev/zero",
            "of=big",
            "bs=1M",
            "count=2",
        ]))
        .await
        .unwrap();
    assert_eq!(fsize.killed_by, Some(LimitKind::FileSize), "{fsize:?}");
    // Many files under the size limit still run into the episode's disk quota.
    let disk = sh(&ep, "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do head -c 1000000 /dev/zero > /tmp/f$i || exit 9; done").await;
    assert_eq!(disk.status, ExitStatus::Exited(9), "{disk:?}");
    assert!(
        disk.stderr.to_text().contains("No space left"),
        "{}",
        disk.stderr.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_escaping_the_workspace_are_refused() {
    let h = harness(33, Limits::default());
    let ep = h.episode();
    for bad in ["/etc/passwd", "../x", "a/../../x", "", ".", "a\0b"] {
        assert!(
            matches!(ep.read_file(bad, 1 << 20), Err(Error::PathRefused { .. })),
            "read {bad:?}"
        );
        assert!(
            matches!(
                ep.write_file(bad, b"x", false),
                Err(Error::PathRefused { .. })
            ),
            "write {bad:?}"
        );
    }
    assert!(matches!(
        ep.read_file("missing.py", 1 << 20),
        Err(Error::WorkspaceFile { .. })
    ));
    assert!(matches!(
        ep.read_file("pkg", 1 << 20),
        Err(Error::WorkspaceFile { .. })
    ));
    assert!(
        matches!(
            ep.read_file("pkg/calc.py", 10),
            Err(Error::WorkspaceFile { .. })
        ),
        "size cap ignored"
    );
    // A file written by the host belongs to the agent, which can then edit it.
    ep.write_file(
        "new/dir/hidden_test.py",
        b"def test_x():\n    pass\n",
        false,
    )
    .unwrap();
    let r = sh(&ep, "stat -c '%U %a' new/dir/hidden_test.py new/dir; echo more >> new/dir/hidden_test.py && echo EDITED").await;
    assert_eq!(stdout(&r), "agent 644\nagent 755\nEDITED\n");
    assert_eq!(
        ep.read_file("pkg/calc.py", 1 << 20).unwrap(),
        std::fs::read(h.repo().path.join("pkg/calc.py")).unwrap()
    );
}

/// The patch from `diff` applied with `git apply` to a copy of the snapshot reproduces the
/// workspace exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_patch_applies_with_git_and_reproduces_the_workspace() {
    let h = harness(34, Limits::default());
    let snapshot = h.repo();
    let ep = h.sandbox.create_episode(&snapshot).unwrap();
    let edit = "sed -i 's/a + b/b + a/' pkg/calc.py && printf 'no newline' > nl.txt && rm -r docs && \
                mkdir -p deep/er && echo x > deep/er/f.py && chmod +x tests/test_calc.py && \
                mkdir __pycache__ && echo junk > __pycache__/m.pyc && rm README.md && mkdir README.md && echo y > README.md/inner";
    assert!(sh(&ep, edit).await.success());
    let diff = ep.diff().unwrap();
    assert_eq!(
        diff.changed_paths(),
        [
            "README.md",
            "README.md/inner",
            "deep/er/f.py",
            "docs/guide/intro.txt",
            "nl.txt",
            "pkg/calc.py",
            "tests/test_calc.py"
        ]
    );
    let patch = diff.to_patch();
    let copy = h.dir.path().join("applied");
    std::process::Command::new("cp")
        .arg("-a")
        .arg(&snapshot.path)
        .arg(&copy)
        .status()
        .unwrap();
    std::fs::write(h.dir.path().join("p.diff"), &patch).unwrap();
    let out = std::process::Command::new("git")
        .args(["apply", "--whitespace=nowarn"])
        .arg(h.dir.path().join("p.diff"))
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git apply failed: {}\n{patch}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Compare the applied copy with the workspace as the agent sees it.
    let listing = "find . -path ./__pycache__ -prune -o -type f -print | sort | xargs sha256sum; find . -type f -perm -u+x | sort";
    let inside = stdout(&sh(&ep, listing).await);
    let outside = std::process::Command::new("bash")
        .args(["-c", listing])
        .current_dir(&copy)
        .output()
        .unwrap();
    assert_eq!(inside, String::from_utf8_lossy(&outside.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pytest_runs_from_a_read_only_virtualenv() {
    let venv = std::env::var("ATOMSKILL_TEST_VENV").expect(
        "ATOMSKILL_TEST_VENV must name a virtualenv made from /usr/bin/python3 with pytest installed (scripts/test sets it up)",
    );
    let h = harness_with(35, Limits::default(), |c| {
        c.with_virtualenv(venv.clone().into())
    });
    let ep = h.episode();
    let result = sh(
        &ep,
        "python -m pytest -q -p no:cacheprovider; touch $VIRTUAL_ENV/x 2>&1",
    )
    .await;
    let out = stdout(&result);
    assert!(
        out.contains("1 passed"),
        "{out}\n{}",
        result.stderr.to_text()
    );
    assert!(
        out.contains("Read-only file system"),
        "the virtualenv is writable: {out}"
    );
    assert!(
        ep.diff().unwrap().is_empty(),
        "pytest left files in the diff: {:?}",
        ep.diff().unwrap().changed_paths()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unisolated_backend_works_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        isolation: Isolation::None,
        runtime_dir: dir.path().join("run"),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(
        config,
        Limits {
            timeout: Duration::from_secs(2),
            ..Limits::default()
        },
    )
    .unwrap();
    assert_eq!(sandbox.isolation().level, sandbox::IsolationLevel::None);
    assert!(sandbox.isolation().to_string().contains("NONE"));
    let src = dir.path().join("src");
    write_tree(&src, &[("a.txt", "one\n")]);
    let store = SnapshotStore::new(dir.path().join("snapshots"), None);
    let snapshot = store.import_dir(&src, None).unwrap();
    let ep = sandbox.create_episode(&snapshot).unwrap();
    let r = sh(&ep, "echo two >> a.txt; (sleep 30 &); echo done").await;
    assert_eq!(stdout(&r), "done\n");
    let slow = sh(&ep, "sleep 30").await;
    assert_eq!(slow.killed_by, Some(LimitKind::WallClock));
    assert_eq!(ep.diff().unwrap().changed_paths(), ["a.txt"]);
    assert_eq!(ep.read_file("a.txt", 100).unwrap(), b"one\ntwo\n");
    ep.destroy().unwrap();
}
