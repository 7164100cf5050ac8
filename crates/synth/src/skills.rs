//! One validated bug → one instance of each skill (test generation: one per function, over all
//! of that function's validated bugs). Labels come from the bug's test runs; review labels from
//! running the hidden tests on the candidate patch.

use std::collections::{BTreeMap, BTreeSet};

use corpus::Ecosystem;
use mutate::Language;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use tasks::{
    BugRef, CandidateKind, FileEdits, Grader, Instance, Mutant, ProjectRef, Skill, TargetFunction,
    Task, SCHEMA_VERSION,
};

use crate::bugs::Bug;
use crate::error::Result;
use crate::issue::{pick, write_issue, IssueFacts};
use crate::project::ProjectState;

/// The file of a test id (`tests/test_a.py::t` → `tests/test_a.py`; `tests/it.rs::t` →
/// `tests/it.rs`; ids of inline Rust tests have none).
pub fn test_file(spec: &corpus::ProjectSpec, id: &str) -> Option<String> {
    let file = id.split("::").next()?;
    match spec.ecosystem {
        Ecosystem::Pypi => file.ends_with(".py").then(|| file.to_string()),
        Ecosystem::Crates => {
            (file.starts_with("tests/") && file.ends_with(".rs")).then(|| file.to_string())
        }
    }
}

fn module_path(spec: &corpus::ProjectSpec, file: &str) -> String {
    let rel = match spec.source_dir.as_str() {
        "." | "" => file,
        dir => file
            .strip_prefix(dir)
            .map_or(file, |r| r.trim_start_matches('/')),
    };
    rel.trim_end_matches(".py")
        .trim_end_matches("/__init__")
        .replace('/', ".")
}

/// How a user reaches the function, without naming its module.
fn public_name(state: &ProjectState, bug: &Bug) -> String {
    let spec = state.spec();
    let qualname = bug.function.clone().unwrap_or_else(|| "the API".into());
    // A constructor is called through its class.
    let qualname = qualname
        .strip_suffix(".__init__")
        .map_or(qualname.clone(), str::to_string);
    let head = qualname.split('.').next().unwrap_or(&qualname).to_string();
    if spec.ecosystem == Ecosystem::Crates {
        return format!(
            "{}::{}",
            spec.packages
                .first()
                .map_or(spec.name.as_str(), String::as_str),
            qualname.replace('.', "::")
        );
    }
    let package = spec.packages.first().cloned().unwrap_or_default();
    let init = match spec.source_dir.as_str() {
        "." | "" => format!("{package}/__init__.py"),
        dir => format!("{dir}/{package}/__init__.py"),
    };
    let exported = state.read_pristine(&init).is_some_and(|text| {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == head)
    });
    if exported {
        format!("{package}.{qualname}")
    } else {
        qualname
    }
}

fn forbidden(state: &ProjectState, bug: &Bug) -> Vec<String> {
    let spec = state.spec();
    let mut out = vec![bug.file.clone(), format!("line {}", bug.line())];
    let module = module_path(spec, &bug.file);
    if module.contains('.') {
        out.push(module);
    }
    if let Some(rest) = bug.file.strip_prefix(&format!("{}/", spec.source_dir)) {
        out.push(rest.to_string());
    }
    out
}

fn issue_for(state: &ProjectState, bug: &Bug, seed: u64) -> String {
    let spec = state.spec();
    let facts = IssueFacts {
        project: spec.name.clone(),
        package: spec
            .packages
            .first()
            .cloned()
            .unwrap_or_else(|| spec.name.clone()),
        public_name: public_name(state, bug),
        message: bug
            .fail_to_pass
            .iter()
            .find_map(|id| bug.messages.get(id).cloned()),
        n_failing: bug.fail_to_pass.len(),
        forbidden: forbidden(state, bug),
    };
    write_issue(&facts, seed)
}

