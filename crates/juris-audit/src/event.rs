//! The audit record: one fact, its place in the node's chain, and the hash
//! that seals its content and its link to the previous record.
//!
//! A record's line in a segment is the canonical JSON (see [`canonical`]) of
//! the whole record followed by `\n`. Its `hash` is the lower-case hex
//! SHA-256 of the canonical JSON of the record *without* the `hash` member;
//! `prev_hash` is the previous record's `hash` ([`GENESIS_HASH`] for seq 1).
//! Because `prev_hash` is inside what is hashed, editing any record breaks
//! the link from the record after it, even if the editor recomputes the
//! edited record's own hash.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use juris_types::StatementClass;
use juris_types::audit::{MaskAction, MaskingEvent};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::canonical::{self, sha256_hex};
use crate::{AuditError, Result};

/// `prev_hash` of the first record of a node's chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An instant in UTC with microsecond precision, written as RFC 3339 with
/// exactly six fractional digits and `Z` (`2025-06-01T12:00:00.000000Z`),
/// so that each instant has exactly one spelling inside hashed records.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z: the range that a
// four-digit year can spell.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

impl Timestamp {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub fn from_unix_micros(micros: i64) -> Result<Self> {
        if (MIN_MICROS..=MAX_MICROS).contains(&micros) {
            Ok(Timestamp(micros))
        } else {
            Err(AuditError::Timestamp(micros.to_string()))
        }
    }

    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// For adapters that read the clock (the node, the CLI); sub-microsecond
    /// precision is dropped.
    pub fn from_system_time(t: SystemTime) -> Result<Self> {
        let micros = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).ok(),
            Err(e) => i64::try_from(e.duration().as_micros()).ok().map(|m| -m),
        };
        micros
            .ok_or_else(|| AuditError::Timestamp(format!("{t:?}")))
            .and_then(Self::from_unix_micros)
    }

    /// Any RFC 3339 date-time (any offset, any number of fractional
    /// digits), converted to UTC and truncated to microseconds. For
    /// command-line input.
    pub fn parse(s: &str) -> Result<Self> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| AuditError::Timestamp(s.to_string()))?;
        let micros = t.unix_timestamp_nanos().div_euclid(1000);
        i64::try_from(micros)
            .map_err(|_| AuditError::Timestamp(s.to_string()))
            .and_then(Self::from_unix_micros)
            .map_err(|_| AuditError::Timestamp(s.to_string()))
    }

    /// Only the canonical spelling; used for stored records and seals.
    pub fn parse_canonical(s: &str) -> Result<Self> {
        let t = Self::parse(s)?;
        if t.to_string() == s {
            Ok(t)
        } else {
            Err(AuditError::Timestamp(s.to_string()))
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In range by construction, so the conversion cannot fail.
        let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000)
        else {
            return Err(fmt::Error);
        };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_canonical(&s).map_err(serde::de::Error::custom)
    }
}

/// What happened. Serialised as an object whose `type` member names the
/// variant. Session ids are 32 lower-case hex digits (the id's display
/// form): JSON numbers cannot carry 128 bits portably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    SessionStart(SessionStart),
    SessionEnd(SessionEnd),
    AuthSuccess(AuthSuccess),
    AuthFailure(AuthFailure),
    Statement(Statement),
    Masking(Masking),
    PolicyRefusal(PolicyRefusal),
    ConnectionRefusal(ConnectionRefusal),
    /// Part of a session's recording could not be written.
    RecordingLoss(RecordingLoss),
    /// A change to the region's control-plane state (access requests,
    /// grants, command approvals) that this node committed.
    Control(Control),
    /// Written by the writer itself when it reopens a chain the previous
    /// process did not close (a crash).
    Recovery(Recovered),
}

