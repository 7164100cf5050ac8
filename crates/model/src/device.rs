//! The device a flag or a config names (`cpu`, `cuda` or `cuda:N`), parsed and opened in one place
//! for every command.
//!
//! A `cuda` build opens the CUDA libraries when the first device is created, not at start (see
//! `scripts/build-cuda`), so the same binary runs on CPU machines. Where a library is missing,
//! cudarc would panic; opening a device here first checks that each library it needs can be
//! loaded and returns an [`Error::Device`] that names the missing one instead. This module never
//! reads environment variables (the dynamic loader does, for `LD_LIBRARY_PATH`).

use candle_core::Device;

use crate::error::{Error, Result};

/// A parsed device name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceName {
    Cpu,
    /// A CUDA GPU by ordinal; `cuda` is `cuda:0`.
    Cuda(usize),
}

impl DeviceName {
    /// `None` for anything but `cpu`, `cuda` and `cuda:N`.
    pub fn parse(name: &str) -> Option<DeviceName> {
        match name {
            "cpu" => Some(DeviceName::Cpu),
            "cuda" => Some(DeviceName::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceName::Cuda),
        }
    }
}

/// Opens the device `name` names, with an error that says what to do when it cannot be opened.
pub fn open_device(name: &str) -> Result<Device> {
    let device_error = |message: String| Error::Device {
        name: name.to_string(),
        message,
    };
    match DeviceName::parse(name) {
        Some(DeviceName::Cpu) => Ok(Device::Cpu),
        Some(DeviceName::Cuda(ordinal)) => open_cuda(ordinal).map_err(device_error),
        None => Err(device_error(
            "unknown device (expected cpu, cuda or cuda:N)".to_string(),
        )),
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> std::result::Result<Device, String> {
    Err(
        "this atomskill was built without CUDA support; build one with scripts/build-cuda \
         (the `cuda` feature), or use --device cpu"
            .to_string(),
    )
}

/// The libraries cudarc opens when candle creates a CUDA device (the driver, cuBLAS, which
/// itself needs cuBLASLt, and cuRAND), each with the file name a person would look for.
#[cfg(feature = "cuda")]
const CUDA_LIBRARIES: [(&str, &str, &str); 3] = [
    ("cuda", "the NVIDIA driver", "libcuda.so.1"),
    ("cublas", "cuBLAS", "libcublas.so.13"),
    ("curand", "cuRAND", "libcurand.so.10"),
];

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> std::result::Result<Device, String> {
    for (stem, what, file) in CUDA_LIBRARIES {
        if let Err(load_error) = load_any(stem, file) {
            let hint = if stem == "cuda" {
                "this machine has no NVIDIA GPU driver; use --device cpu here, or run on a \
                 machine with a GPU"
            } else {
                "put the directory that holds it on LD_LIBRARY_PATH (the atomskill-cuda script \
                 beside a scripts/build-cuda binary does this)"
            };
            return Err(format!("cannot load {what} ({file}): {load_error}; {hint}"));
        }
    }
    // The libraries load, so cudarc should not panic; should it all the same (a symbol missing
    // from an old driver, say), the panic becomes this error rather than an abort.
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(format!("cannot open CUDA device {ordinal}: {e}")),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            Err(format!("cannot open CUDA device {ordinal}: {message}"))
        }
    }
}

/// Loads `file` or else the first of the other names cudarc tries for `stem` on Linux
/// (`lib{stem}.so` and its versioned names, CUDA 13 first), or returns the loader's error for
/// `file`.
#[cfg(feature = "cuda")]
fn load_any(stem: &str, file: &str) -> std::result::Result<(), String> {
    let names = [
        file.to_string(),
        format!("lib{stem}.so"),
        format!("lib{stem}.so.13"),
        format!("lib{stem}.so.12"),
        format!("lib{stem}.so.11"),
        format!("lib{stem}.so.10"),
        format!("lib{stem}.so.9"),
        format!("lib{stem}.so.1"),
    ];
    let mut first_error = None;
    for name in &names {
        // SAFETY: these are NVIDIA's own libraries, which cudarc loads the same way right after;
        // their initialisers have no preconditions.
        match unsafe { libloading::Library::new(name) } {
            Ok(_library) => return Ok(()),
            Err(e) => {
                // libloading's message is "dlopen failed"; the loader's own is its source.
                first_error.get_or_insert_with(|| match std::error::Error::source(&e) {
                    Some(source) => source.to_string(),
                    None => e.to_string(),
                });
            }
        }
    }
    Err(first_error.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_parse(name: &str, expected: Option<DeviceName>) {
        assert_eq!(DeviceName::parse(name), expected, "parsing {name:?}");
    }

    #[test]
    fn parses_device_names() {
        check_parse("cpu", Some(DeviceName::Cpu));
        check_parse("cuda", Some(DeviceName::Cuda(0)));
        check_parse("cuda:3", Some(DeviceName::Cuda(3)));
        check_parse("cuda:", None);
        check_parse("cuda:x", None);
        check_parse("gpu", None);
        check_parse("", None);
    }

    fn check_open_error(name: &str, expected_start: &str) {
        match open_device(name) {
            Ok(device) => panic!("{name}: expected an error, opened {device:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.starts_with(expected_start),
                    "{name}: {text:?} does not start with {expected_start:?}"
                );
            }
        }
    }

    #[test]
    fn opens_the_cpu_and_names_bad_devices() {
        assert!(open_device("cpu").unwrap().is_cpu());
        check_open_error(
            "tpu",
            "device tpu: unknown device (expected cpu, cuda or cuda:N)",
        );
    }

    /// Without the `cuda` feature, asking for a GPU says how to get a build that has one.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_build_without_cuda_says_so() {
        check_open_error(
            "cuda:1",
            "device cuda:1: this atomskill was built without CUDA support",
        );
    }
}
