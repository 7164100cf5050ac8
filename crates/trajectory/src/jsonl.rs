//! Versioned JSON-lines files of records (trajectories, results): one file per run, append-only.
//!
//! Each record is one line, written with one `write` call, so a crash of the process loses at
//! most the records not yet handed to the writer; `fsync` runs every `sync_every_records`
//! records or `sync_interval`, bounding what a crash of the machine can lose. Every line carries
//! `schema_version`. The reader tolerates (and reports) a truncated last line, and opening a
//! file to append cuts such a line off first. The writer is owned by one thread; async code
//! sends it records through a [`RecordSink`].

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// The version of the record layout written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// When written records are forced to disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    pub sync_every_records: usize,
    #[serde(with = "crate::serde_seconds")]
    pub sync_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> WriterConfig {
        WriterConfig {
            sync_every_records: 64,
            sync_interval: Duration::from_secs(5),
        }
    }
}

/// A partial last line: what a crash in the middle of a write leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncatedTail {
    /// 1-based line number.
    pub line: usize,
    pub bytes: usize,
}

pub struct JsonlWriter {
    file: File,
    path: PathBuf,
    config: WriterConfig,
    unsynced: usize,
    last_sync: Instant,
}

impl JsonlWriter {
    /// Opens `path` for appending, creating it if needed. A partial last line left by a crash
    /// is cut off and reported.
    pub fn open(path: &Path, config: WriterConfig) -> Result<(JsonlWriter, Option<TruncatedTail>)> {
        let io = |context: &str| {
            let context = format!("{context} {}", path.display());
            move |source| Error::Io { context, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io("opening"))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).map_err(io("reading"))?;
        let mut truncated = None;
        if !contents.is_empty() && !contents.ends_with(b"\n") {
            let keep = contents
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            truncated = Some(TruncatedTail {
                line: contents[..keep].iter().filter(|&&b| b == b'\n').count() + 1,
                bytes: contents.len() - keep,
            });
            file.set_len(keep as u64).map_err(io("truncating"))?;
            file.sync_data().map_err(io("syncing"))?;
            tracing::warn!(path = %path.display(), ?truncated, "cut off a partial last line");
        }
        file.seek(SeekFrom::End(0)).map_err(io("seeking"))?;
        Ok((
            JsonlWriter {
                file,
                path: path.to_path_buf(),
                config,
                unsynced: 0,
                last_sync: Instant::now(),
            },
            truncated,
        ))
    }

    /// One line: `{"schema_version": N, ...the record's fields}`. The record must serialize
    /// to a JSON object.
    pub fn line<T: Serialize>(record: &T) -> Result<Vec<u8>> {
        let value = serde_json::to_value(record).map_err(Error::Serialize)?;
        let Value::Object(fields) = &value else {
            return Err(Error::Config {
                message: "a JSONL record must serialize to a JSON object".into(),
            });
        };
        if fields.contains_key("schema_version") {
            return Err(Error::Config {
                message: "a JSONL record must not have its own `schema_version` field".into(),
            });
        }
        // The version goes first, so that a reader (or a person) sees it before anything else.
        let body = serde_json::to_vec(&value).map_err(Error::Serialize)?;
        let mut line = format!("{{\"schema_version\":{SCHEMA_VERSION}").into_bytes();
        if fields.is_empty() {
            line.push(b'}');
        } else {
            line.push(b',');
            line.extend_from_slice(&body[1..]);
        }
        line.push(b'\n');
        Ok(line)
    }

    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = JsonlWriter::line(record)?;
        self.append_line(&line)
    }

    /// Appends a line made by [`JsonlWriter::line`].
    pub fn append_line(&mut self, line: &[u8]) -> Result<()> {
        self.file.write_all(line).map_err(|source| Error::Io {
            context: format!("appending to {}", self.path.display()),
            source,
        })?;
        self.unsynced += 1;
        if self.unsynced >= self.config.sync_every_records
            || self.last_sync.elapsed() >= self.config.sync_interval
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Forces written records to disk.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced > 0 {
            self.file.sync_data().map_err(|source| Error::Io {
                context: format!("syncing {}", self.path.display()),
                source,
            })?;
        }
        self.unsynced = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Moves the writer to a thread of its own; records are sent to it through the sink.
    pub fn spawn(self) -> RecordSink {
        let (sender, mut receiver) = mpsc::channel::<Command>(256);
        let thread = std::thread::Builder::new()
            .name("jsonl-writer".into())
            .spawn(move || {
                let mut writer = self;
                while let Some(command) = receiver.blocking_recv() {
                    match command {
                        Command::Append(line, reply) => {
                            let _ = reply.send(writer.append_line(&line));
                        }
                        Command::Sync(reply) => {
                            let _ = reply.send(writer.sync());
                        }
                    }
                }
                writer.sync()
            });
        match thread {
            Ok(thread) => RecordSink {
                sender,
                thread: Some(thread),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the JSONL writer thread");
                RecordSink {
                    sender,
                    thread: None,
                }
            }
        }
    }
}