impl AuditEvent {
    /// The `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::SessionStart(_) => "session_start",
            AuditEvent::SessionEnd(_) => "session_end",
            AuditEvent::AuthSuccess(_) => "auth_success",
            AuditEvent::AuthFailure(_) => "auth_failure",
            AuditEvent::Statement(_) => "statement",
            AuditEvent::Masking(_) => "masking",
            AuditEvent::PolicyRefusal(_) => "policy_refusal",
            AuditEvent::ConnectionRefusal(_) => "connection_refusal",
            AuditEvent::RecordingLoss(_) => "recording_loss",
            AuditEvent::Control(_) => "control",
            AuditEvent::Recovery(_) => "recovery",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    pub session: String,
    /// Connection name the client asked for.
    pub connection: String,
    /// Client address as the node saw it (`ip:port`).
    pub client: String,
    /// `postgres`, later `ssh`, `kafka`, `kubernetes`.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub session: String,
    pub duration_us: u64,
    pub statements: u64,
    /// Why it ended: `client closed`, `grant expired`, `node shutdown`, …
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSuccess {
    pub session: String,
    /// Display name of the principal.
    pub principal: String,
    /// The token's `sub`.
    pub subject: String,
    pub groups: Vec<String>,
    pub connection: String,
    /// The access level granted for the session (`read`, `write`, `admin`).
    pub level: String,
    /// The role that gives that level.
    #[serde(default)]
    pub role: String,
    /// The just-in-time grant the session rides on (e.g. `g-7`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFailure {
    pub session: String,
    pub connection: String,
    pub client: String,
    /// Which check failed. Never the token or any part of it.
    pub reason: String,
}

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    Refused,
    Held,
}

impl Outcome {
    /// The name it is written with.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
            Outcome::Held => "held",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    // Shared, not copied: the data plane hands the session's id, the text
    // it already keeps for the statement and the cached fingerprint over
    // as they are (a busy node writes one of these per statement).
    pub session: Arc<str>,
    /// Statement text as the client sent it (bind values are not part of it).
    pub text: Arc<str>,
    pub class: StatementClass,
    /// Normalised form's hash: equal for statements that differ only in constants.
    pub fingerprint: Arc<str>,
    pub duration_us: u64,
    /// Rows returned or affected, when the server reported a count.
    pub rows: Option<u64>,
    pub outcome: Outcome,
    /// The SQLSTATE when the outcome is `error` or `refused`.
    pub sqlstate: Option<String>,
}

/// What masking did to one statement's output ([`MaskingEvent`] with the
/// session id spelled as hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Masking {
    pub session: String,
    pub principal: String,
    pub connection: String,
    pub statement: u64,
    pub actions: Vec<MaskAction>,
}

impl From<&MaskingEvent> for Masking {
    fn from(e: &MaskingEvent) -> Self {
        Masking {
            session: e.session.to_string(),
            principal: e.principal.clone(),
            connection: e.connection.clone(),
            statement: e.statement,
            actions: e.actions.clone(),
        }
    }
}

impl From<&MaskingEvent> for AuditEvent {
    fn from(e: &MaskingEvent) -> Self {
        AuditEvent::Masking(e.into())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRefusal {
    pub session: String,
    pub text: String,
    pub class: StatementClass,
    pub fingerprint: String,
    pub reason: String,
    pub sqlstate: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRefusal {
    pub session: String,
    pub connection: String,
    pub client: String,
    pub reason: String,
    /// The region that owns the connection, when the refusal is because it
    /// is another region's.
    pub owning_region: Option<String>,
}

/// A session's recording could not be written (the spool was full, or
/// its disk failed). A `strict` connection's session is refused or ended;
/// a `best_effort` one continues, and its recording marks the gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingLoss {
    pub session: String,
    pub connection: String,
    /// `strict` or `best_effort`.
    pub mode: String,
    pub reason: String,
    /// Whether the session was refused or ended because of it.
    pub session_ended: bool,
}

/// A chain was reopened after its writer stopped without closing it.
/// One state change of the region's control plane, as the state machine
/// reported it when this node's write committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// What changed: `access_requested`, `grant_created`, `grant_revoked`,
    /// `approval_requested`, `approval_decided`, `approval_consumed`, …
    pub action: String,
    /// The change as the state machine words it: ids, actors, times
    /// (Unix milliseconds of the leader's clock), reasons.
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// The unsealed segment found and sealed on reopen (`null` when the
    /// crash left only an empty or torn-only segment, which was removed).
    pub sealed_segment: Option<String>,
    /// The partial last line found at the end of that segment, if any.
    pub torn: Option<TornTail>,
}

/// Bytes of an append that never completed (the process died between
/// `write` and the end of `fsync`, so the record was never acknowledged).
/// They are moved aside, not deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornTail {
    /// Segment file the bytes were cut from.
    pub segment: String,
    /// Byte offset in that segment where they began.
    pub offset: u64,
    pub bytes: u64,
    pub sha256: String,
    /// File next to the segment that now holds them.
    pub saved_as: String,
}