/// A precise edit instruction: where, and which lines become which.
pub fn edit_instruction(bug: &Bug, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let diff = similar::TextDiff::from_lines(&bug.buggy, &bug.pristine);
    let mut parts = Vec::new();
    for group in diff.grouped_ops(0) {
        let mut old = String::new();
        let mut new = String::new();
        let mut first_line = 0;
        for op in &group {
            for change in diff.iter_changes(op) {
                match change.tag() {
                    similar::ChangeTag::Delete => {
                        if first_line == 0 {
                            first_line = change.old_index().map_or(0, |i| i + 1);
                        }
                        old.push_str(change.value());
                    }
                    similar::ChangeTag::Insert => new.push_str(change.value()),
                    similar::ChangeTag::Equal => {}
                }
            }
        }
        let line = if first_line == 0 {
            group[0].old_range().start + 1
        } else {
            first_line
        };
        let part = if old.is_empty() {
            let anchor = bug
                .buggy
                .lines()
                .nth(line.saturating_sub(2))
                .unwrap_or("")
                .trim();
            format!(
                "{} line {} (after `{anchor}`), insert:\n```\n{}```",
                pick(&mut rng, &["Before", "At"]),
                line,
                new
            )
        } else if new.is_empty() {
            format!("Delete line {line}:\n```\n{old}```")
        } else {
            let (verb, joiner) = pick(
                &mut rng,
                &[("Replace", "with"), ("Change", "to"), ("Rewrite", "as")],
            );
            format!("{verb} line {line}\n```\n{old}```\n{joiner}\n```\n{new}```")
        };
        parts.push(part);
    }
    let place = match &bug.function {
        Some(function) => format!("`{function}` in `{}`", bug.file),
        None => format!("`{}`", bug.file),
    };
    let opening = pick(
        &mut rng,
        &[
            "Edit {place} as follows.",
            "Make this change to {place}:",
            "In {place}, apply the following edit.",
            "Please update {place}.",
        ],
    )
    .replace("{place}", &place);
    format!(
        "{opening}\n\n{}\n\nDo not change anything else.",
        parts.join("\n\n")
    )
}

fn project_ref(state: &ProjectState) -> ProjectRef {
    let spec = state.spec();
    ProjectRef {
        name: spec.name.clone(),
        version: spec.version.clone(),
        ecosystem: spec.ecosystem,
        snapshot: state.snapshot.id.clone(),
    }
}

fn bug_ref(bug: &Bug) -> BugRef {
    BugRef {
        bug_id: bug.bug_id.clone(),
        file: bug.file.clone(),
        function: bug.function.clone(),
        operators: bug.operators(),
        line: bug.line(),
        description: bug.description(),
        seed: bug.seed,
    }
}

/// Tests that pass-to-pass checks cover: those run to validate the bug and those in the files of
/// its failing tests, if stable and passing on pristine code.
fn pass_to_pass(state: &ProjectState, bug: &Bug) -> Vec<String> {
    let spec = state.spec();
    let f2p: BTreeSet<&String> = bug.fail_to_pass.iter().collect();
    let files: BTreeSet<String> = bug
        .fail_to_pass
        .iter()
        .filter_map(|id| test_file(spec, id))
        .collect();
    state
        .baseline
        .passing()
        .filter(|id| !f2p.contains(id))
        .filter(|id| {
            bug.checked.contains(id) || test_file(spec, id).is_some_and(|f| files.contains(&f))
        })
        .cloned()
        .collect()
}

fn hidden_files(state: &ProjectState, tests: &[String]) -> BTreeSet<String> {
    tests
        .iter()
        .filter_map(|id| test_file(state.spec(), id))
        .collect()
}

fn instance(
    state: &ProjectState,
    bug: &Bug,
    skill: Skill,
    setup: FileEdits,
    task: Task,
) -> Instance {
    let spec = state.spec();
    Instance {
        schema_version: SCHEMA_VERSION,
        instance_id: format!(
            "{}-{}.{}.{}",
            spec.name,
            spec.version,
            bug.bug_id,
            skill.name()
        ),
        project: project_ref(state),
        bug: bug_ref(bug),
        setup,
        task,
        validation: None,
        extra: BTreeMap::new(),
    }
}

/// Everything the skills need besides the bug itself.
pub struct Context<'a> {
    pub state: &'a ProjectState,
    pub grader: &'a Grader,
    /// Every validated bug of the project (review candidates that break other tests).
    pub bugs: &'a [Bug],
    /// Unvalidated candidate mutations of the project (review candidates in the wrong place).
    pub other_candidates: &'a [mutate::Mutation],
}

