//! Shared set-up for the agent's integration tests: a real sandbox (root, full isolation) with
//! its own host uid per test, a snapshot of a small Python repository, and helpers.

#![allow(dead_code)]

use std::path::Path;

use agent::{AgentSettings, AgentTask, EnabledTools, Prompts, SubmitSpec};
use sandbox::{Episode, Isolation, Limits, Sandbox, SandboxConfig, Snapshot, SnapshotStore};
use serde_json::json;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub store: SnapshotStore,
}

/// Each test passes a distinct `slot`; its episodes run as host uid 300000 + slot (the sandbox
/// crate's own tests use 200000 + slot).
pub fn harness(slot: u32) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let uid = 300_000 + slot;
    let config = SandboxConfig {
        isolation: Isolation::Full,
        runtime_dir: dir.path().join("run"),
        sandbox_uid: uid,
        sandbox_gid: uid,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(config, Limits::default()).expect(
        "these tests need full isolation: run them as root on a machine with cgroup v1 memory and pids",
    );
    let store = SnapshotStore::new(dir.path().join("snapshots"), Some((uid, uid)));
    Harness {
        dir,
        sandbox,
        store,
    }
}

pub const CALC: &str = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n";

impl Harness {
    /// A small Python repository: a package, tests, a script, nested directories.
    pub fn repo(&self) -> Snapshot {
        let src = self.dir.path().join("src-repo");
        write_tree(
            &src,
            &[
                ("README.md", "# demo\n"),
                ("pkg/__init__.py", ""),
                ("pkg/calc.py", CALC),
                ("pkg/deep/nested/leaf.py", "x = 1\n"),
                (
                    "tests/test_calc.py",
                    "from pkg.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
                ),
                ("run.sh", "#!/bin/sh\necho run\n"),
                (".hidden/secret.txt", "hidden\n"),
            ],
        );
        let mut perms = std::fs::metadata(src.join("run.sh")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(src.join("run.sh"), perms).unwrap();
        std::fs::write(src.join("data.bin"), [0u8, 1, 0xff, 0xfe, b'x']).unwrap();
        self.store.import_dir(&src, Some("demo")).expect("import")
    }

    pub fn episode(&self) -> Episode {
        self.sandbox
            .create_episode(&self.repo())
            .expect("create episode")
    }
}

pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(&full, contents).expect("write");
    }
}

pub fn settings() -> AgentSettings {
    AgentSettings::new(Prompts::embedded().expect("embedded prompts"))
}

/// A task whose `submit` takes a list of files.
pub fn task() -> AgentTask {
    AgentTask {
        id: "demo-1".into(),
        system_vars: serde_json::Map::new(),
        user_prompt: "Fix `sub` in pkg/calc.py, then submit the files you changed.".into(),
        submit: SubmitSpec {
            description: "Submit the files you changed.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string"}}},
                "required": ["files"],
            }),
        },
        tools: EnabledTools::default(),
        env: Vec::new(),
    }
}
