//! The isolated pytest start (`py/atomskill_run.py`) against a workspace that plants a runner
//! and a standard-library package: started the usual way (`python -m pytest`, the project on
//! `PYTHONPATH`) the plants take over; through the start, pytest and the standard library come
//! from the environment, the project's own modules still import, and the processes the tests
//! start get `PYTHONPATH` back.
//!
//! Needs ATOMSKILL_TEST_VENV (a virtualenv with pytest; scripts/test makes it). Runs on the host.

use std::path::Path;
use std::process::Command;

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn planted_runner_and_stdlib_modules_are_inert() {
    let venv = std::env::var_os("ATOMSKILL_TEST_VENV")
        .expect("ATOMSKILL_TEST_VENV: a virtualenv with pytest (scripts/test makes one)");
    let python = Path::new(&venv).join("bin/python");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "src/proj/__init__.py", "VALUE = 3\n");
    write(root, "pytest.py", "raise SystemExit(42)\n");
    write(root, "src/pytest.py", "raise SystemExit(42)\n");
    write(root, "src/xml/__init__.py", "raise SystemExit(43)\n");
    write(
        root,
        "tests/test_a.py",
        "import os, subprocess, sys\n\nfrom proj import VALUE\n\n\ndef test_value():\n    assert VALUE == 3\n\n\ndef test_children_get_the_path():\n    out = subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"PYTHONPATH\"])'], capture_output=True, text=True).stdout.strip()\n    assert out.endswith('/src'), out\n",
    );
    let start = root.join("start.py");
    std::fs::write(&start, include_str!("../py/atomskill_run.py")).unwrap();
    let src = root.join("src").display().to_string();
    let junit = root.join("junit.xml");
    let args = [
        "-p".to_string(),
        "no:cacheprovider".into(),
        "-q".into(),
        format!("--junitxml={}", junit.display()),
        "tests/test_a.py".into(),
    ];

    // The usual start: the planted pytest runs instead.
    let plain = Command::new(&python)
        .args(["-m", "pytest"])
        .args(&args)
        .current_dir(root)
        .env("PYTHONPATH", &src)
        .status()
        .unwrap();
    assert_eq!(plain.code(), Some(42));

    let isolated = Command::new(&python)
        .arg("-P")
        .arg(&start)
        .args(&args)
        .current_dir(root)
        .env_remove("PYTHONPATH")
        .env("ATOMSKILL_PYTHONPATH", &src)
        .output()
        .unwrap();
    assert_eq!(
        isolated.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&isolated.stdout),
        String::from_utf8_lossy(&isolated.stderr)
    );
    let report = std::fs::read_to_string(&junit).unwrap();
    assert!(report.contains("tests=\"2\""), "{report}");
    assert!(!report.contains("<failure"), "{report}");
}