/// Instances of the skills in `skills` for one bug (not test generation: see
/// [`test_generation`]).
pub async fn instances_for_bug(
    ctx: &Context<'_>,
    bug: &Bug,
    skills: &BTreeSet<Skill>,
) -> Result<Vec<Instance>> {
    let state = ctx.state;
    let spec = state.spec();
    let gold_patch = FileEdits::new().write(bug.file.clone(), bug.pristine.clone());
    let bug_edit = FileEdits::new().write(bug.file.clone(), bug.buggy.clone());
    let mut hide = bug_edit.clone();
    for file in hidden_files(state, &bug.fail_to_pass) {
        hide = hide.delete(file);
    }
    let p2p = pass_to_pass(state, bug);
    let issue = issue_for(state, bug, bug.seed ^ 0x1550e);
    let mut out = Vec::new();
    if skills.contains(&Skill::Localization) {
        out.push(instance(
            state,
            bug,
            Skill::Localization,
            hide.clone(),
            Task::Localization {
                issue: issue.clone(),
                gold_files: vec![bug.file.clone()],
            },
        ));
    }
    if skills.contains(&Skill::Editing) {
        out.push(instance(
            state,
            bug,
            Skill::Editing,
            hide.clone(),
            Task::Editing {
                instruction: edit_instruction(bug, bug.seed ^ 0xed17),
                gold_patch: gold_patch.clone(),
                fail_to_pass: bug.fail_to_pass.clone(),
                pass_to_pass: p2p.clone(),
            },
        ));
    }
    if skills.contains(&Skill::BugFixing) {
        out.push(instance(
            state,
            bug,
            Skill::BugFixing,
            hide.clone(),
            Task::BugFixing {
                problem_statement: issue.clone(),
                gold_patch: gold_patch.clone(),
                fail_to_pass: bug.fail_to_pass.clone(),
                pass_to_pass: p2p.clone(),
            },
        ));
    }
    if skills.contains(&Skill::Reproduction) {
        out.push(instance(
            state,
            bug,
            Skill::Reproduction,
            bug_edit.clone(),
            Task::Reproduction {
                issue: issue.clone(),
                gold_patch: gold_patch.clone(),
                gold_script: gold_script(spec, &bug.fail_to_pass),
            },
        ));
    }
    if skills.contains(&Skill::Review) {
        if let Some(review) = review(ctx, bug, &hide, &issue, &p2p).await? {
            out.push(review);
        }
    }
    Ok(out)
}

fn gold_script(spec: &corpus::ProjectSpec, f2p: &[String]) -> String {
    match spec.ecosystem {
        // Tests in test files first: a doctest is read from the source text, which the grader
        // hides in its second run of a script (`tasks::verify`, reproduction).
        Ecosystem::Pypi => format!(
            "\"\"\"Reproduces the reported problem: exits non-zero while it is present.\"\"\"\nimport sys\n\nimport pytest\n\nsys.exit(pytest.main([\"-q\", \"-p\", \"no:cacheprovider\", {}]))\n",
            {
                let in_test_files: Vec<&String> = f2p
                    .iter()
                    .filter(|id| spec.is_test_path(id.split("::").next().unwrap_or(id)))
                    .collect();
                let ids = if in_test_files.is_empty() {
                    f2p.iter().collect()
                } else {
                    in_test_files
                };
                ids.into_iter()
                    .take(3)
                    .map(|id| format!("{id:?}"))
                    .collect::<Vec<_>>()
            }
                .join(", ")
        ),
        Ecosystem::Crates => {
            let id = &f2p[0];
            let (target, name) = id.split_once("::").unwrap_or(("lib", id));
            let target_flag = match target {
                "lib" => "--lib".to_string(),
                "doc" => "--doc".to_string(),
                t if t.starts_with("tests/") => format!("--test {}", t.trim_start_matches("tests/").trim_end_matches(".rs")),
                _ => String::new(),
            };
            let exact = if target == "doc" { "" } else { " --exact" };
            format!("#!/bin/bash\n# Reproduces the reported problem: exits non-zero while it is present.\nset -e\ncargo test --offline {target_flag} -- '{name}'{exact}\n")
        }
    }
}

pub use tasks::gold::reproduction_path;

