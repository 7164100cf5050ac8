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

#[test]
fn planned_subcommands_say_so() {
    let out = atomskill().args(["train"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("issue 6"));
}
