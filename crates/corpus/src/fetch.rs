//! Downloading a pinned source archive and unpacking it into the cache.
//!
//! An archive is used only after its sha256 matched the manifest. Unpacking accepts regular files
//! and directories with relative paths that stay inside the destination; links, devices and
//! `..` are refused. Every unpacked file gets a fresh mtime, so build tools that decide
//! staleness by mtime (cargo) never mistake a restored file for an old one.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fetches `url` into `dest` unless a file with the expected sha256 is already there.
pub fn fetch_archive(url: &str, expected_sha256: &str, dest: &Path) -> Result<()> {
    if let Ok(bytes) = std::fs::read(dest) {
        if sha256_hex(&bytes) == expected_sha256 {
            return Ok(());
        }
    }
    let bytes = match url.strip_prefix("file://") {
        // A detected project's sdist, already downloaded by pip.
        Some(path) => std::fs::read(path).map_err(|e| Error::io(path, e))?,
        None => download(url)?,
    };
    let actual = sha256_hex(&bytes);
    if actual != expected_sha256 {
        return Err(Error::Checksum {
            archive: url.to_string(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    write_atomically(dest, &bytes)
}

/// One HTTP GET with a few retries on transient failures.
pub fn download(url: &str) -> Result<Vec<u8>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .user_agent(concat!("atomskill/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Download {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
        }
        match client.get(url).send() {
            Ok(response) if response.status().is_success() => {
                return response
                    .bytes()
                    .map(|b| b.to_vec())
                    .map_err(|e| Error::Download {
                        url: url.to_string(),
                        message: e.to_string(),
                    });
            }
            Ok(response) if response.status().is_client_error() => {
                return Err(Error::Download {
                    url: url.to_string(),
                    message: format!("HTTP {}", response.status()),
                });
            }
            Ok(response) => last = format!("HTTP {}", response.status()),
            Err(error) => last = error.to_string(),
        }
    }
    Err(Error::Download {
        url: url.to_string(),
        message: last,
    })
}

/// Writes `bytes` to `dest` through a temporary sibling and a rename, so a reader never sees a
/// half-written file.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> Result<()> {
    trajectory::write_atomic(dest, bytes).map_err(|e| Error::io(dest, e))
}

/// What an unpack left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    pub files: usize,
    pub skipped_links: Vec<String>,
}

/// Unpacks a `.tar.gz` (sdist or `.crate`) into `dest`, which must not exist yet; it is created
/// through a temporary sibling and renamed into place, so an interrupted unpack leaves nothing.
pub fn unpack_tar_gz(archive: &Path, dest: &Path) -> Result<UnpackReport> {
    let name = archive.display().to_string();
    let unpack_error = |message: String| Error::Unpack {
        archive: name.clone(),
        message,
    };
    let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let staging = dest.with_extension("unpacking");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut report = UnpackReport::default();
    let entries = tar.entries().map_err(|e| unpack_error(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| unpack_error(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| unpack_error(e.to_string()))?
            .into_owned();
        let relative = safe_relative(&path).ok_or_else(|| {
            unpack_error(format!(
                "member `{}` leaves the destination",
                path.display()
            ))
        })?;
        let target = staging.join(&relative);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| unpack_error(format!("{}: {e}", path.display())))?;
            std::fs::write(&target, &bytes).map_err(|e| Error::io(&target, e))?;
            let mode = entry.header().mode().unwrap_or(0o644);
            let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(&target, e))?;
            report.files += 1;
        } else if kind.is_symlink() || kind.is_hard_link() {
            report.skipped_links.push(relative.display().to_string());
        }
        // PAX headers and other metadata entries carry no files.
    }
    std::fs::rename(&staging, dest).map_err(|e| Error::io(dest, e))?;
    Ok(report)
}

fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1);
            // set_path refuses `..`, so write the raw name to build hostile archives.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        if let Some((path, target)) = link {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, path, target).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn unpack_accepts_files_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(
            &archive,
            tar_gz(
                &[("p-1/src/a.py", b"x = 1\n"), ("p-1/README", b"hi")],
                Some(("p-1/l", "/etc/passwd")),
            ),
        )
        .unwrap();
        let dest = dir.path().join("out");
        let report = unpack_tar_gz(&archive, &dest).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.skipped_links, vec!["p-1/l".to_string()]);
        assert_eq!(
            std::fs::read(dest.join("p-1/src/a.py")).unwrap(),
            b"x = 1\n"
        );
        assert!(!dest.join("p-1/l").exists());
        // Fresh mtimes, not the archive's (1970).
        let mtime = std::fs::metadata(dest.join("p-1/README"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(
            mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                > 1_000_000_000
        );
    }

    #[test]
    fn unpack_refuses_escapes() {
        for hostile in ["../evil", "p/../../evil", "/etc/evil"] {
            let dir = tempfile::tempdir().unwrap();
            let archive = dir.path().join("a.tar.gz");
            std::fs::write(&archive, tar_gz(&[(hostile, b"x")], None)).unwrap();
            let error = unpack_tar_gz(&archive, &dir.path().join("out")).unwrap_err();
            assert!(
                error.to_string().contains("leaves the destination"),
                "{hostile}: {error}"
            );
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn sha256_of_known_text() {
        // sha256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
