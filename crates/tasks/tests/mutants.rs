//! The fast unit-test reward against the slow one, in the real sandbox: the same instances and
//! answers graded both ways must give the same verdicts and the same surviving mutants, and the
//! fast path must actually decide the mutants it can (not hand everything to the slow path).
//!
//! The fixture (`tests/fixtures/mutants`) has a plain function, a decorated one, an
//! `lru_cache`d one, a closure made at import time, a generator, a method, a property, a
//! staticmethod; the mutants include equivalent ones, one that shifts every later line, one
//! outside any function, one that adds a generator expression, one that loops forever and one that kills the interpreter.
//!
//! Needs root (the sandbox) and ATOMSKILL_TEST_VENV, a virtualenv with pytest (scripts/test
//! makes it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corpus::{Ecosystem, Environment, InstallMode, Prepared, ProjectSpec};
use sandbox::{Isolation, Limits, Sandbox, SandboxConfig, SnapshotStore};
use sha2::Digest as _;
use tasks::{
    Answer, BugRef, FileEdits, GradedProject, Grader, Instance, Mutant, ProjectRef, TargetFunction,
    Task,
};
use testrun::TestRunner;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mutants");
const TARGET: &str = "src/shapes/geo.py";
const GRADE_PATH: &str = "tests/test_atomskill_geo.py";
const SENTINEL: &str = tasks::sentinel::SENTINEL_ID;

