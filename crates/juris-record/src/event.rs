//! The recorded events, in PostgreSQL's terms rather than as raw frames,
//! so that a replay can show statements, rows and errors without a
//! protocol decoder and an auditor can read a chunk with any JSON tool.
//!
//! Values are recorded as the client saw them: the data plane records
//! after masking, so a recording never holds a value the client was not
//! allowed to see. One event is one JSON object on one line (see
//! `docs/formats/recording.md`); the enum's externally tagged serde form
//! is that format, so renaming a variant or field is a format change.

use serde::{Deserialize, Serialize};

/// Which way the message went, or `Meta` for facts the node adds itself
/// (session start and end, gaps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
    Meta,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordEvent {
    /// 1 for the session's first event, then +1 per event without holes;
    /// lost events are accounted for by a [`EventKind::Gap`].
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Monotonic microseconds since the session started (never goes back,
    /// unlike `at_ms`).
    pub elapsed_us: u64,
    pub direction: Direction,
    pub kind: EventKind,
}

/// Who the session belongs to, as the node established it from a
/// validated token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedPrincipal {
    pub issuer: String,
    pub subject: String,
    /// Display name, else the subject.
    pub name: String,
    pub groups: Vec<String>,
}

impl From<&juris_types::Principal> for RecordedPrincipal {
    fn from(principal: &juris_types::Principal) -> Self {
        RecordedPrincipal {
            issuer: principal.issuer.clone(),
            subject: principal.subject.clone(),
            name: principal.name().to_string(),
            groups: principal.groups.clone(),
        }
    }
}

/// A column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// What happened. Every variant is a struct variant so that the JSON form
/// is uniformly `{"<kind>": {…fields…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EventKind {
    /// Always the first event (seq 1) of a recording.
    SessionStart {
        session_id: String,
        principal: RecordedPrincipal,
        connection: String,
        node: String,
        region: String,
        client_addr: Option<String>,
    },
    /// A simple-protocol query (`Q`).
    Query {
        text: String,
    },
    /// Extended protocol: prepare `text` as `statement` ("" = unnamed).
    Parse {
        statement: String,
        text: String,
    },
    /// Extended protocol: bind parameters (already masked, or null).
    Bind {
        portal: String,
        statement: String,
        params: Vec<Option<String>>,
    },
    /// Extended protocol: run a portal (`max_rows` 0 = all).
    Execute {
        portal: String,
        max_rows: u32,
    },
    RowDescription {
        columns: Vec<Column>,
    },
    /// One row as the client saw it (after masking); null is `None`.
    DataRow {
        values: Vec<Option<String>>,
    },
    CommandComplete {
        tag: String,
    },
    Error {
        sqlstate: String,
        message: String,
    },
    Notice {
        sqlstate: String,
        message: String,
    },
    /// COPY data as text (lossy UTF-8 for non-text formats).
    CopyData {
        text: String,
    },
    /// Events that could not be recorded (best-effort mode, an oversized
    /// event, a torn line dropped in crash recovery).
    Gap {
        reason: String,
        lost_events: u64,
    },
    /// Always the last event of a finished recording.
    SessionEnd {
        reason: String,
    },
    /// Any other message, base64 of its bytes.
    Raw {
        bytes_b64: String,
    },
}

impl EventKind {
    /// The name of the variant as it appears in the JSON form.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::SessionStart { .. } => "session_start",
            EventKind::Query { .. } => "query",
            EventKind::Parse { .. } => "parse",
            EventKind::Bind { .. } => "bind",
            EventKind::Execute { .. } => "execute",
            EventKind::RowDescription { .. } => "row_description",
            EventKind::DataRow { .. } => "data_row",
            EventKind::CommandComplete { .. } => "command_complete",
            EventKind::Error { .. } => "error",
            EventKind::Notice { .. } => "notice",
            EventKind::CopyData { .. } => "copy_data",
            EventKind::Gap { .. } => "gap",
            EventKind::SessionEnd { .. } => "session_end",
            EventKind::Raw { .. } => "raw",
        }
    }

    /// A raw message from its bytes.
    pub fn raw(bytes: &[u8]) -> Self {
        use base64::Engine as _;
        EventKind::Raw {
            bytes_b64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// What the node knows about a session when it starts recording it; the
/// first event and the manifest are built from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionInfo {
    /// 32 lower-case hex digits ([`juris_types::SessionId`]'s `Display`).
    pub session_id: String,
    pub principal: RecordedPrincipal,
    pub connection: String,
    /// The connection's region: where the recording must be stored.
    pub region: String,
    pub client_addr: Option<String>,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

impl SessionInfo {
    pub fn new(
        session_id: juris_types::SessionId,
        principal: &juris_types::Principal,
        connection: &str,
        region: &str,
        client_addr: Option<std::net::SocketAddr>,
        started_at_ms: u64,
    ) -> Self {
        SessionInfo {
            session_id: session_id.to_string(),
            principal: principal.into(),
            connection: connection.to_string(),
            region: region.to_string(),
            client_addr: client_addr.map(|a| a.to_string()),
            started_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_is_the_documented_one() {
        let event = RecordEvent {
            seq: 7,
            at_ms: 1_700_000_000_123,
            elapsed_us: 42,
            direction: Direction::ServerToClient,
            kind: EventKind::DataRow {
                values: vec![Some("1".into()), None],
            },
        };
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"seq":7,"at_ms":1700000000123,"elapsed_us":42,"direction":"server_to_client","kind":{"data_row":{"values":["1",null]}}}"#
        );
        assert_eq!(serde_json::from_str::<RecordEvent>(&line).unwrap(), event);
        assert_eq!(event.kind.name(), "data_row");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let line = r#"{"seq":1,"at_ms":1,"elapsed_us":0,"direction":"meta","kind":{"session_end":{"reason":"x","extra":1}}}"#;
        assert!(serde_json::from_str::<RecordEvent>(line).is_err());
    }
}
