//! The shell and Docker text of an exported record: the script that rebuilds the starting tree
//! from the project's source archive, the image recipe that runs it, and the `eval_script` the
//! SWE-bench harness runs in that image.
//!
//! Everything here is text; nothing runs. The harness's own conventions are kept to the letter:
//! the eval script starts with `#!/bin/bash` and `set -uxo pipefail` (which the harness strips
//! and adds back), brackets the test output with `: '>>>>> Start Test Output'` and
//! `: '>>>>> End Test Output'` (printed by `set -x`, so each appears once), and prints the test
//! command's exit status as `>>>>> Test Exit Code: N` after the end marker.

use std::collections::BTreeMap;

use corpus::ProjectSpec;

/// Where the harness expects the repository inside the image.
pub const TESTBED: &str = "/testbed";

/// Where the image keeps atomskill's files (the virtualenv, the seed plugin, the build script,
/// the source archive).
pub const OPT: &str = "/opt/atomskill";

/// The harness's markers (`swebench.harness.constants`).
pub const START_TEST_OUTPUT: &str = ">>>>> Start Test Output";
pub const END_TEST_OUTPUT: &str = ">>>>> End Test Output";
pub const TEST_EXIT_CODE: &str = ">>>>> Test Exit Code";
/// The shell variable the harness's `make_test_spec` stores the test command's status in.
pub const TEST_EXIT_CODE_VAR: &str = "SWEBENCH_TEST_EXIT_CODE";

/// Fixed identity and date of the base commit, so that the same tree always gives the same id.
const COMMIT_ENV: &str = "GIT_AUTHOR_NAME=atomskill GIT_AUTHOR_EMAIL=atomskill@localhost \
GIT_AUTHOR_DATE='2000-01-01T00:00:00+0000' GIT_COMMITTER_NAME=atomskill \
GIT_COMMITTER_EMAIL=atomskill@localhost GIT_COMMITTER_DATE='2000-01-01T00:00:00+0000'";

/// Heredoc delimiters; [`delimiters_clash`] checks that no embedded text contains one as a line.
const SETUP_EOF: &str = "EOF_ATOMSKILL_SETUP_PATCH";
const UNPACK_EOF: &str = "EOF_ATOMSKILL_UNPACK";
const TEST_PATCH_EOF: &str = "EOF_ATOMSKILL_TEST_PATCH";
const FILE_EOF: &str = "EOF_ATOMSKILL_FILE";

/// Unpacks the `root` directory of a source archive the way atomskill's corpus cache does:
/// regular files only (links are skipped), executable bits kept as 0755/0644, nothing outside
/// the destination, no version-control directories (snapshots never hold them).
const UNPACK_PY: &str = r#"import os, sys, tarfile
archive, dest, root = sys.argv[1:]
root_parts = [p for p in root.split("/") if p not in ("", ".")]
with tarfile.open(archive, "r:*") as tar:
    for member in tar:
        if member.name.startswith("/"):
            sys.exit(f"{archive}: member {member.name} leaves the destination")
        parts = [p for p in member.name.split("/") if p not in ("", ".")]
        if ".." in parts:
            sys.exit(f"{archive}: member {member.name} leaves the destination")
        if parts[: len(root_parts)] != root_parts or len(parts) == len(root_parts):
            continue
        rel = parts[len(root_parts):]
        if any(p in (".git", ".hg", ".svn") for p in rel):
            continue
        target = os.path.join(dest, *rel)
        if member.isdir():
            os.makedirs(target, exist_ok=True)
        elif member.isfile():
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with tar.extractfile(member) as source, open(target, "wb") as out:
                out.write(source.read())
            os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
"#;

/// `text` as the body of a heredoc ended by `delimiter` (a final newline added if missing).
fn heredoc_body(text: &str, delimiter: &str) -> String {
    let newline = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!("{text}{newline}{delimiter}\n")
}

/// Single-quotes `text` for bash.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Whether a heredoc delimiter appears as a line of `text` (it would end the heredoc early).
pub fn delimiters_clash(text: &str) -> bool {
    text.lines()
        .any(|line| [SETUP_EOF, UNPACK_EOF, TEST_PATCH_EOF, FILE_EOF].contains(&line))
}

/// The source archive a consumer downloads: the pristine tree is its `root` directory.
pub struct ArchiveRef<'a> {
    pub url: &'a str,
    pub sha256: &'a str,
    pub root: &'a str,
}

