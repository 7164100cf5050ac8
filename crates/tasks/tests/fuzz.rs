//! Property tests of the instance files: arbitrary bytes give instances or a typed error, never a
//! panic; instances written out come back equal, through one file or a directory of them; a file
//! torn anywhere by a crash mid-write gives back exactly the instances whose lines were complete.
//!
//! proptest's default case count (256) unless `PROPTEST_CASES` says otherwise.

use std::path::Path;

use corpus::Ecosystem;
use proptest::prelude::*;
use serde_json::Value;
use tasks::store::{read_dir, read_jsonl, write_dir};
use tasks::{
    BugRef, CandidateKind, Error, FileEdits, Harness, Instance, Mutant, ProjectRef, Skill,
    TargetFunction, Task, Validation, SCHEMA_VERSION,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings with what JSON must escape, non-ASCII and line breaks.
fn text() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        any::<char>().prop_map(String::from),
        "[a-z_./ ]{1,8}",
        prop::sample::select(vec![
            "\n", "\r\n", "\"", "\\", "\u{0}", "é", "\u{2028}", "{}"
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(fragment, 0..6).prop_map(|parts| parts.concat())
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..3)
}

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        finite().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn edits() -> impl Strategy<Value = FileEdits> {
    prop::collection::btree_map(text(), prop::option::of(text()), 0..3).prop_map(FileEdits)
}

fn task() -> impl Strategy<Value = Task> {
    let target = (
        text(),
        text(),
        text(),
        prop::option::of(text()),
        any::<usize>(),
        text(),
    )
        .prop_map(
            |(file, qualname, signature, docstring, line, import_hint)| TargetFunction {
                file,
                qualname,
                signature,
                docstring,
                line,
                import_hint,
            },
        );
    let mutant = (text(), text(), edits()).prop_map(|(id, description, edits)| Mutant {
        id,
        description,
        edits,
    });
    let harness = (edits(), text()).prop_map(|(edits, test_prefix)| Harness { edits, test_prefix });
    let kind = prop::sample::select(vec![
        CandidateKind::Gold,
        CandidateKind::Equivalent,
        CandidateKind::BreaksOther,
        CandidateKind::WrongPlace,
        CandidateKind::Partial,
    ]);
    prop_oneof![
        (text(), texts()).prop_map(|(issue, gold_files)| Task::Localization { issue, gold_files }),
        (text(), edits(), texts(), texts()).prop_map(|(instruction, gold_patch, f2p, p2p)| {
            Task::Editing {
                instruction,
                gold_patch,
                fail_to_pass: f2p,
                pass_to_pass: p2p,
            }
        }),
        (
            target,
            text(),
            prop::collection::vec(mutant, 0..3),
            text(),
            prop::option::of(harness)
        )
            .prop_map(|(target, grade_path, mutants, gold_test, harness)| {
                Task::TestGeneration {
                    target,
                    grade_path,
                    mutants,
                    gold_test,
                    harness,
                }
            }),
        (text(), edits(), text()).prop_map(|(issue, gold_patch, gold_script)| {
            Task::Reproduction {
                issue,
                gold_patch,
                gold_script,
            }
        }),
        (text(), text(), kind, any::<bool>(), texts(), texts()).prop_map(
            |(issue, candidate_patch, candidate_kind, label, f2p, p2p)| Task::Review {
                issue,
                candidate_patch,
                candidate_kind,
                label,
                fail_to_pass: f2p,
                pass_to_pass: p2p,
            }
        ),
        (text(), edits(), texts(), texts()).prop_map(|(problem, gold_patch, f2p, p2p)| {
            Task::BugFixing {
                problem_statement: problem,
                gold_patch,
                fail_to_pass: f2p,
                pass_to_pass: p2p,
            }
        }),
    ]
}

fn validation() -> impl Strategy<Value = Validation> {
    (
        finite(),
        finite(),
        json_value(),
        json_value(),
        prop::collection::btree_map(text(), finite(), 0..3),
        prop::option::of(text()),
    )
        .prop_map(
            |(gold_reward, empty_reward, gold_verdict, empty_verdict, audit, hacked)| Validation {
                gold_reward,
                empty_reward,
                gold_verdict,
                empty_verdict,
                audit,
                hacked,
            },
        )
}

fn instance() -> impl Strategy<Value = Instance> {
    let project =
        (text(), text(), any::<bool>(), text()).prop_map(|(name, version, crates, snapshot)| {
            ProjectRef {
                name,
                version,
                ecosystem: if crates {
                    Ecosystem::Crates
                } else {
                    Ecosystem::Pypi
                },
                snapshot,
            }
        });
    let bug = (
        text(),
        text(),
        prop::option::of(text()),
        texts(),
        any::<usize>(),
        text(),
        any::<u64>(),
    )
        .prop_map(
            |(bug_id, file, function, operators, line, description, seed)| BugRef {
                bug_id,
                file,
                function,
                operators,
                line,
                description,
                seed,
            },
        );
    (
        text(),
        project,
        bug,
        edits(),
        task(),
        prop::option::of(validation()),
        prop::collection::btree_map(text(), json_value(), 0..3),
    )
        .prop_map(
            |(instance_id, project, bug, setup, task, validation, extra)| Instance {
                schema_version: SCHEMA_VERSION,
                instance_id,
                project,
                bug,
                setup,
                task,
                validation,
                extra,
            },
        )
}

fn jsonl(instances: &[Instance]) -> String {
    instances
        .iter()
        .map(|i| serde_json::to_string(i).unwrap() + "\n")
        .collect()
}

fn read_bytes(dir: &Path, bytes: &[u8]) -> tasks::Result<Vec<Instance>> {
    let path = dir.join("instances.jsonl");
    std::fs::write(&path, bytes).unwrap();
    read_jsonl(&path)
}

/// Bytes that are mostly instance lines and JSON punctuation, with arbitrary bytes mixed in.
fn jsonl_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        prop::collection::vec(any::<u8>(), 0..16),
        instance().prop_map(|i| serde_json::to_vec(&i).unwrap()),
        prop::sample::select(vec![
            "\n",
            "\r\n",
            "{",
            "}",
            "[",
            "]",
            "\"",
            ",",
            ":",
            "null",
            "\"schema_version\": 2",
            "{\"schema_version\": 1}",
            "\u{FEFF}",
            "\u{e9}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes: instances (at most one per non-blank line) or a typed error, never a panic.
    #[test]
    fn any_bytes_give_instances_or_an_error(bytes in jsonl_like_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        match read_bytes(dir.path(), &bytes) {
            Ok(instances) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
                prop_assert!(instances.len() <= lines);
                prop_assert!(instances.iter().all(|i| i.schema_version == SCHEMA_VERSION));
            }
            Err(error) => prop_assert!(
                matches!(error, Error::Format { line, .. } if line >= 1),
                "{error}"
            ),
        }
    }

    #[test]
    fn instances_round_trip(instances in prop::collection::vec(instance(), 0..4)) {
        let dir = tempfile::tempdir().unwrap();
        prop_assert_eq!(read_bytes(dir.path(), jsonl(&instances).as_bytes())?, instances.clone());

        // Through a directory of per-skill files, read back in skill order.
        let out = dir.path().join("out");
        write_dir(&out, &instances)?;
        let mut expected = instances.clone();
        expected.sort_by_key(|i| Skill::ALL.iter().position(|s| *s == i.skill()));
        if instances.is_empty() {
            prop_assert!(read_dir(&out).is_err());
        } else {
            prop_assert_eq!(read_dir(&out)?, expected);
        }
    }

    /// A file cut at any byte (inside a line, inside a multi-byte character, at a line's end)
    /// reads as the instances whose lines it still holds whole.
    #[test]
    fn a_torn_file_keeps_its_complete_lines(
        instances in prop::collection::vec(instance(), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text = jsonl(&instances);
        let torn = &text.as_bytes()[..cut.index(text.len())];
        let read = read_bytes(dir.path(), torn)?;
        let whole_lines = torn.iter().filter(|&&b| b == b'\n').count();
        // A cut just before a newline leaves the last line whole but unterminated.
        let last_is_whole = text.as_bytes().get(torn.len()) == Some(&b'\n');
        let expected = whole_lines + usize::from(last_is_whole);
        prop_assert_eq!(&read[..], &instances[..expected]);
    }
}