/// One line of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the node's chain, from 1, without gaps.
    pub seq: u64,
    pub time: Timestamp,
    pub node: String,
    pub region: String,
    /// `hash` of the record with `seq - 1`; [`GENESIS_HASH`] for seq 1.
    pub prev_hash: String,
    pub event: AuditEvent,
    /// SHA-256 of the canonical JSON of this record without `hash`.
    pub hash: String,
}

impl AuditRecord {
    /// Build a record and compute its hash.
    pub fn new(
        seq: u64,
        time: Timestamp,
        node: &str,
        region: &str,
        prev_hash: &str,
        event: AuditEvent,
    ) -> Result<Self> {
        let mut record = AuditRecord {
            seq,
            time,
            node: node.to_string(),
            region: region.to_string(),
            prev_hash: prev_hash.to_string(),
            event,
            hash: String::new(),
        };
        record.hash = record.compute_hash()?;
        Ok(record)
    }

    /// Build a record and its line in a segment (with the trailing `\n`)
    /// in one pass: the writer's path. The canonical JSON is composed
    /// member by member, in the sorted key order (`event`, `hash`, `node`,
    /// `prev_hash`, `region`, `seq`, `time`), so the event is serialised
    /// once instead of twice, straight into canonical form
    /// ([`canonical::write_of`]): neither record nor event becomes a
    /// `serde_json::Value`. [`AuditRecord::compute_hash`] and
    /// [`AuditRecord::to_line`] stay the generic definitions; a test
    /// checks that both paths agree.
    pub fn new_with_line(
        seq: u64,
        time: Timestamp,
        node: &str,
        region: &str,
        prev_hash: &str,
        event: AuditEvent,
    ) -> Result<(Self, String)> {
        let mut line = String::new();
        let hash = LineWriter::default().write(
            &mut line,
            &LineFields {
                seq,
                time,
                node,
                region,
                prev_hash,
            },
            &event,
        )?;
        let record = AuditRecord {
            seq,
            time,
            node: node.to_string(),
            region: region.to_string(),
            prev_hash: prev_hash.to_string(),
            event,
            hash: hash.as_str().to_string(),
        };
        Ok((record, line))
    }

    /// The hash this record should carry.
    pub fn compute_hash(&self) -> Result<String> {
        let mut value = serde_json::to_value(self)?;
        if let Value::Object(map) = &mut value {
            map.remove("hash");
        }
        Ok(sha256_hex(canonical::to_string(&value).as_bytes()))
    }

    /// The record's line in a segment, with the trailing `\n`.
    pub fn to_line(&self) -> Result<String> {
        let mut line = canonical::to_string(&serde_json::to_value(self)?);
        line.push('\n');
        Ok(line)
    }
}

/// What one stored line says about itself once checked.
#[derive(Debug, Clone)]
pub(crate) struct LineCheck {
    /// `None` when the line is not a record at all.
    pub record: Option<AuditRecord>,
    /// Everything wrong with the line on its own (not its links).
    pub problems: Vec<String>,
}