/// `bash build_base.sh DEST [ARCHIVE]`: unpacks the archive (downloaded from its URL first
/// when ARCHIVE does not exist; its sha256 is checked either way) into DEST, applies the
/// setup patch (the bug, the hidden tests deleted), commits every file with a fixed identity
/// and date and prints the commit id, which is the record's `base_commit`.
pub fn build_base_script(instance_id: &str, archive: &ArchiveRef, setup_patch: &str) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!(
        "# The starting tree of {instance_id}: the project's source archive with the instance's\n\
         # setup applied (the bug written in, the hidden tests deleted), committed as base_commit.\n"
    ));
    s.push_str("set -euo pipefail\n");
    s.push_str("dest=$1\n");
    s.push_str(&format!("archive=${{2:-{OPT}/source.tar.gz}}\n"));
    s.push_str(&format!(
        "[ -f \"$archive\" ] || curl -fsSL -o \"$archive\" {}\n",
        shell_quote(archive.url)
    ));
    s.push_str(&format!(
        "echo {}\"  $archive\" | sha256sum --check --quiet -\n",
        shell_quote(archive.sha256)
    ));
    s.push_str("mkdir -p \"$dest\"\n");
    s.push_str(&format!(
        "python3 - \"$archive\" \"$dest\" {} <<'{UNPACK_EOF}'\n{}",
        shell_quote(archive.root),
        heredoc_body(UNPACK_PY, UNPACK_EOF)
    ));
    s.push_str("cd \"$dest\"\n");
    s.push_str("git -c init.defaultBranch=main init -q\n");
    // Modes and line endings as committed do not depend on the machine that builds the tree.
    s.push_str("git config core.fileMode false\ngit config core.autocrlf false\n");
    if !setup_patch.is_empty() {
        s.push_str(&format!(
            "git apply --whitespace=nowarn - <<'{SETUP_EOF}'\n{}",
            heredoc_body(setup_patch, SETUP_EOF)
        ));
    }
    s.push_str("git add -A --force\n");
    s.push_str(&format!(
        "{COMMIT_ENV} git -c commit.gpgsign=false commit -q --no-verify -m {}\n",
        shell_quote(&format!("{instance_id}: starting state"))
    ));
    s.push_str("git rev-parse HEAD\n");
    s
}

/// The `case` patterns of the paths an answer may not change for grading (test files, test
/// configuration, start-up hooks), as `tasks::verify::is_protected_path` decides for a Python
/// project: a bash function `protected PATH`.
fn protected_function(spec: &ProjectSpec) -> String {
    let mut dirs: Vec<String> = vec![".atomskill*".into()];
    for dir in &spec.tests {
        let dir = dir.trim_start_matches("./").trim_end_matches('/');
        dirs.push(shell_quote(dir));
        dirs.push(format!("{}/*", shell_quote(dir)));
    }
    let files = [
        "conftest.py",
        "test_*.py",
        "*_test.py",
        "pytest.ini",
        "tox.ini",
        "setup.cfg",
        "pyproject.toml",
        "setup.py",
        "sitecustomize.py",
        "usercustomize.py",
        "noxfile.py",
        "*.pth",
    ];
    format!(
        "protected() {{\n  case \"${{1#./}}\" in {}) return 0 ;; esac\n  \
         case \"${{1##*/}}\" in {}) return 0 ;; esac\n  return 1\n}}\n",
        dirs.join("|"),
        files.join("|")
    )
}

/// What the eval script needs besides the record's patches.
pub struct EvalInputs<'a> {
    pub spec: &'a ProjectSpec,
    pub base_commit: &'a str,
    pub test_patch: &'a str,
    /// Files `test_patch` adds (removed again after the run).
    pub test_files: Vec<String>,
    /// FAIL_TO_PASS then PASS_TO_PASS.
    pub test_ids: Vec<String>,
}

