//! The JSON-lines store: round trips, the schema version, a partial last line after a crash
//! (reported by the reader, cut off by the next writer), corrupt lines, batched syncs and the
//! async sink.

use std::path::Path;

use serde::{Deserialize, Serialize};
use trajectory::{read_jsonl, Error, JsonlWriter, RecordSink, TruncatedTail, WriterConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    episode: u32,
    text: String,
}

fn record(episode: u32) -> Record {
    Record {
        episode,
        text: format!("line {episode}\nwith \"quotes\""),
    }
}

fn append_raw(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn records_round_trip_with_a_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs/run-1.jsonl");
    let (mut writer, truncated) = JsonlWriter::open(&path, WriterConfig::default()).unwrap();
    assert_eq!(truncated, None);
    for i in 0..3 {
        writer.append(&record(i)).unwrap();
    }
    drop(writer);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("{\"schema_version\":1,\"episode\":0,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3);
    let report = read_jsonl::<Record>(&path).unwrap();
    assert_eq!(report.records, (0..3).map(record).collect::<Vec<_>>());
    assert_eq!(report.truncated_tail, None);

    // Appending continues the same file.
    let (mut writer, _) = JsonlWriter::open(&path, WriterConfig::default()).unwrap();
    writer.append(&record(3)).unwrap();
    drop(writer);
    assert_eq!(read_jsonl::<Record>(&path).unwrap().records.len(), 4);
    assert!(matches!(JsonlWriter::line(&42), Err(Error::Config { .. })));
}

#[test]
fn a_truncated_last_line_is_reported_then_cut_off_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let (mut writer, _) = JsonlWriter::open(&path, WriterConfig::default()).unwrap();
    writer.append(&record(0)).unwrap();
    writer.append(&record(1)).unwrap();
    drop(writer);
    // A crash in the middle of writing the third record.
    let partial = &JsonlWriter::line(&record(2)).unwrap()[..20];
    append_raw(&path, partial);
    let report = read_jsonl::<Record>(&path).unwrap();
    assert_eq!(report.records, vec![record(0), record(1)]);
    assert_eq!(
        report.truncated_tail,
        Some(TruncatedTail { line: 3, bytes: 20 })
    );

    let (mut writer, truncated) = JsonlWriter::open(&path, WriterConfig::default()).unwrap();
    assert_eq!(truncated, Some(TruncatedTail { line: 3, bytes: 20 }));
    writer.append(&record(2)).unwrap();
    drop(writer);
    let report = read_jsonl::<Record>(&path).unwrap();
    assert_eq!(report.records, (0..3).map(record).collect::<Vec<_>>());
    assert_eq!(report.truncated_tail, None);
}

#[test]
fn corrupt_lines_and_unknown_versions_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    std::fs::write(
        &path,
        "{\"schema_version\":1,\"episode\":0,\"text\":\"a\"}\nnot json\n",
    )
    .unwrap();
    let error = read_jsonl::<Record>(&path).unwrap_err();
    assert!(matches!(error, Error::Corrupt { line: 2, .. }), "{error}");

    std::fs::write(
        &path,
        "{\"schema_version\":99,\"episode\":0,\"text\":\"a\"}\n",
    )
    .unwrap();
    let error = read_jsonl::<Record>(&path).unwrap_err();
    assert!(
        matches!(
            error,
            Error::SchemaVersion {
                found: 99,
                line: 1,
                ..
            }
        ),
        "{error}"
    );

    std::fs::write(&path, "{\"episode\":0,\"text\":\"a\"}\n").unwrap();
    assert!(matches!(
        read_jsonl::<Record>(&path),
        Err(Error::Corrupt { .. })
    ));

    std::fs::write(
        &path,
        "{\"schema_version\":1,\"episode\":\"zero\",\"text\":\"a\"}\n",
    )
    .unwrap();
    assert!(matches!(
        read_jsonl::<Record>(&path),
        Err(Error::Corrupt { .. })
    ));

    // Blank lines are skipped; a complete last line without its newline is accepted.
    std::fs::write(
        &path,
        "\n{\"schema_version\":1,\"episode\":0,\"text\":\"a\"}",
    )
    .unwrap();
    let report = read_jsonl::<Record>(&path).unwrap();
    assert_eq!(report.records.len(), 1);
    assert_eq!(report.truncated_tail, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_episodes_write_through_one_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let config = WriterConfig {
        sync_every_records: 8,
        ..WriterConfig::default()
    };
    let (writer, _) = JsonlWriter::open(&path, config).unwrap();
    let sink: std::sync::Arc<RecordSink> = std::sync::Arc::new(writer.spawn());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.append(&record(i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    sink.sync().await.unwrap();
    std::sync::Arc::try_unwrap(sink)
        .ok()
        .expect("the last handle")
        .close()
        .unwrap();
    let mut episodes: Vec<u32> = read_jsonl::<Record>(&path)
        .unwrap()
        .records
        .iter()
        .map(|r| r.episode)
        .collect();
    episodes.sort();
    assert_eq!(episodes, (0..50).collect::<Vec<_>>());
}
