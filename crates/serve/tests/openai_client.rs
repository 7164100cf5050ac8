//! The server as the official `openai` Python client sees it: `openai_client.py` runs against a
//! server on a tiny seeded checkpoint. Needs `ATOMSKILL_TEST_VENV`, a virtualenv with `openai`
//! installed (`scripts/test` makes it).

use std::net::SocketAddr;
use std::process::Command;

use model::init::{init_checkpoint, InitOptions, Size};
use model::{Arch, DType};

#[test]
fn the_openai_python_client_works_against_the_server() {
    let venv = std::env::var("ATOMSKILL_TEST_VENV").expect(
        "ATOMSKILL_TEST_VENV must name a virtualenv with the `openai` package (scripts/test sets it up)",
    );
    let python = std::path::Path::new(&venv).join("bin/python");
    let has_openai = Command::new(&python)
        .args(["-c", "import openai"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        has_openai,
        "{} cannot import openai; run scripts/test",
        python.display()
    );

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tiny-qwen2");
    init_checkpoint(
        &InitOptions {
            arch: Arch::Qwen2,
            size: Size::Tiny,
            seed: 1,
            corpus: None,
        },
        &dir,
    )
    .unwrap();
    let options = serve::ServeOptions {
        model_dir: dir,
        model_name: None,
        dtype: DType::F32,
        device: model::Device::Cpu,
        max_batch: 16,
        seed: 0,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<SocketAddr>();
    runtime.spawn(async move {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        if let Err(e) = serve::serve(&options, addr, |bound| {
            let _ = ready_tx.send(bound);
        })
        .await
        {
            panic!("server failed: {e}");
        }
    });
    let bound = ready_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the server did not start");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(format!("http://{bound}/v1"))
        .arg("tiny-qwen2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