impl Drop for JsonlWriter {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

enum Command {
    Append(Vec<u8>, oneshot::Sender<Result<()>>),
    Sync(oneshot::Sender<Result<()>>),
}

/// Sends records to a writer thread; cheap to share behind an `Arc`.
pub struct RecordSink {
    sender: mpsc::Sender<Command>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

fn closed() -> Error {
    Error::WriterClosed {
        message: "its thread has ended".into(),
    }
}

impl RecordSink {
    /// Appends a record; returns once it is written (not necessarily synced).
    pub async fn append<T: Serialize>(&self, record: &T) -> Result<()> {
        let line = JsonlWriter::line(record)?;
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Command::Append(line, reply))
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    pub async fn sync(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Command::Sync(reply))
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Syncs and stops the writer thread.
    pub fn close(mut self) -> Result<()> {
        let thread = self.thread.take();
        drop(self);
        match thread {
            Some(thread) => thread.join().map_err(|_| Error::WriterClosed {
                message: "its thread panicked".into(),
            })?,
            None => Err(closed()),
        }
    }
}

/// The records of a file, and a partial last line if a crash left one.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadReport<T> {
    pub records: Vec<T>,
    pub truncated_tail: Option<TruncatedTail>,
}

/// Reads every record of `path`. A malformed line other than a partial last line is an error;
/// so is a schema version this build does not read.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<ReadReport<T>> {
    read_with(path, |mut value, corrupt, line| {
        let version = value
            .as_object_mut()
            .and_then(|o| o.remove("schema_version"))
            .and_then(|v| v.as_u64());
        match version {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(Error::SchemaVersion {
                    path: path.to_path_buf(),
                    line,
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
            None => return Err(corrupt("no `schema_version` field".into())),
        }
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    })
}

/// Reads every line of `path` as a `T`, for files whose records carry no envelope of this
/// module (they may version themselves). Strict as [`read_jsonl`]: a malformed line other than a
/// partial last line is an error naming the file and line. A missing file is an error too; use
/// [`read_lines_if_exists`] where absence means "nothing yet".
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<ReadReport<T>> {
    read_with(path, |value, corrupt, _| {
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    })
}

/// [`read_lines`], with `check` run on every record: a record it refuses is an error naming its
/// line, with `check`'s message.
pub fn read_lines_checked<T: DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> std::result::Result<(), String>,
) -> Result<ReadReport<T>> {
    read_with(path, |value, corrupt, _| {
        let record = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        check(&record).map_err(corrupt)?;
        Ok(record)
    })
}

/// [`read_lines`], with a missing file read as an empty one.
pub fn read_lines_if_exists<T: DeserializeOwned>(path: &Path) -> Result<ReadReport<T>> {
    if !path.exists() {
        return Ok(ReadReport {
            records: Vec::new(),
            truncated_tail: None,
        });
    }
    read_lines(path)
}

fn read_with<T>(
    path: &Path,
    decode: impl Fn(Value, &dyn Fn(String) -> Error, usize) -> Result<T>,
) -> Result<ReadReport<T>> {
    let file = File::open(path).map_err(|source| Error::Io {
        context: format!("opening {}", path.display()),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut truncated_tail = None;
    let mut buffer = Vec::new();
    let mut line_number = 0;
    loop {
        buffer.clear();
        let n = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|source| Error::Io {
                context: format!("reading {}", path.display()),
                source,
            })?;
        if n == 0 {
            break;
        }
        line_number += 1;
        let complete = buffer.ends_with(b"\n");
        let corrupt = |message: String| Error::Corrupt {
            path: path.to_path_buf(),
            line: line_number,
            message,
        };
        if buffer.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: Value = match serde_json::from_slice(&buffer) {
            Ok(value) => value,
            Err(_) if !complete => {
                truncated_tail = Some(TruncatedTail {
                    line: line_number,
                    bytes: buffer.len(),
                });
                break;
            }
            Err(e) => return Err(corrupt(e.to_string())),
        };
        records.push(decode(value, &corrupt, line_number)?);
    }
    Ok(ReadReport {
        records,
        truncated_tail,
    })
}
