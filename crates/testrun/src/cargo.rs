//! `cargo test` console output (stdout and stderr merged, so each result line follows its
//! "Running <target>" / "Doc-tests <crate>" header) turned into per-test outcomes.
//!
//! Ids are `<target>::<test name>`: `lib`, `bin:<path>`, an integration-test path such as
//! `tests/it.rs`, or `doc` (doc-test names drop their "(line N)", which moves whenever lines are
//! added above them). Result lines are read only between "running N tests" and the end of that
//! target's list; lines a test prints are captured by libtest into its "failures:" section, and
//! any that still get through show up as a count that disagrees with the target's summary line.

use std::collections::BTreeMap;

use crate::status::{Parsed, TestStatus};

/// How the anomaly of a test binary killed by a signal starts.
pub const SIGNAL_ANOMALY: &str = "a test binary was killed by a signal";

pub fn parse_cargo_test(output: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut target = String::from("unknown");
    let mut in_results = false;
    // A target's list started and its summary line has not come yet.
    let mut awaiting_summary = false;
    let mut seen_in_target: BTreeMap<TestStatus, usize> = BTreeMap::new();
    let mut names_in_target: BTreeMap<String, usize> = BTreeMap::new();
    // The failure section of a test: its name and the panic message lines after "panicked at".
    let mut section: Option<(String, Vec<String>, bool)> = None;
    for line in output.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            flush_section(&mut parsed, &target, section.take());
            section = Some((name.to_string(), Vec::new(), false));
            continue;
        }
        if let Some((_, message, after_panic)) = section.as_mut() {
            if line == "failures:" || line.starts_with("test result: ") {
                flush_section(&mut parsed, &target, section.take());
            } else if line.contains("panicked at ") {
                *after_panic = true;
                continue;
            } else if *after_panic {
                let end = line.trim().is_empty()
                    || line.starts_with("note: ")
                    || line.starts_with("stack backtrace:");
                if end || message.len() >= 4 {
                    *after_panic = false;
                } else {
                    message.push(line.trim().to_string());
                }
                continue;
            } else {
                continue;
            }
        }
        let trimmed = line.trim_start();
        if trimmed.contains("process didn't exit successfully") && trimmed.contains("(signal: ") {
            parsed
                .anomalies
                .push(format!("{SIGNAL_ANOMALY}: {trimmed}"));
        }
        let header = trimmed.starts_with("Running ") || trimmed.starts_with("Doc-tests ");
        if header && awaiting_summary {
            parsed.anomalies.push(format!(
                "{target}: the test list ended without a summary line (the binary exited early)"
            ));
            awaiting_summary = false;
        }
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            let path = rest.split(" (").next().unwrap_or(rest).trim();
            target = match path.strip_prefix("unittests ") {
                Some("src/lib.rs") => "lib".to_string(),
                Some(other) => format!("bin:{other}"),
                None => path.to_string(),
            };
            in_results = false;
            continue;
        }
        if trimmed.starts_with("Doc-tests ") {
            target = "doc".to_string();
            in_results = false;
            continue;
        }
        if line.starts_with("running ") && line.ends_with(" tests") || line == "running 1 test" {
            in_results = true;
            awaiting_summary = true;
            seen_in_target.clear();
            names_in_target.clear();
            continue;
        }
        if line == "failures:" {
            in_results = false;
            continue;
        }
        if let Some(summary) = line.strip_prefix("test result: ") {
            in_results = false;
            awaiting_summary = false;
            check_summary(&mut parsed, &target, summary, &seen_in_target);
            continue;
        }
        if !in_results {
            continue;
        }
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, result)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        let status = if result == "ok" {
            TestStatus::Passed
        } else if result == "FAILED" {
            TestStatus::Failed
        } else if result.starts_with("ignored") {
            TestStatus::Skipped
        } else {
            continue;
        };
        let mut name = name.to_string();
        if target == "doc" {
            if let Some(at) = name.rfind(" (line ") {
                name.truncate(at);
            }
        }
        let repeat = names_in_target.entry(name.clone()).or_insert(0);
        *repeat += 1;
        let id = if *repeat > 1 {
            format!("{target}::{name} #{repeat}")
        } else {
            format!("{target}::{name}")
        };
        *seen_in_target.entry(status).or_insert(0) += 1;
        parsed.record(id, status, None);
    }
    if awaiting_summary {
        parsed.anomalies.push(format!(
            "{target}: the test list ended without a summary line (the binary exited early)"
        ));
    }
    parsed
}