/// Check one line (without its `\n`): it must be a record, be in canonical
/// form, and carry the hash of its content. The hash is recomputed from
/// the JSON as stored, not from the parsed struct, so members this version
/// does not know about are still covered.
pub(crate) fn check_line(line: &[u8]) -> LineCheck {
    let mut problems = Vec::new();
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return LineCheck {
                record: None,
                problems: vec![format!("not valid JSON ({e})")],
            };
        }
    };
    let record = match AuditRecord::deserialize(&value) {
        Ok(r) => r,
        Err(e) => {
            return LineCheck {
                record: None,
                problems: vec![format!("not an audit record ({e})")],
            };
        }
    };
    if canonical::to_string(&value).as_bytes() != line {
        problems.push("not in canonical form".to_string());
    }
    let mut unhashed = value;
    if let Value::Object(map) = &mut unhashed {
        map.remove("hash");
    }
    let computed = sha256_hex(canonical::to_string(&unhashed).as_bytes());
    if computed != record.hash {
        problems.push(format!(
            "hash {} does not match the record's content (computed {computed})",
            record.hash
        ));
    }
    if !canonical::is_hash(&record.prev_hash) {
        problems.push("prev_hash is not 64 lower-case hex digits".to_string());
    }
    LineCheck {
        record: Some(record),
        problems,
    }
}

/// A record's members other than its event and hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineFields<'a> {
    pub seq: u64,
    pub time: Timestamp,
    pub node: &'a str,
    pub region: &'a str,
    pub prev_hash: &'a str,
}

/// A record's hash, as the 64 hex digits it is written with.
#[derive(Clone, Copy)]
pub(crate) struct HexHash([u8; 64]);