/// The record's `eval_script` (Python projects): in the testbed (`$SWEBENCH_TESTBED`, by
/// default `/testbed`), with the answer already applied, it puts back what atomskill's grader
/// ignores in an answer (test files, test configuration, start-up hooks), adds the hidden
/// tests, runs exactly the FAIL_TO_PASS and PASS_TO_PASS ids with pytest (`-rA`, so every
/// outcome is a `STATUS id` line for the harness's `parse_log_pytest`), and records the exit
/// status.
///
/// The status is kept in `SWEBENCH_TEST_EXIT_CODE` and raised again with `(exit ...)` before
/// the end marker: the harness's `make_test_spec` inserts its own `SWEBENCH_TEST_EXIT_CODE=$?`
/// right before that marker, which then reads the same status, and prints its own exit-code
/// line; run as it is, the script prints the line itself.
pub fn eval_script(inputs: &EvalInputs) -> String {
    let spec = inputs.spec;
    let base = inputs.base_commit;
    let mut pytest = testrun::runner::without_pytest_positionals(&spec.test_command);
    pytest.extend(spec.ignore.iter().map(|i| format!("--ignore={}", i.id)));
    pytest.extend(spec.deselect.iter().map(|d| format!("--deselect={}", d.id)));
    pytest.push("-rA".into());
    pytest.extend(testrun::runner::SEED_PLUGIN_ARGS.map(String::from));
    pytest.extend(inputs.test_ids.iter().cloned());
    let command: Vec<String> = pytest.iter().map(|a| shell_quote(a)).collect();

    let mut s = String::new();
    s.push_str("#!/bin/bash\nset -uxo pipefail\n");
    s.push_str(&format!("cd \"${{SWEBENCH_TESTBED:-{TESTBED}}}\"\n"));
    s.push_str(
        "# atomskill grades an answer without its changes to test files, test configuration and\n\
         # interpreter start-up hooks: those paths go back to base_commit.\n",
    );
    s.push_str(&protected_function(spec));
    s.push_str(&format!(
        "while IFS= read -r path; do\n  \
         if protected \"$path\"; then git checkout -q {base} -- \"$path\" 2>/dev/null || rm -rf -- \"$path\"; fi\n\
         done < <(git -c core.quotePath=false diff --name-only --no-renames {base}; \
         git -c core.quotePath=false ls-files --others)\n"
    ));
    if !inputs.test_patch.is_empty() {
        s.push_str(&format!(
            "git apply --whitespace=nowarn - <<'{TEST_PATCH_EOF}'\n{}",
            heredoc_body(inputs.test_patch, TEST_PATCH_EOF)
        ));
    }
    s.push_str(&format!(": '{START_TEST_OUTPUT}'\n"));
    s.push_str(&command.join(" "));
    s.push('\n');
    s.push_str(&format!(
        "{TEST_EXIT_CODE_VAR}=$?; (exit \"${TEST_EXIT_CODE_VAR}\")\n"
    ));
    s.push_str(&format!(": '{END_TEST_OUTPUT}'\n"));
    s.push_str(&format!(
        "echo \"{TEST_EXIT_CODE}: ${TEST_EXIT_CODE_VAR}\"\n"
    ));
    if !inputs.test_files.is_empty() {
        let files: Vec<String> = inputs.test_files.iter().map(|f| shell_quote(f)).collect();
        s.push_str(&format!("rm -f -- {}\n", files.join(" ")));
    }
    s
}

/// What the image recipe needs besides the build script.
pub struct ImageInputs<'a> {
    pub spec: &'a ProjectSpec,
    /// `X.Y`, the Python the instance was validated with.
    pub python: &'a str,
    /// The project's test-run environment variables (atomskill's `run_env`); paths below the
    /// sandbox workspace are moved to the testbed, and `PATH`, `VIRTUAL_ENV` and `PYTHONPATH`
    /// are the image's own.
    pub run_env: &'a BTreeMap<String, String>,
    pub base_commit: &'a str,
    pub build_script: &'a str,
}

/// The environment image recipe (a Dockerfile, BuildKit syntax for its inline files): Python,
/// a virtualenv with the project's pinned test dependencies, atomskill's seed plugin, the
/// starting tree at `/testbed` (checked to be `base_commit`), and the project installed from
/// its archive but shadowed by `PYTHONPATH`, as in atomskill's own runs.
pub fn dockerfile(inputs: &ImageInputs) -> String {
    let spec = inputs.spec;
    let venv = format!("{OPT}/venv");
    let mut deps: Vec<String> = spec.test_deps.clone();
    if !deps.iter().any(|d| {
        d.split(['=', '<', '>', '!', '~', '[', ' '])
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("pytest"))
    }) {
        deps.push("pytest>=8,<9".into());
    }
    let deps: Vec<String> = deps.iter().map(|d| shell_quote(d)).collect();
    let source = match spec.source_dir.trim_end_matches('/') {
        "." | "" => TESTBED.to_string(),
        dir => format!("{TESTBED}/{dir}"),
    };
    let mut env: BTreeMap<String, String> = inputs
        .run_env
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "PATH" | "VIRTUAL_ENV" | "PYTHONPATH"))
        .map(|(k, v)| (k.clone(), v.replace(sandbox::WORKSPACE, TESTBED)))
        .collect();
    env.insert("VIRTUAL_ENV".into(), venv.clone());
    env.insert(
        "PATH".into(),
        format!("{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    env.insert("PYTHONPATH".into(), format!("{source}:{OPT}"));
    let env_line: Vec<String> = env
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$");
            format!("{k}=\"{v}\"")
        })
        .collect();

    let mut d = String::new();
    d.push_str("# syntax=docker/dockerfile:1.4\n");
    d.push_str(&format!(
        "# Environment of one atomskill bug-fixing instance of {} {}: the starting tree at {TESTBED}\n\
         # (base_commit), the pinned test dependencies, the seed plugin every atomskill pytest run loads.\n",
        spec.name, spec.version
    ));
    d.push_str(&format!("FROM python:{}-slim-bookworm\n", inputs.python));
    d.push_str(
        "RUN apt-get update && apt-get install -y --no-install-recommends git curl ca-certificates \\\n \
         && rm -rf /var/lib/apt/lists/*\n",
    );
    d.push_str(&format!(
        "RUN python -m venv {venv} && {venv}/bin/pip install --no-cache-dir --no-deps {}\n",
        deps.join(" ")
    ));
    d.push_str(&format!(
        "COPY <<'{FILE_EOF}' {OPT}/atomskill_seed.py\n{}",
        heredoc_body(testrun::runner::SEED_PLUGIN, FILE_EOF)
    ));
    d.push_str(&format!(
        "COPY <<'{FILE_EOF}' {OPT}/build_base.sh\n{}",
        heredoc_body(inputs.build_script, FILE_EOF)
    ));
    d.push_str(&format!(
        "RUN test \"$(bash {OPT}/build_base.sh {TESTBED} {OPT}/source.tar.gz)\" = {} \\\n \
         && {venv}/bin/pip install --no-cache-dir --no-deps {OPT}/source.tar.gz\n",
        inputs.base_commit
    ));
    d.push_str(&format!("ENV {}\n", env_line.join(" \\\n    ")));
    d.push_str(&format!("WORKDIR {TESTBED}\n"));
    d
}

