//! `atomskill bench sandbox`: per-command overhead of the sandbox against a direct spawn and a
//! plain `unshare -Urmpfn`, and episode set-up and teardown over a real repository.
//!
//! The three ways of running a command are interleaved run by run, so a change in machine load
//! affects all of them alike.

use std::path::PathBuf;
use std::time::Instant;

use sandbox::{ExecRequest, Sandbox, SnapshotStore};

use crate::median;

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Repository for the set-up and teardown figures (e.g. an unpacked Django sdist).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Commands run per mechanism and program.
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Episodes created and destroyed for the set-up figures.
    #[arg(long, default_value_t = 50)]
    pub episodes: usize,
    /// Python interpreter for the `python3 -c pass` rows.
    #[arg(long, default_value = "/usr/bin/python3")]
    pub python: String,
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e3
}

fn spawn_status(argv: &[&str]) -> bool {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .is_ok_and(|s| s.success())
}

pub async fn run(
    options: &Options,
    sandbox: &Sandbox,
    store: &SnapshotStore,
) -> Result<(), sandbox::Error> {
    println!("{}", sandbox.isolation());
    let scratch = std::env::temp_dir().join(format!("atomskill-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| sandbox::Error::Io {
        context: "scratch dir".into(),
        source: e,
    })?;
    std::fs::write(scratch.join("hello.py"), "print('hello')\n").map_err(|e| {
        sandbox::Error::Io {
            context: "scratch file".into(),
            source: e,
        }
    })?;
    let small = store.import_dir(&scratch, None)?;
    let episode = sandbox.create_episode(&small)?;

    println!(
        "\nper-command latency, median of {} runs (ms)",
        options.runs
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "program", "direct", "unshare", "sandbox", "sbx/unshare", "sbx/direct"
    );
    let programs: [(&str, Vec<&str>); 2] = [
        ("true", vec!["true"]),
        (
            "python3 -c pass",
            vec![options.python.as_str(), "-c", "pass"],
        ),
    ];
    for (label, argv) in programs {
        let (mut direct, mut unshare, mut sbx) = (Vec::new(), Vec::new(), Vec::new());
        let mut unshare_argv = vec!["unshare", "-Urmpfn"];
        unshare_argv.extend(&argv);
        let request = ExecRequest::new(argv.iter().copied());
        for _ in 0..options.runs {
            direct.push(time_ms(|| {
                assert!(spawn_status(&argv), "direct spawn of {argv:?} failed")
            }));
            unshare.push(time_ms(|| {
                assert!(spawn_status(&unshare_argv), "unshare of {argv:?} failed")
            }));
            let start = Instant::now();
            let result = episode.exec(&request).await?;
            sbx.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(result.success(), "sandboxed {argv:?} failed: {result:?}");
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (dm, um, sm) = (min(&direct), min(&unshare), min(&sbx));
        println!(
            "{:<22} {dm:>9.2} {um:>9.2} {sm:>9.2} {:>11.2}x {:>11.2}x",
            format!("{label} (min)"),
            sm / um,
            sm / dm
        );
        let (d, u, s) = (median(&mut direct), median(&mut unshare), median(&mut sbx));
        println!(
            "{label:<22} {d:>9.2} {u:>9.2} {s:>9.2} {:>11.2}x {:>11.2}x",
            s / u,
            s / d
        );
    }
    episode.destroy()?;

    if let Some(repo) = &options.repo {
        let files = count_files(repo);
        let snapshot = store.import_dir(repo, None)?;
        let (mut setup, mut teardown) = (Vec::new(), Vec::new());
        for _ in 0..options.episodes {
            let start = Instant::now();
            let ep = sandbox.create_episode(&snapshot)?;
            setup.push(start.elapsed().as_secs_f64() * 1e3);
            // One copy-up, as an agent's first edit would do.
            ep.write_file("atomskill-bench.txt", b"x", false)?;
            let start = Instant::now();
            ep.destroy()?;
            teardown.push(start.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "\nepisode over {} ({files} files), median of {} episodes (ms)",
            repo.display(),
            options.episodes
        );
        println!("set-up   {:>8.2}   (target <= 20)", median(&mut setup));
        println!("teardown {:>8.2}   (target <= 15)", median(&mut teardown));
    } else {
        println!("\n(no --repo given: episode set-up and teardown not measured)");
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}
