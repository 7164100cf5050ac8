//! Tiny checkpoints made once per test binary with `model::init`.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use model::init::{init_checkpoint, InitOptions, Size};
use model::Arch;

pub const SEED: u64 = 7;

/// The temporary directory holding this binary's checkpoints.
fn root() -> &'static tempfile::TempDir {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().unwrap())
}

/// A tiny checkpoint of `arch`, seed [`SEED`], made once and shared by the tests of one binary.
pub fn tiny(arch: Arch) -> PathBuf {
    static MADE: Mutex<Vec<Arch>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = root().path().join(arch.name());
    if !made.contains(&arch) {
        init_checkpoint(
            &InitOptions {
                arch,
                size: Size::Tiny,
                seed: SEED,
                corpus: None,
            },
            &dir,
        )
        .unwrap();
        made.push(arch);
    }
    dir
}