async fn review(
    ctx: &Context<'_>,
    bug: &Bug,
    hide: &FileEdits,
    issue: &str,
    p2p: &[String],
) -> Result<Option<Instance>> {
    let state = ctx.state;
    let mut rng = ChaCha8Rng::seed_from_u64(bug.seed ^ 0x4e71e);
    let fix = FileEdits::new().write(bug.file.clone(), bug.pristine.clone());
    // (kind, candidate edits, tests besides the bug's own that the label must include)
    let mut options: Vec<(CandidateKind, FileEdits, Vec<String>)> = Vec::new();
    if rng.next_u32() % 2 == 0 {
        options.push((CandidateKind::Gold, fix.clone(), Vec::new()));
    }
    // The fix, plus another validated bug elsewhere: breaks other tests.
    if let Some(other) = ctx
        .bugs
        .iter()
        .find(|b| b.function != bug.function && b.file != bug.file)
    {
        options.push((
            CandidateKind::BreaksOther,
            fix.clone().write(other.file.clone(), other.buggy.clone()),
            other.fail_to_pass.clone(),
        ));
    } else if let Some(other) = ctx
        .bugs
        .iter()
        .find(|b| b.function != bug.function && b.file == bug.file)
    {
        // Same file, other function: combine both mutations on pristine text.
        let muts = other.mutations.clone();
        if muts
            .iter()
            .all(|m| bug.mutations.iter().all(|n| !m.overlaps(n)))
        {
            if let Ok(text) = mutate::apply_all(&bug.pristine, &muts) {
                options.push((
                    CandidateKind::BreaksOther,
                    FileEdits::new().write(bug.file.clone(), text),
                    other.fail_to_pass.clone(),
                ));
            }
        }
    }
    // A partial fix: one of the bug's changes undone, the other left in.
    if bug.mutations.len() > 1 {
        if let Ok(text) = mutate::apply_all(&bug.pristine, &bug.mutations[1..]) {
            options.push((
                CandidateKind::Partial,
                FileEdits::new().write(bug.file.clone(), text),
                Vec::new(),
            ));
        }
    }
    // A change in the wrong place: another candidate in another function, bug left in.
    let wrong: Vec<&mutate::Mutation> = ctx
        .other_candidates
        .iter()
        .filter(|m| {
            m.file == bug.file
                && m.function != bug.function
                && bug.mutations.iter().all(|n| !m.overlaps(n))
        })
        .collect();
    if !wrong.is_empty() {
        let m = wrong[(rng.next_u64() % wrong.len() as u64) as usize];
        let mut all = bug.mutations.clone();
        all.push(m.clone());
        if let Ok(text) = mutate::apply_all(&bug.pristine, &all) {
            options.push((
                CandidateKind::WrongPlace,
                FileEdits::new().write(bug.file.clone(), text),
                Vec::new(),
            ));
        }
    }
    if options.is_empty() {
        options.push((CandidateKind::Gold, fix.clone(), Vec::new()));
    }
    let (kind, candidate, extra_tests) =
        options.swap_remove(if options[0].0 == CandidateKind::Gold {
            0
        } else {
            (rng.next_u64() % options.len() as u64) as usize
        });
    // The label is what the hidden tests say about the buggy code with the candidate applied.
    let buggy = FileEdits::new().write(bug.file.clone(), bug.buggy.clone());
    // The hidden tests: the bug's own, plus those of any other code the candidate breaks (they
    // are pass-to-pass tests here: they pass on the pristine code).
    let mut p2p: Vec<String> = p2p.to_vec();
    for test in extra_tests {
        if !p2p.contains(&test) && !bug.fail_to_pass.contains(&test) {
            p2p.push(test);
        }
    }
    let ids: Vec<String> = bug.fail_to_pass.iter().chain(&p2p).cloned().collect();
    let failing = ctx
        .grader
        .failing_tests(&state.snapshot.id, &buggy.then(&candidate), &ids)
        .await?;
    let label = failing.is_empty();
    let base = |path: &str| {
        if path == bug.file {
            Some(bug.buggy.clone())
        } else {
            state.read_pristine(path)
        }
    };
    let candidate_patch = candidate.to_unified_diff(base);
    let mut inst = instance(
        state,
        bug,
        Skill::Review,
        hide.clone(),
        Task::Review {
            issue: issue.to_string(),
            candidate_patch,
            candidate_kind: kind,
            label,
            fail_to_pass: bug.fail_to_pass.clone(),
            pass_to_pass: p2p,
        },
    );
    inst.extra.insert(
        "label_failing_tests".into(),
        serde_json::json!(failing.len()),
    );
    Ok(Some(inst))
}

