//! A project made ready for synthesis: prepared (corpus), snapshotted, its clean suite run three
//! times (baseline) and, for Python, a per-test map of the functions each test calls.
//!
//! Each product is cached in the project's corpus directory and reused while the snapshot is the
//! same, so a rerun of `synth` starts where the last one stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use corpus::{Cache, Ecosystem, Prepared, ProjectSpec};
use sandbox::{Sandbox, Snapshot, SnapshotStore};
use serde::{Deserialize, Serialize};
use testrun::{Baseline, Selection, TestRunner};

use crate::error::{Error, Result};

const COVERAGE_PLUGIN: &str = include_str!("../py/atomskill_cov.py");

/// Which tests call which functions: `(root-relative file, first line of the code object)`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Coverage {
    pub by_function: BTreeMap<String, BTreeMap<usize, BTreeSet<String>>>,
    /// Functions called outside any test (at import or collection time).
    pub outside: BTreeMap<String, BTreeSet<usize>>,
}

impl Coverage {
    /// Tests calling the code object that starts at one of `lines` of `file`.
    pub fn tests_calling(&self, file: &str, lines: &[usize]) -> BTreeSet<String> {
        let mut tests = BTreeSet::new();
        if let Some(by_line) = self.by_function.get(file) {
            for line in lines {
                if let Some(found) = by_line.get(line) {
                    tests.extend(found.iter().cloned());
                }
            }
        }
        tests
    }

    pub fn called_outside(&self, file: &str, lines: &[usize]) -> bool {
        self.outside
            .get(file)
            .is_some_and(|set| lines.iter().any(|l| set.contains(l)))
    }
}

/// Everything synthesis needs of one project.
#[derive(Clone, Debug)]
pub struct ProjectState {
    pub prepared: Prepared,
    pub snapshot: Snapshot,
    pub baseline: Baseline,
    pub coverage: Option<Coverage>,
}

impl ProjectState {
    pub fn spec(&self) -> &ProjectSpec {
        &self.prepared.spec
    }

    pub fn runner(&self) -> TestRunner {
        TestRunner::new(self.prepared.clone())
    }

    /// Pristine content of a root-relative file.
    pub fn read_pristine(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.snapshot.path.join(path)).ok()
    }

    /// Root-relative paths of the mutation targets, sorted.
    pub fn source_files(&self) -> Vec<String> {
        let mut files = Vec::new();
        walk(&self.snapshot.path, &self.snapshot.path, &mut files);
        files.retain(|f| self.spec().is_source_path(f));
        files.sort();
        files
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(root, &path, out);
        } else if kind.is_file() {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
}

fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value).expect("cached products serialise");
    Ok(corpus::fetch::write_atomically(path, &bytes)?)
}

#[derive(Serialize, Deserialize)]
struct Cached<T> {
    snapshot: String,
    /// `testrun::runner::RUNNER_VERSION` of the runs that measured it (absent: 1). A product
    /// measured by another runner version is measured again.
    #[serde(default = "first_runner")]
    runner: u32,
    value: T,
}

fn first_runner() -> u32 {
    1
}

impl<T> Cached<T> {
    fn new(snapshot: &str, value: T) -> Cached<T> {
        Cached {
            snapshot: snapshot.to_string(),
            runner: testrun::runner::RUNNER_VERSION,
            value,
        }
    }

    /// The value, if it was measured on `snapshot` by this runner.
    fn valid_for(self, snapshot: &str) -> Option<T> {
        (self.snapshot == snapshot && self.runner == testrun::runner::RUNNER_VERSION)
            .then_some(self.value)
    }
}

/// Prepares one project end to end, reusing cached products.
pub async fn prepare_project(
    cache: &Cache,
    store: &SnapshotStore,
    sandbox: &Sandbox,
    spec: &ProjectSpec,
    manifest_env: &BTreeMap<String, String>,
    baseline_runs: usize,
    timeout: Duration,
) -> Result<ProjectState> {
    let prepared = {
        let cache = cache.clone();
        let spec = spec.clone();
        let env = manifest_env.clone();
        tokio::task::spawn_blocking(move || cache.prepare(&spec, &env))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    };
    prepare_state(
        prepared,
        &cache.project_dir(spec),
        store,
        sandbox,
        baseline_runs,
        timeout,
    )
    .await
}