/// (id, text in geo.py, its replacement). Each text occurs exactly once.
const MUTANTS: &[(&str, &str, &str)] = &[
    ("clamp_equiv", "if x < lo:", "if x <= lo:"),
    ("clamp_high", "if x > hi:", "if x < hi:"),
    (
        "clamp_shift",
        "    if x < lo:\n        return lo",
        "    x = x\n    if x < lo:\n        return lo",
    ),
    ("clamp_doc", "closed interval", "open interval"),
    (
        "crash",
        "    return x\n\n\ndef traced",
        "    return __import__('os')._exit(3)\n\n\ndef traced",
    ),
    ("area_const", "width * height * 1", "width * height * 2"),
    ("area_equiv", "width * height * 1", "width * height // 1"),
    // A generator expression appears: the function's code tree changes shape.
    (
        "area_genexpr",
        "width * height * 1",
        "sum(width for _ in range(height)) * 1",
    ),
    ("fib_base", "if n < 2:", "if n <= 2:"),
    ("adder", "return x + step", "return x - step"),
    ("digits_loop", "n //= 10", "n //= 1"),
    ("count_step", "i += 1", "i += 2"),
    ("grow_guard", "if by < 0:", "if by < -1:"),
    ("double_plus", "self.size * SCALE", "self.size + SCALE"),
    ("unit_zero", "return Box(1)", "return Box(0)"),
    ("scale_module", "SCALE = 2", "SCALE = 3"),
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn project(dir: &Path) -> Prepared {
    let venv = std::env::var_os("ATOMSKILL_TEST_VENV")
        .expect("ATOMSKILL_TEST_VENV: a virtualenv with pytest (scripts/test makes one)");
    let venv = std::path::PathBuf::from(venv).canonicalize().unwrap();
    let tree = dir.join("shapes-1.0");
    for part in ["src", "tests"] {
        copy_dir(&Path::new(FIXTURE).join(part), &tree.join(part));
    }
    let spec = ProjectSpec {
        name: "shapes".into(),
        ecosystem: Ecosystem::Pypi,
        version: "1.0".into(),
        archive: "shapes-1.0.tar.gz".into(),
        url: "file:///nonexistent".into(),
        sha256: "0".repeat(64),
        root: "shapes-1.0".into(),
        requires_python: None,
        source_dir: "src".into(),
        packages: vec!["shapes".into()],
        tests: vec!["tests".into()],
        test_deps: vec![],
        install: InstallMode::Pythonpath,
        test_command: [
            "python",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests",
        ]
        .map(String::from)
        .to_vec(),
        ignore: vec![],
        deselect: vec![],
        env: BTreeMap::new(),
        measured: None,
    };
    let environment = Environment::Python { venv };
    let mut run_env: BTreeMap<String, String> =
        [("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONHASHSEED", "0")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
    run_env.extend(environment.run_env(&spec));
    Prepared {
        spec,
        tree,
        environment,
        run_env,
        skipped_links: vec![],
    }
}

/// An instance with the mutants of `MUTANTS` whose ids are in `only` (all if empty).
fn instance(snapshot: &str, pristine: &str, only: &[&str]) -> Instance {
    let mutants = MUTANTS
        .iter()
        .filter(|(id, _, _)| only.is_empty() || only.contains(id))
        .map(|(id, from, to)| {
            assert_eq!(pristine.matches(from).count(), 1, "{id}: `{from}`");
            Mutant {
                id: id.to_string(),
                description: format!("`{from}` -> `{to}`"),
                edits: FileEdits::new().write(TARGET, pristine.replace(from, to)),
            }
        })
        .collect();
    Instance {
        schema_version: tasks::SCHEMA_VERSION,
        instance_id: "shapes-1.0.geo.test_generation".into(),
        project: ProjectRef {
            name: "shapes".into(),
            version: "1.0".into(),
            ecosystem: Ecosystem::Pypi,
            snapshot: snapshot.into(),
        },
        bug: BugRef {
            bug_id: "geo".into(),
            file: TARGET.into(),
            function: None,
            operators: vec![],
            line: 1,
            description: String::new(),
            seed: 0,
        },
        setup: FileEdits::new(),
        task: Task::TestGeneration {
            target: TargetFunction {
                file: TARGET.into(),
                qualname: "clamp".into(),
                signature: "def clamp(x, lo, hi)".into(),
                docstring: None,
                line: 7,
                import_hint: "from shapes.geo import clamp".into(),
            },
            grade_path: GRADE_PATH.into(),
            mutants,
            gold_test: String::new(),
            harness: None,
        },
        validation: None,
        extra: BTreeMap::new(),
    }
}

/// Grades `answer` (a file in `fixtures/mutants/answers`, or inline text) both ways; checks
/// that the verdicts agree and that the survivors and the mutants the fast path left to the
/// slow one are the expected ones.
async fn check(
    grader: &mut Grader,
    instance: &Instance,
    answer: &str,
    expected_reward: f64,
    expected_survivors: &[&str],
    expected_slow: &[&str],
) -> tasks::Verdict {
    let answer = Answer {
        submission: serde_json::json!({"path": "tests/test_mine.py"}),
        files: FileEdits::new().write("tests/test_mine.py", answer),
    };
    grader.fast_mutants = false;
    let slow = grader.grade(instance, &answer).await.unwrap();
    grader.fast_mutants = true;
    let fast = grader.grade(instance, &answer).await.unwrap();
    let context = format!("slow: {slow:#?}\nfast: {fast:#?}");
    assert_eq!(fast.reward, slow.reward, "{context}");
    assert_eq!(fast.reason, slow.reason, "{context}");
    assert_eq!(
        fast.details.survived_mutants, slow.details.survived_mutants,
        "{context}"
    );
    assert_eq!(fast.details.mutation_score, slow.details.mutation_score);
    assert_eq!(fast.reward, expected_reward, "{context}");
    assert_eq!(
        fast.details.survived_mutants, expected_survivors,
        "{context}"
    );
    // In any order: the sentinel's place among the mutants comes from the grader's seed.
    let mut fell_back: Vec<&str> = fast
        .details
        .slow_mutants
        .iter()
        .map(|m| m.split(':').next().unwrap())
        .collect();
    fell_back.sort_unstable();
    let mut expected_slow = expected_slow.to_vec();
    expected_slow.sort_unstable();
    assert_eq!(fell_back, expected_slow, "{context}");
    assert!(slow.details.slow_mutants.is_empty());
    assert_eq!(fast.details.sentinel, slow.details.sentinel, "{context}");
    fast
}

/// The hex of `clamp.__code__.co_code` as the test virtualenv's Python compiles it.
fn clamp_code(venv: &Path, tree: &Path) -> String {
    let output = std::process::Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys; sys.path.insert(0, 'src'); from shapes.geo import clamp; \
             print(clamp.__code__.co_code.hex())",
        ])
        .current_dir(tree)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn answer(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURE).join("answers").join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_and_slow_paths_kill_the_same_mutants() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = project(dir.path());
    let Environment::Python { venv } = &prepared.environment else {
        unreachable!()
    };
    let config = SandboxConfig {
        isolation: Isolation::Full,
        runtime_dir: dir.path().join("run"),
        sandbox_uid: 211_000,
        sandbox_gid: 211_000,
        read_only_mounts: vec![venv.clone()],
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::new(
        config,
        Limits {
            timeout: Duration::from_secs(120),
            ..Limits::default()
        },
    )
    .expect("these tests need root for the sandbox");
    let store = SnapshotStore::new(dir.path().join("snapshots"), sandbox.snapshot_owner());
    let snapshot = store.import_dir(&prepared.tree, None).unwrap();
    let pristine = std::fs::read_to_string(prepared.tree.join(TARGET)).unwrap();
    let instance = instance(&snapshot.id, &pristine, &[]);
    let killable = [
        "clamp_high",
        "crash",
        "area_const",
        "fib_base",
        "adder",
        "count_step",
        "grow_guard",
        "unit_zero",
    ];
    let killable = self::instance(&snapshot.id, &pristine, &killable);
    let clamp_code = clamp_code(venv, &prepared.tree);
    // Short enough that the mutant that loops forever costs little, long enough for pytest to
    // start on a loaded machine.
    let mut grader = Grader::new(Arc::new(sandbox), Duration::from_secs(15));
    grader.add_project(GradedProject {
        runner: TestRunner::new(prepared),
        snapshot,
    });

    // The project's own conventions: `add_one` is made at import time (so `adder` goes slow),
    // `traced` decorates at import time (so a mutant that moves its lines goes slow), the
    // docstring and the module constant are not function bodies.
    let always_slow = ["clamp_shift", "clamp_doc", "adder", "scale_module"];
    check(
        &mut grader,
        &instance,
        &answer("strong.py"),
        0.0,
        &[
            "clamp_equiv",
            "clamp_shift",
            "clamp_doc",
            "area_equiv",
            "area_genexpr",
        ],
        &always_slow,
    )
    .await;
    check(
        &mut grader,
        &instance,
        &answer("weak.py"),
        0.0,
        &[
            "clamp_equiv",
            "clamp_shift",
            "clamp_doc",
            "area_const",
            "area_equiv",
            "area_genexpr",
            "fib_base",
            "adder",
            "digits_loop",
            "count_step",
            "grow_guard",
            "double_plus",
            "unit_zero",
        ],
        &always_slow,
    )
    .await;
    // The gold file gets the top reward: the sentinel survives it.
    let verdict = check(
        &mut grader,
        &killable,
        &answer("strong.py"),
        1.0,
        &[],
        &["adder"],
    )
    .await;
    assert_eq!(verdict.details.sentinel.as_deref(), Some("survived"));
    // Tests of the implementation's text kill every mutant, and the sentinel too: nothing.
    let sha256 = sha2::Sha256::digest(pristine.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<String>();
    let hashing = format!(
        "import hashlib\nimport pathlib\n\nimport shapes.geo\n\n\ndef test_source():\n    \
         path = pathlib.Path(shapes.geo.__file__)\n    \
         assert hashlib.sha256(path.read_bytes()).hexdigest() == {sha256:?}\n"
    );
    let by_code = format!(
        "{}\n\ndef test_code():\n    assert clamp.__code__.co_code.hex() == {clamp_code:?}\n",
        answer("strong.py")
    );
    for text in [hashing, by_code] {
        let verdict = check(&mut grader, &killable, &text, 0.0, &[], &["adder"]).await;
        assert_eq!(verdict.details.sentinel.as_deref(), Some("killed"));
        assert!(verdict.reason.contains("source text"), "{verdict:?}");
    }
    // The killable mutants an answer that tests only `clamp` leaves alive.
    const ONLY_CLAMP_TESTED: [&str; 6] = [
        "area_const",
        "fib_base",
        "adder",
        "count_step",
        "grow_guard",
        "unit_zero",
    ];
    // Only a subprocess runs the function: it must see the mutant's file (the fast path writes
    // the file only when something may read it).
    check(
        &mut grader,
        &killable,
        "import subprocess\nimport sys\n\n\ndef test_in_a_subprocess():\n    \
         code = 'from shapes import clamp; print(clamp(30, 0, 10), clamp(5, 0, 10))'\n    \
         out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)\n    \
         assert out.stdout.split() == ['10', '5']\n",
        0.0,
        &ONLY_CLAMP_TESTED,
        // The module is never imported in the runner: nothing to swap, nothing goes slow.
        &[],
    )
    .await;
    // Tests that draw random numbers: every test starts from the same fixed seed, in both
    // paths, so the draws (and the verdict) are the same in every run.
    check(
        &mut grader,
        &killable,
        &answer("random_draws.py"),
        0.0,
        &ONLY_CLAMP_TESTED,
        &["adder"],
    )
    .await;
    // A skipped test and an xfail are not kills (the slow path used to count any non-pass).
    check(
        &mut grader,
        &instance,
        &answer("skips.py"),
        0.0,
        &[
            "clamp_equiv",
            "clamp_shift",
            "clamp_doc",
            "area_const",
            "area_equiv",
            "area_genexpr",
            "fib_base",
            "adder",
            "digits_loop",
            "count_step",
            "grow_guard",
            "double_plus",
            "unit_zero",
            "scale_module",
        ],
        &always_slow,
    )
    .await;
    // clamp runs while the file is collected: every mutant of it goes slow.
    check(
        &mut grader,
        &instance,
        &answer("collect_time.py"),
        0.0,
        &[
            "clamp_equiv",
            "clamp_shift",
            "clamp_doc",
            "area_const",
            "area_equiv",
            "area_genexpr",
            "fib_base",
            "adder",
            "digits_loop",
            "count_step",
            "grow_guard",
            "double_plus",
            "unit_zero",
            "scale_module",
        ],
        &[
            "clamp_equiv",
            "clamp_high",
            "clamp_shift",
            "clamp_doc",
            "crash",
            "adder",
            "scale_module",
            SENTINEL,
        ],
    )
    .await;
    // A file that fails on the original code is graded before any mutant, the same both ways.
    check(
        &mut grader,
        &instance,
        "from shapes import clamp\n\ndef test_wrong():\n    assert clamp(5, 0, 10) == 6\n",
        0.0,
        &[],
        &[],
    )
    .await;
}