/// One test-generation instance for a function with validated bugs: the kept mutants are those
/// the chosen gold test file kills.
pub fn test_generation(state: &ProjectState, bugs: &[&Bug]) -> Option<TestGenInstance> {
    let spec = state.spec();
    if spec.ecosystem == Ecosystem::Crates {
        return rust_test_generation(state, bugs).map(|instance| TestGenInstance {
            instance,
            full_gold: None,
        });
    }
    let first = bugs.first()?;
    let function_name = first.function.clone()?;
    let functions = mutate::functions(Language::Python, &first.pristine).ok()?;
    let function = functions.iter().find(|f| f.qualname == function_name)?;
    // The test file that kills the most mutants.
    let mut kills: BTreeMap<String, Vec<&Bug>> = BTreeMap::new();
    for bug in bugs {
        let files: BTreeSet<String> = bug
            .fail_to_pass
            .iter()
            .filter_map(|id| test_file(spec, id))
            .collect();
        for file in files {
            kills.entry(file).or_default().push(bug);
        }
    }
    let (gold_file, killed) = kills
        .into_iter()
        .max_by_key(|(file, b)| (b.len(), std::cmp::Reverse(file.clone())))?;
    let full_gold = state.read_pristine(&gold_file)?;
    // The tests of the file that fail on some kept mutant: the rest go (see
    // `mutate::trim`), so that the gold answer is what an agent could write in its context.
    // Node ids `FILE::[Class::...]name[params]`: the bare names, and the classes that hold them.
    let kept_ids: Vec<Vec<&str>> = killed
        .iter()
        .flat_map(|b| b.fail_to_pass.iter())
        .filter_map(|id| id.strip_prefix(&format!("{gold_file}::")))
        .filter_map(|rest| Some(rest.split('[').next()?.split("::").collect()))
        .collect();
    let keep: BTreeSet<String> = kept_ids
        .iter()
        .filter_map(|parts| parts.last().map(|n| n.to_string()))
        .collect();
    let classes: BTreeSet<String> = kept_ids
        .iter()
        .flat_map(|parts| parts[..parts.len().saturating_sub(1)].iter())
        .map(|c| c.to_string())
        .collect();
    // A file tree-sitter cannot parse is not trimmed: the whole file is a valid gold test.
    let trimmed = mutate::trim::keep_python_tests(&full_gold, &keep, &classes)
        .ok()
        .flatten();
    let gold_test = trimmed.clone().unwrap_or_else(|| full_gold.clone());
    let dir = gold_file
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| format!("{d}/"));
    let short = function_name.replace('.', "_").to_lowercase();
    let grade_path = format!("{dir}test_atomskill_{short}.py");
    let mutants: Vec<Mutant> = killed
        .iter()
        .map(|bug| mutant_of(bug, bug.buggy.clone()))
        .collect();
    let all_f2p: Vec<String> = killed.iter().flat_map(|b| b.fail_to_pass.clone()).collect();
    let mut setup = FileEdits::new();
    for file in hidden_files(state, &all_f2p) {
        setup = setup.delete(file);
    }
    let module = module_path(spec, &first.file);
    let name = function_name.split('.').next().unwrap_or(&function_name);
    let mut inst = test_generation_instance(
        state,
        first,
        function,
        TestGenParts {
            setup,
            import_hint: format!("from {module} import {name}"),
            grade_path,
            mutants,
            gold_test,
            harness: None,
            short,
        },
    );
    inst.extra
        .insert("gold_test_file".into(), serde_json::json!(gold_file));
    inst.extra.insert(
        "gold_test_trimmed".into(),
        serde_json::json!(trimmed.is_some()),
    );
    Some(TestGenInstance {
        instance: inst,
        full_gold: trimmed.map(|_| full_gold),
    })
}

/// A test-generation instance and, when its gold test is the project's file trimmed to the tests
/// that matter, the whole file: the fallback if the trimmed one does not validate.
pub struct TestGenInstance {
    pub instance: Instance,
    pub full_gold: Option<String>,
}

/// `instance` with `full` (the whole test file) as its gold test.
pub fn with_whole_gold(mut instance: Instance, full: String) -> Instance {
    if let Task::TestGeneration { gold_test, .. } = &mut instance.task {
        *gold_test = full;
    }
    instance
        .extra
        .insert("gold_test_trimmed".into(), serde_json::json!(false));
    instance
}

/// A kept bug as a mutant whose file reads `content`.
fn mutant_of(bug: &Bug, content: String) -> Mutant {
    Mutant {
        id: bug.bug_id.clone(),
        description: bug.description(),
        edits: FileEdits::new().write(bug.file.clone(), content),
    }
}

/// What differs between the Python and the Rust test-generation instance.
struct TestGenParts {
    setup: FileEdits,
    import_hint: String,
    grade_path: String,
    mutants: Vec<Mutant>,
    gold_test: String,
    harness: Option<tasks::Harness>,
    /// The function's name in the instance id.
    short: String,
}