/// The image name the harness gives an instance built locally (`sweb.eval.<arch>.<id>:latest`,
/// lower case), with the characters Docker refuses in a name (the `+` of a combined bug's id)
/// as `-`.
pub fn image_name(instance_id: &str) -> String {
    let id: String = instance_id
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .collect();
    format!("sweb.eval.x86_64.{id}:latest")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProjectSpec {
        serde_json::from_value(serde_json::json!({
            "name": "p", "ecosystem": "pypi", "version": "1.0", "archive": "p-1.0.tar.gz",
            "url": "https://example.invalid/p-1.0.tar.gz", "sha256": "0".repeat(64),
            "root": "p-1.0", "source_dir": "src", "packages": ["p"], "tests": ["tests"],
            "install": "pythonpath",
            "test_command": ["python", "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
        }))
        .unwrap()
    }

    /// The bash `protected` function agrees with the grader's rule on every kind of path.
    #[test]
    fn protected_paths_match_the_grader() {
        let spec = spec();
        let paths = [
            "tests/test_a.py",
            "tests/data/x.json",
            "tests",
            "src/p/a.py",
            "src/p/conftest.py",
            "conftest.py",
            "src/p/test_util.py",
            "src/p/util_test.py",
            "setup.py",
            "pyproject.toml",
            "docs/tox.ini",
            "src/sitecustomize.py",
            "src/p.pth",
            ".atomskill/atomskill_seed.py",
            "src/p/testing.py",
            "testsuite/a.py",
            "README.md",
        ];
        let mut script = protected_function(&spec);
        for path in paths {
            script.push_str(&format!(
                "if protected {}; then echo yes; else echo no; fi\n",
                shell_quote(path)
            ));
        }
        let output = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap();
        let answers: Vec<bool> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| l == "yes")
            .collect();
        let expected: Vec<bool> = paths
            .iter()
            .map(|p| crate::verify::is_protected_path(&spec, p))
            .collect();
        assert_eq!(answers, expected, "{paths:?}");
    }

    #[test]
    fn image_names_are_docker_names() {
        assert_eq!(
            image_name("Mini-1.0.ab12+cd34.bug_fixing"),
            "sweb.eval.x86_64.mini-1.0.ab12-cd34.bug_fixing:latest"
        );
    }

    #[test]
    fn eval_script_brackets_the_test_command() {
        let spec = spec();
        let script = eval_script(&EvalInputs {
            spec: &spec,
            base_commit: "abc",
            test_patch: "diff --git a/tests/test_a.py b/tests/test_a.py\n",
            test_files: vec!["tests/test_a.py".into()],
            test_ids: vec!["tests/test_a.py::test_it's".into()],
        });
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(&lines[..2], ["#!/bin/bash", "set -uxo pipefail"]);
        let start = lines
            .iter()
            .position(|l| l.contains(START_TEST_OUTPUT))
            .unwrap();
        let end = lines
            .iter()
            .position(|l| l.contains(END_TEST_OUTPUT))
            .unwrap();
        assert_eq!(end, start + 3, "{script}");
        assert_eq!(
            lines[start + 1],
            "'python' '-m' 'pytest' '-p' 'no:cacheprovider' '-q' '-rA' '-p' 'atomskill_seed' \
             'tests/test_a.py::test_it'\\''s'"
        );
        assert_eq!(
            lines[end + 1],
            "echo \">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE\""
        );
    }
}