impl HexHash {
    pub fn as_str(&self) -> &str {
        // `hex::encode_to_slice` writes ASCII digits only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The statement event's canonical JSON, member by member in sorted order.
/// A busy node writes one per statement, so it skips the generic
/// serializer's per-object buffers and sort; the bytes are the same as
/// [`canonical::write_of`]'s (tested over every class, outcome and
/// optional member).
fn write_statement(out: &mut String, s: &Statement) {
    use std::fmt::Write;
    out.push_str("{\"class\":");
    canonical::write_str(out, s.class.as_str());
    let _ = write!(out, ",\"duration_us\":{}", s.duration_us);
    out.push_str(",\"fingerprint\":");
    canonical::write_str(out, &s.fingerprint);
    out.push_str(",\"outcome\":");
    canonical::write_str(out, s.outcome.as_str());
    match s.rows {
        Some(rows) => {
            let _ = write!(out, ",\"rows\":{rows}");
        }
        None => out.push_str(",\"rows\":null"),
    }
    out.push_str(",\"session\":");
    canonical::write_str(out, &s.session);
    out.push_str(",\"sqlstate\":");
    match &s.sqlstate {
        Some(sqlstate) => canonical::write_str(out, sqlstate),
        None => out.push_str("null"),
    }
    out.push_str(",\"text\":");
    canonical::write_str(out, &s.text);
    out.push_str(",\"type\":\"statement\"}");
}

/// Writes records' lines with no allocation of its own once warm: the
/// tail is composed in a buffer kept between records, and the time's text
/// is reused while it does not change (the writer gives every record of
/// a group commit the same time). The line is exactly what
/// [`AuditRecord::to_line`] writes.
#[derive(Default)]
pub(crate) struct LineWriter {
    tail: String,
    time_text: Option<(Timestamp, String)>,
}

impl LineWriter {
    /// Append the record's line (with its `\n`) to `out`; returns its hash.
    /// On an error `out` may hold part of a line.
    pub fn write(
        &mut self,
        out: &mut String,
        fields: &LineFields<'_>,
        event: &AuditEvent,
    ) -> Result<HexHash> {
        use std::fmt::Write;
        let start = out.len();
        out.push_str("{\"event\":");
        match event {
            AuditEvent::Statement(statement) => write_statement(out, statement),
            other => canonical::write_of(out, other)?,
        }
        let tail = &mut self.tail;
        tail.clear();
        tail.push_str(",\"node\":");
        canonical::write_str(tail, fields.node);
        tail.push_str(",\"prev_hash\":");
        canonical::write_str(tail, fields.prev_hash);
        tail.push_str(",\"region\":");
        canonical::write_str(tail, fields.region);
        tail.push_str(",\"seq\":");
        let _ = write!(tail, "{}", fields.seq);
        tail.push_str(",\"time\":");
        let time_text = match &mut self.time_text {
            Some((time, text)) if *time == fields.time => text,
            cached => {
                let (_, text) = cached.insert((fields.time, String::new()));
                write!(text, "{}", fields.time)
                    .map_err(|_| AuditError::Timestamp(format!("{} µs", fields.time.0)))?;
                text
            }
        };
        canonical::write_str(tail, time_text);
        tail.push('}');
        let digest = {
            use sha2::Digest;
            let mut hasher = sha2::Sha256::new();
            hasher.update(&out.as_bytes()[start..]);
            hasher.update(tail.as_bytes());
            hasher.finalize()
        };
        let mut hash = HexHash([0; 64]);
        // 32 bytes always fill the 64 digits exactly.
        let _ = hex::encode_to_slice(digest, &mut hash.0);
        out.push_str(",\"hash\":\"");
        out.push_str(hash.as_str());
        out.push('"');
        out.push_str(tail);
        out.push('\n');
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(micros: i64) -> Timestamp {
        Timestamp::from_unix_micros(micros).unwrap()
    }

    #[test]
    fn timestamps_have_one_spelling() {
        assert_eq!(t(0).to_string(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            t(1_750_000_000_123_456).to_string(),
            "2025-06-15T15:06:40.123456Z"
        );
        assert_eq!(t(-1).to_string(), "1969-12-31T23:59:59.999999Z");
        let ts = Timestamp::parse("2025-06-15T17:06:40.1234567+02:00").unwrap();
        assert_eq!(ts, t(1_750_000_000_123_456));
        assert!(Timestamp::parse_canonical("2025-06-15T15:06:40.123456Z").is_ok());
        assert!(Timestamp::parse_canonical("2025-06-15T15:06:40.12Z").is_err());
        assert!(Timestamp::parse_canonical("2025-06-15T17:06:40.123456+02:00").is_err());
        assert!(Timestamp::from_unix_micros(MAX_MICROS + 1).is_err());
        assert_eq!(t(MIN_MICROS).to_string(), "0001-01-01T00:00:00.000000Z");
        assert_eq!(t(MAX_MICROS).to_string(), "9999-12-31T23:59:59.999999Z");
    }

    fn statement() -> AuditEvent {
        AuditEvent::Statement(Statement {
            session: format!("{:032x}", 7).into(),
            text: "SELECT 1".into(),
            class: StatementClass::Read,
            fingerprint: "abc".into(),
            duration_us: 12,
            rows: Some(1),
            outcome: Outcome::Ok,
            sqlstate: None,
        })
    }

    #[test]
    fn a_written_line_checks() {
        let r = AuditRecord::new(1, t(5), "n1", "eu-west", GENESIS_HASH, statement()).unwrap();
        let line = r.to_line().unwrap();
        assert!(line.ends_with('\n'));
        assert!(line.starts_with(r#"{"event":{"class":"read","duration_us":12,"#));
        let check = check_line(line.trim_end_matches('\n').as_bytes());
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        assert_eq!(check.record.unwrap(), r);
    }

    #[test]
    fn the_writers_one_pass_line_is_the_canonical_line() {
        let awkward = AuditEvent::Statement(Statement {
            text: "SELECT '\"x\"\\\n\t\u{1}é€😀'".into(),
            ..match statement() {
                AuditEvent::Statement(s) => s,
                _ => unreachable!(),
            }
        });
        let masking = AuditEvent::Masking((&masking_event()).into());
        let control = AuditEvent::Control(Control {
            action: "grant_created".into(),
            detail: serde_json::json!({"zeta": [1, {"b": null, "a": "x"}], "alpha": -3}),
        });
        let refusal = AuditEvent::ConnectionRefusal(ConnectionRefusal {
            session: "s".into(),
            connection: "c".into(),
            client: "127.0.0.1:1".into(),
            reason: "owned by another region".into(),
            owning_region: None,
        });
        for (seq, event, node, region) in [
            (1, statement(), "n1", "eu-west"),
            (42, awkward, "node \"q\"", "us-east"),
            (u64::MAX, statement(), "", ""),
            (2, masking, "n1", "eu-west"),
            (3, control, "n1", "eu-west"),
            (4, refusal, "n1", "eu-west"),
        ] {
            let slow =
                AuditRecord::new(seq, t(5), node, region, GENESIS_HASH, event.clone()).unwrap();
            let (fast, line) =
                AuditRecord::new_with_line(seq, t(5), node, region, GENESIS_HASH, event).unwrap();
            assert_eq!(fast, slow);
            assert_eq!(line, slow.to_line().unwrap());
            let check = check_line(line.trim_end_matches('\n').as_bytes());
            assert!(check.problems.is_empty(), "{:?}", check.problems);
        }
    }

    #[test]
    fn every_statement_shape_is_written_as_the_generic_serializer_writes_it() {
        use StatementClass::*;
        let mut seq = 1;
        for class in [Read, Session, Write, Ddl, Administration, Unparseable] {
            for outcome in [Outcome::Ok, Outcome::Error, Outcome::Refused, Outcome::Held] {
                for rows in [None, Some(0), Some(u64::MAX)] {
                    for sqlstate in [None, Some("42501".to_string()), Some("\"\\".into())] {
                        let event = AuditEvent::Statement(Statement {
                            session: format!("{seq:032x}").into(),
                            text: "SELECT $1 -- \u{7f}\u{2028}".into(),
                            class,
                            fingerprint: "".into(),
                            duration_us: seq * 1_000_003,
                            rows,
                            outcome,
                            sqlstate,
                        });
                        let mut fast = String::new();
                        LineWriter::default()
                            .write(
                                &mut fast,
                                &LineFields {
                                    seq,
                                    time: t(5),
                                    node: "n1",
                                    region: "eu-west",
                                    prev_hash: GENESIS_HASH,
                                },
                                &event,
                            )
                            .unwrap();
                        let slow =
                            AuditRecord::new(seq, t(5), "n1", "eu-west", GENESIS_HASH, event)
                                .unwrap();
                        assert_eq!(fast, slow.to_line().unwrap(), "{class:?} {outcome:?}");
                        seq += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn edits_and_reformatting_are_caught() {
        let r = AuditRecord::new(1, t(5), "n1", "eu-west", GENESIS_HASH, statement()).unwrap();
        let line = r.to_line().unwrap();
        let line = line.trim_end();
        let edited = line.replace("SELECT 1", "SELECT 2");
        assert!(check_line(edited.as_bytes()).problems[0].contains("does not match"));
        let spaced = line.replacen(",", ", ", 1);
        assert_eq!(
            check_line(spaced.as_bytes()).problems,
            vec!["not in canonical form"]
        );
        assert!(check_line(b"{\"seq\":1").record.is_none());
    }

    fn masking_event() -> MaskingEvent {
        MaskingEvent {
            session: juris_types::SessionId(u128::MAX),
            principal: "ada".into(),
            connection: "billing-eu".into(),
            statement: 3,
            actions: vec![MaskAction {
                column: "public.customers.ssn".into(),
                detector: "ssn".into(),
                strategy: "redact".into(),
                count: 2,
            }],
        }
    }

    #[test]
    fn masking_events_keep_their_content() {
        let e = masking_event();
        let r = AuditRecord::new(1, t(0), "n1", "eu", GENESIS_HASH, (&e).into()).unwrap();
        let line = r.to_line().unwrap();
        assert!(line.contains(r#""session":"ffffffffffffffffffffffffffffffff""#));
        assert!(line.contains(r#""type":"masking""#));
    }
}