fn test_generation_instance(
    state: &ProjectState,
    first: &Bug,
    function: &mutate::Function,
    parts: TestGenParts,
) -> Instance {
    let spec = state.spec();
    let mut inst = instance(
        state,
        first,
        Skill::TestGeneration,
        parts.setup,
        Task::TestGeneration {
            target: TargetFunction {
                file: first.file.clone(),
                qualname: function.qualname.clone(),
                signature: function.signature.clone(),
                docstring: function.docstring.clone(),
                line: function.start_line,
                import_hint: parts.import_hint,
            },
            grade_path: parts.grade_path,
            mutants: parts.mutants,
            gold_test: parts.gold_test,
            harness: parts.harness,
        },
    );
    inst.instance_id = format!(
        "{}-{}.{}.{}",
        spec.name,
        spec.version,
        parts.short,
        Skill::TestGeneration.name()
    );
    inst
}

/// [`test_generation`] for a crate: the generated file is a unit-test module beside the target
/// (see [`crate::rust_tests`]); the gold file is made of the crate's own tests that catch the
/// function's bugs, and the kept mutants are the bugs one of those tests catches.
fn rust_test_generation(state: &ProjectState, bugs: &[&Bug]) -> Option<Instance> {
    use crate::rust_tests;
    let spec = state.spec();
    let first = bugs.first()?;
    let function_name = first.function.clone()?;
    let read = |path: &str| state.read_pristine(path);
    let modules = rust_tests::Modules::resolve(&read, &spec.source_dir);
    let module = modules.module_of(&first.file)?.to_string();
    let functions = mutate::functions(Language::Rust, &first.pristine).ok()?;
    let function = functions.iter().find(|f| f.qualname == function_name)?;
    let crate_name = spec
        .packages
        .first()
        .cloned()
        .unwrap_or_else(|| spec.name.replace('-', "_"));
    let ids: BTreeSet<String> = bugs
        .iter()
        .flat_map(|b| b.fail_to_pass.iter().cloned())
        .collect();
    let gold = rust_tests::gold(&read, &modules, &crate_name, &module, &ids);
    if gold.text.is_empty() {
        return None;
    }
    let killed: Vec<&&Bug> = bugs
        .iter()
        .filter(|b| b.fail_to_pass.iter().any(|id| gold.covered.contains(id)))
        .collect();
    if killed.is_empty() {
        return None;
    }
    let grade_path = rust_tests::grade_path(&first.file);
    let harness = tasks::Harness {
        edits: FileEdits::new().write(first.file.clone(), rust_tests::wired(&first.pristine)),
        test_prefix: rust_tests::test_prefix(&module),
    };
    let mutants: Vec<Mutant> = killed
        .iter()
        .map(|bug| mutant_of(bug, rust_tests::wired(&bug.buggy)))
        .collect();
    // The agent starts from the declared, empty test module, with the crate's own tests that
    // make up the gold file taken out (integration files deleted, inline modules cut).
    let mut setup = FileEdits::new();
    let all_f2p: Vec<String> = killed.iter().flat_map(|b| b.fail_to_pass.clone()).collect();
    for file in hidden_files(state, &all_f2p) {
        setup = setup.delete(file);
    }
    let mut cuts: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for (file, a, b) in &gold.moved {
        cuts.entry(file.clone()).or_default().push((*a, *b));
    }
    cuts.entry(first.file.clone()).or_default();
    for (file, ranges) in cuts {
        let text = state.read_pristine(&file)?;
        let mut text = rust_tests::without(&text, &ranges);
        if file == first.file {
            text = rust_tests::wired(&text);
        }
        setup = setup.write(file, text);
    }
    setup = setup.write(
        grade_path.clone(),
        format!(
            "// Unit tests of `{function_name}`: this file is compiled as `mod {}` inside the \n// module of {} (`use super::*;` reaches the function).\n",
            rust_tests::MODULE,
            first.file
        ),
    );
    let mut inst = test_generation_instance(
        state,
        first,
        function,
        TestGenParts {
            setup,
            import_hint: "use super::*;".to_string(),
            grade_path,
            mutants,
            gold_test: gold.text,
            harness: Some(harness),
            short: function_name.replace("::", "_").to_lowercase(),
        },
    );
    inst.extra.insert(
        "gold_tests".into(),
        serde_json::json!(gold.covered.iter().collect::<Vec<_>>()),
    );
    Some(inst)
}
