//! Counts candidate mutations per operator over the Python and Rust files of directories, for
//! yield reports: `cargo run -p mutate --example count -- DIR [DIR ...]`.
//!
//! Files that do not parse are counted and named on stderr, not fatal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mutate::{candidates, Language, Operator};

fn main() -> std::io::Result<()> {
    let roots: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if roots.is_empty() {
        eprintln!("usage: count DIR [DIR ...]");
        std::process::exit(2);
    }
    let mut files = Vec::new();
    for root in &roots {
        collect(root, &mut files)?;
    }
    files.sort();

    let started = Instant::now();
    let mut counts: BTreeMap<(Language, Operator), usize> = BTreeMap::new();
    let mut parsed: BTreeMap<Language, usize> = BTreeMap::new();
    let mut failed = 0;
    let mut bytes = 0;
    for path in &files {
        let Some(language) = Language::from_path(&path.to_string_lossy()) else {
            continue;
        };
        let Ok(source) = std::fs::read_to_string(path) else {
            eprintln!("skipped (not UTF-8): {}", path.display());
            failed += 1;
            continue;
        };
        match candidates(language, &path.to_string_lossy(), &source) {
            Ok(found) => {
                *parsed.entry(language).or_default() += 1;
                bytes += source.len();
                for mutation in found {
                    *counts.entry((language, mutation.operator)).or_default() += 1;
                }
            }
            Err(error) => {
                eprintln!("skipped: {error}");
                failed += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    for (language, n_files) in &parsed {
        println!("{language}: {n_files} files");
        let mut total = 0;
        for operator in Operator::ALL {
            let count = counts.get(&(*language, operator)).copied().unwrap_or(0);
            total += count;
            println!("  {:<20} {count:>8}", operator.name());
        }
        println!("  {:<20} {total:>8}", "total");
    }
    println!(
        "{failed} files skipped; {:.1} MB in {seconds:.2} s",
        bytes as f64 / 1e6
    );
    Ok(())
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_symlink() {
                continue;
            }
            collect(&entry.path(), files)?;
        }
    } else if Language::from_path(&path.to_string_lossy()).is_some() {
        files.push(path.to_path_buf());
    }
    Ok(())
}
