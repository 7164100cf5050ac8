//! Tidy checks of the workspace's shape (as rust-analyzer's `tidy` does): every crate has a
//! `//!` doc, appears in ARCHITECTURE.md's overview table, and depends only on crates of lower
//! layers there; `test-support` is never a library's dependency.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `crate → layer` from the overview table (`dev` is layer `None`).
fn layers() -> BTreeMap<String, Option<u32>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut layers = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", layer, `crate`, owns, never, ""]
        if cells.len() < 4 || !cells[2].starts_with('`') {
            continue;
        }
        let name = cells[2].trim_matches('`').to_string();
        let layer = match cells[1] {
            "dev" => None,
            n => match n.parse() {
                Ok(n) => Some(n),
                Err(_) => continue,
            },
        };
        layers.insert(name, layer);
    }
    layers
}

fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| {
            let manifest: toml::Value =
                toml::from_str(&std::fs::read_to_string(p.join("Cargo.toml")).unwrap()).unwrap();
            (manifest["package"]["name"].as_str().unwrap().to_string(), p)
        })
        .collect();
    out.sort();
    out
}

/// The workspace crates among `[dependencies]` of a manifest.
fn dependencies(dir: &Path, workspace: &BTreeMap<String, Option<u32>>) -> Vec<String> {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
    manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|t| {
            t.keys()
                .filter(|k| workspace.contains_key(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_crate_is_in_the_overview_with_a_doc() {
    let layers = layers();
    assert!(
        layers.len() >= 10,
        "the overview table was not found: {layers:?}"
    );
    for (name, dir) in crates() {
        assert!(
            layers.contains_key(&name),
            "crate `{name}` is missing from ARCHITECTURE.md's overview table"
        );
        let src = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .unwrap();
        let text = std::fs::read_to_string(&src).unwrap();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        assert!(
            first.starts_with("//!"),
            "{} does not start with a `//!` doc",
            src.display()
        );
    }
    for name in layers.keys() {
        assert!(
            crates().iter().any(|(n, _)| n == name),
            "the overview names `{name}`, which is not a crate"
        );
    }
}

/// The `[dependencies]` edges of `crates` that point sideways, up, or at a dev-only crate.
fn wrong_edges(
    crates: &[(String, PathBuf)],
    layers: &BTreeMap<String, Option<u32>>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (name, dir) in crates {
        let own = layers[name];
        for dep in dependencies(dir, layers) {
            match (own, layers[&dep]) {
                (_, None) => wrong.push(format!("{name} → {dep}: a dev-only crate")),
                (Some(own), Some(theirs)) if theirs >= own => {
                    wrong.push(format!("{name} (layer {own}) → {dep} (layer {theirs})"))
                }
                _ => {}
            }
        }
    }
    wrong
}

#[test]
fn dependencies_point_down_the_layers() {
    let layers = layers();
    let wrong = wrong_edges(&crates(), &layers);
    assert!(
        wrong.is_empty(),
        "edges against the layer order:\n{}",
        wrong.join("\n")
    );
}

/// The check can fail: made-up manifests with an upward, a sideways and a dev-only edge are
/// each caught, and a downward one is not.
#[test]
fn wrong_edges_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = |name: &str, deps: &[&str]| {
        let crate_dir = dir.path().join(name);
        std::fs::create_dir_all(&crate_dir).unwrap();
        let deps: String = deps
            .iter()
            .map(|d| format!("{d} = {{ path = \"x\" }}\n"))
            .collect();
        std::fs::write(
            crate_dir.join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\n[dependencies]\nserde = \"1\"\n{deps}"),
        )
        .unwrap();
        (name.to_string(), crate_dir)
    };
    let layers = layers();
    let up = manifest("trajectory", &["eval"]);
    let sideways = manifest("agent", &["train"]);
    let dev_only = manifest("tasks", &["test-support"]);
    let down = manifest("eval", &["rollout", "trajectory"]);
    assert_eq!(wrong_edges(std::slice::from_ref(&up), &layers).len(), 1);
    assert_eq!(
        wrong_edges(std::slice::from_ref(&sideways), &layers).len(),
        1
    );
    assert_eq!(
        wrong_edges(std::slice::from_ref(&dev_only), &layers).len(),
        1
    );
    assert!(wrong_edges(&[down], &layers).is_empty());
}
