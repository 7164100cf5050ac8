//! The projects instances come from: each one's prepared environment (corpus cache) and its
//! pristine snapshot, checked to be the very snapshot the instances were made from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corpus::{Cache, Prepared};
use sandbox::{Sandbox, Snapshot, SnapshotStore};
use tasks::{GradedProject, Grader, Instance};
use testrun::TestRunner;

use crate::error::{Error, Result};

/// Projects by snapshot id.
#[derive(Clone, Debug, Default)]
pub struct Projects {
    by_snapshot: BTreeMap<String, GradedProject>,
}

impl Projects {
    pub fn new() -> Projects {
        Projects::default()
    }

    /// Adds a prepared project and its snapshot.
    pub fn add(&mut self, prepared: Prepared, snapshot: Snapshot) {
        self.by_snapshot.insert(
            snapshot.id.clone(),
            GradedProject {
                runner: TestRunner::new(prepared),
                snapshot,
            },
        );
    }

    /// Finds every project `instances` name in the corpus cache (as `corpus fetch` or `synth`
    /// left it) and snapshots its tree into `store`.
    pub fn resolve(
        cache: &Cache,
        store: &SnapshotStore,
        instances: &[Instance],
    ) -> Result<Projects> {
        let mut projects = Projects::new();
        let mut wanted: BTreeMap<&str, &Instance> = BTreeMap::new();
        for instance in instances {
            wanted
                .entry(instance.project.snapshot.as_str())
                .or_insert(instance);
        }
        for (snapshot_id, instance) in wanted {
            let project = &instance.project;
            let prepared = cache.find(&project.name, &project.version).ok_or_else(|| {
                Error::MissingProject {
                    name: project.name.clone(),
                    version: project.version.clone(),
                    cache: cache.root().to_path_buf(),
                }
            })?;
            let snapshot = store.import_dir(&prepared.tree, None)?;
            if snapshot.id != snapshot_id {
                return Err(Error::SnapshotChanged {
                    name: project.name.clone(),
                    version: project.version.clone(),
                    expected: snapshot_id.to_string(),
                    found: snapshot.id,
                });
            }
            projects.add(prepared, snapshot);
        }
        Ok(projects)
    }

    pub fn get(&self, snapshot_id: &str) -> Option<&GradedProject> {
        self.by_snapshot.get(snapshot_id)
    }

    /// A file of the pristine snapshot, if it exists and is text.
    pub fn pristine(&self, snapshot_id: &str, path: &str) -> Option<String> {
        if path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return None;
        }
        let project = self.get(snapshot_id)?;
        std::fs::read_to_string(project.snapshot.path.join(path)).ok()
    }

    /// A grader that knows every project.
    pub fn grader(&self, sandbox: Arc<Sandbox>, test_timeout: Duration) -> Grader {
        let mut grader = Grader::new(sandbox, test_timeout);
        for project in self.by_snapshot.values() {
            grader.add_project(project.clone());
        }
        grader
    }
}