/// Snapshot, baseline and call map of an already prepared project; products are cached in
/// `dir`.
pub async fn prepare_state(
    prepared: Prepared,
    dir: &Path,
    store: &SnapshotStore,
    sandbox: &Sandbox,
    baseline_runs: usize,
    timeout: Duration,
) -> Result<ProjectState> {
    let spec = &prepared.spec;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let snapshot = store.import_dir(&prepared.tree, None)?;
    let runner = TestRunner::new(prepared.clone());
    let baseline_path = dir.join("baseline.json");
    let cached =
        load_json::<Cached<Baseline>>(&baseline_path).and_then(|c| c.valid_for(&snapshot.id));
    let baseline = match cached {
        Some(baseline) => baseline,
        None => {
            let baseline =
                Baseline::measure(&runner, sandbox, &snapshot, baseline_runs, timeout).await?;
            save_json(&baseline_path, &Cached::new(&snapshot.id, baseline.clone()))?;
            baseline
        }
    };
    let coverage = match spec.ecosystem {
        Ecosystem::Crates => None,
        Ecosystem::Pypi => {
            let coverage_path = dir.join("coverage.json");
            let cached = load_json::<Cached<Coverage>>(&coverage_path)
                .and_then(|c| c.valid_for(&snapshot.id));
            Some(match cached {
                Some(coverage) => coverage,
                None => {
                    let coverage =
                        measure_coverage(&runner, sandbox, &snapshot, timeout * 4).await?;
                    save_json(&coverage_path, &Cached::new(&snapshot.id, coverage.clone()))?;
                    coverage
                }
            })
        }
    };
    Ok(ProjectState {
        prepared,
        snapshot,
        baseline,
        coverage,
    })
}

/// One suite run with the call-recording plugin.
async fn measure_coverage(
    runner: &TestRunner,
    sandbox: &Sandbox,
    snapshot: &Snapshot,
    timeout: Duration,
) -> Result<Coverage> {
    let episode = sandbox.create_episode_with(
        snapshot,
        TestRunner::episode_limits(sandbox.default_limits()),
    )?;
    let out = ".atomskill/coverage.json";
    let result = async {
        episode.write_file(
            ".atomskill/atomskill_cov.py",
            COVERAGE_PLUGIN.as_bytes(),
            false,
        )?;
        let run = runner
            .run_with(
                &episode,
                &Selection::All,
                timeout,
                &["-p".into(), "atomskill_cov".into()],
                // `.atomskill` is on the run's import path already (`TestRunner::run_env`).
                &[
                    ("ATOMSKILL_COV_ROOT".into(), sandbox::WORKSPACE.into()),
                    (
                        "ATOMSKILL_COV_OUT".into(),
                        format!("{}/{out}", sandbox::WORKSPACE),
                    ),
                ],
            )
            .await?;
        let bytes = episode.read_file(out, 1 << 30).map_err(|e| {
            Error::Coverage(format!(
                "the plugin wrote no report ({e}); run: {}",
                run.output_tail
            ))
        })?;
        Ok::<_, Error>(bytes)
    }
    .await;
    episode.destroy()?;
    let raw: BTreeMap<String, Vec<(String, usize)>> = serde_json::from_slice(&result?)
        .map_err(|e| Error::Coverage(format!("unreadable report: {e}")))?;
    let mut coverage = Coverage::default();
    for (test, calls) in raw {
        for (file, line) in calls {
            if test == "<outside>" {
                coverage.outside.entry(file).or_default().insert(line);
            } else {
                coverage
                    .by_function
                    .entry(file)
                    .or_default()
                    .entry(line)
                    .or_default()
                    .insert(test.clone());
            }
        }
    }
    Ok(coverage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_products_of_another_runner_or_snapshot_are_measured_again() {
        // Written before the runner had a version: no `runner` field.
        let old: Cached<u32> = serde_json::from_str(r#"{"snapshot":"s1","value":7}"#).unwrap();
        assert_eq!(old.runner, 1);
        assert_eq!(old.valid_for("s1"), None);
        let written = || -> Cached<u32> {
            serde_json::from_slice(&serde_json::to_vec(&Cached::new("s1", 7)).unwrap()).unwrap()
        };
        assert_eq!(written().valid_for("s2"), None);
        assert_eq!(written().valid_for("s1"), Some(7));
    }
}
