//! Helpers shared by this crate's unit tests.

use std::path::Path;

use juris_types::StatementClass;

use crate::event::{AuditEvent, Outcome, Statement, Timestamp};
use crate::key::NodeKey;
use crate::writer::{ChainWriter, WriterConfig};

pub(crate) fn key(seed: u8) -> NodeKey {
    NodeKey::from_seed([seed; 32])
}

/// 2025-06-01T00:00:00Z plus `secs`.
pub(crate) fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_micros((1_748_736_000 + secs) * 1_000_000).unwrap()
}

pub(crate) fn statement(i: u64) -> AuditEvent {
    AuditEvent::Statement(Statement {
        session: format!("{i:032x}").into(),
        text: format!("SELECT * FROM customers WHERE id = {i}").into(),
        class: StatementClass::Read,
        fingerprint: "9f1c".into(),
        duration_us: 100 + i,
        rows: Some(1),
        outcome: Outcome::Ok,
        sqlstate: None,
    })
}

pub(crate) fn config(dir: &Path, node: &str, region: &str, per_segment: u64) -> WriterConfig {
    let mut config = WriterConfig::new(dir, node, region);
    config.max_segment_records = per_segment;
    config
}

/// Append `count` statements at one per second starting at `from_secs`.
pub(crate) fn append(writer: &mut ChainWriter, from_secs: i64, count: u64) {
    for i in 0..count {
        let seq = writer.next_seq();
        writer
            .append(t(from_secs + i as i64), statement(seq))
            .unwrap();
    }
}

/// A closed chain of `count` records, `per_segment` records per segment,
/// record i at second i.
pub(crate) fn write_chain(
    dir: &Path,
    node: &str,
    region: &str,
    seed: u8,
    count: u64,
    per_segment: u64,
) {
    let (mut writer, _) =
        ChainWriter::open(config(dir, node, region, per_segment), key(seed), t(0)).unwrap();
    append(&mut writer, 0, count);
    writer.close().unwrap();
}