fn flush_section(parsed: &mut Parsed, target: &str, section: Option<(String, Vec<String>, bool)>) {
    if let Some((mut name, message, _)) = section {
        if target == "doc" {
            if let Some(at) = name.rfind(" (line ") {
                name.truncate(at);
            }
        }
        if !message.is_empty() {
            parsed
                .messages
                .insert(format!("{target}::{name}"), message.join("\n"));
        }
    }
}

fn check_summary(
    parsed: &mut Parsed,
    target: &str,
    summary: &str,
    seen: &BTreeMap<TestStatus, usize>,
) {
    let counts = summary.split_once(". ").map_or(summary, |(_, rest)| rest);
    let count = |word: &str| -> Option<usize> {
        counts
            .split(';')
            .find_map(|part| {
                part.trim()
                    .split_once(' ')
                    .filter(|(_, w)| w.starts_with(word))
            })
            .and_then(|(n, _)| n.parse().ok())
    };
    for (word, status) in [
        ("passed", TestStatus::Passed),
        ("failed", TestStatus::Failed),
        ("ignored", TestStatus::Skipped),
    ] {
        let reported = count(word);
        let found = seen.get(&status).copied().unwrap_or(0);
        if reported != Some(found) {
            parsed.anomalies.push(format!(
                "{target}: {found} tests {word} in the result lines, the summary says {reported:?}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_cargo_test_output() {
        // Written by cargo 1.95 for tests/data/cargo-test-lib.rs.txt and cargo-test-it.rs.txt;
        // tests::fails prints a fake "test tests::fake ... ok" line.
        let parsed = parse_cargo_test(include_str!("../tests/data/cargo-test.txt"));
        use TestStatus::*;
        let expected: Vec<(&str, TestStatus)> = vec![
            ("doc::src/lib.rs - add", Passed),
            ("doc::src/lib.rs - two", Failed),
            ("lib::tests::fails", Failed),
            ("lib::tests::ign", Skipped),
            ("lib::tests::ok", Passed),
            ("tests/it.rs::integ", Passed),
        ];
        let got: Vec<(&str, TestStatus)> = parsed
            .statuses
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(got, expected);
        assert!(parsed.anomalies.is_empty(), "{:?}", parsed.anomalies);
        assert_eq!(
            parsed.messages.get("lib::tests::fails").map(String::as_str),
            Some("assertion `left == right` failed\nleft: 2\nright: 3")
        );
    }

    #[test]
    fn fake_lines_outside_capture_disagree_with_the_summary() {
        let output = "     Running unittests src/lib.rs (x)\n\nrunning 1 test\ntest a ... FAILED\ntest b ... ok\n\nfailures:\n\nfailures:\n    a\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let parsed = parse_cargo_test(output);
        assert_eq!(parsed.anomalies.len(), 1, "{:?}", parsed.anomalies);
        assert!(parsed.anomalies[0].contains("1 tests passed"));
    }

    #[test]
    fn binaries_that_end_early_or_die_are_anomalies() {
        // A test binary that exited in the middle of its list (a test called exit).
        let early = "     Running unittests src/lib.rs (x)\n\nrunning 2 tests\ntest a ... ok\n     Running tests/it.rs (y)\n\nrunning 1 test\ntest b ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        let parsed = parse_cargo_test(early);
        assert_eq!(parsed.anomalies.len(), 1, "{:?}", parsed.anomalies);
        assert!(parsed.anomalies[0].starts_with("lib: the test list ended"));
        // The last binary's list cut off at the end of the output.
        let cut = "     Running unittests src/lib.rs (x)\n\nrunning 2 tests\ntest a ... ok\n";
        assert_eq!(parse_cargo_test(cut).anomalies.len(), 1);
        // Fake result lines and summary, then an abort.
        let aborted = "     Running unittests src/lib.rs (x)\n\nrunning 2 tests\ntest a ... ok\ntest b ... ok\n\ntest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\nerror: test failed, to rerun pass `--lib`\n\nCaused by:\n  process didn't exit successfully: `/t/lib-x` (signal: 6, SIGABRT: process abort signal)\n";
        let parsed = parse_cargo_test(aborted);
        assert_eq!(parsed.anomalies.len(), 1, "{:?}", parsed.anomalies);
        assert!(parsed.anomalies[0].contains("signal"));
    }

    #[test]
    fn repeated_doc_test_names_stay_distinct() {
        let output = "   Doc-tests c\n\nrunning 2 tests\ntest src/lib.rs - f (line 3) ... ok\ntest src/lib.rs - f (line 9) ... ok\n\ntest result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s\n";
        let parsed = parse_cargo_test(output);
        let ids: Vec<&String> = parsed.statuses.keys().collect();
        assert_eq!(ids, ["doc::src/lib.rs - f", "doc::src/lib.rs - f #2"]);
        assert!(parsed.anomalies.is_empty());
    }
}
