//! One audit record per statement: its text (with the connection's value
//! detectors applied), class, fingerprint, duration, rows and outcome.
//!
//! The client direction says what was sent ([`StatementLog::sent`]: a
//! simple Query, or an Execute of a prepared statement); the upstream
//! direction reports the answers as the client receives them
//! ([`StatementLog::answered`]). Answers come back in request order, so the
//! oldest pending statement of the batch being answered is the one an
//! answer belongs to. A simple Query may hold several statements: it is one
//! record, its rows summed, completed by the batch's ReadyForQuery. An
//! Execute completes with its CommandComplete, PortalSuspended, empty-query
//! or error answer; Executes skipped after an error in their batch were
//! never run and leave no record.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use juris_audit::AuditEvent;
use juris_audit::event::{Outcome, Statement};
use juris_mask::{Findings, Masker};
use juris_pgwire::{BackendMessage, Frame};
use juris_types::StatementClass;

use crate::AuditSink;

/// What a SQL-carrying message is, as far as the audit trail cares.
#[derive(Debug, Clone)]
pub(crate) struct Described {
    pub text: Arc<str>,
    pub class: StatementClass,
    /// `pg_query` fingerprint; empty when the text does not parse.
    pub fingerprint: Arc<str>,
}

struct Pending {
    batch: u64,
    /// A simple Query (completed by ReadyForQuery) rather than an Execute.
    simple: bool,
    described: Described,
    /// The relay refused it (its error is Juris's, not the server's).
    refused: bool,
    started: Instant,
    rows: Option<u64>,
    error: Option<String>,
}

/// The session's statements waiting for their answers.
pub(crate) struct StatementLog {
    /// Off for a connection with `audit_statements = false`: nothing is
    /// logged.
    enabled: bool,
    pending: Mutex<VecDeque<Pending>>,
    session: Arc<str>,
    audit: Arc<dyn AuditSink>,
    /// The connection's value detectors when the session is masked.
    masker: Option<Arc<Masker>>,
}

impl StatementLog {
    pub fn new(session: String, audit: Arc<dyn AuditSink>, masker: Option<Arc<Masker>>) -> Self {
        StatementLog {
            enabled: true,
            pending: Mutex::new(VecDeque::new()),
            session: session.into(),
            audit,
            masker,
        }
    }

    /// The log, switched on or off.
    pub fn enabled(self, enabled: bool) -> Self {
        StatementLog { enabled, ..self }
    }

    /// Whether statements are logged (and so need their fingerprints).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The audit form of a statement's text.
    pub fn describe(&self, sql: &str, class: StatementClass, fingerprint: Arc<str>) -> Described {
        let text: Arc<str> = match &self.masker {
            // Not logged: not worth a copy.
            _ if !self.enabled => Arc::from(""),
            Some(masker) if masker.has_value_rules() => {
                Arc::from(masker.mask_text(sql, &mut Findings::default()).as_ref())
            }
            _ => Arc::from(sql),
        };
        Described {
            text,
            class,
            fingerprint,
        }
    }

    /// A statement went to the upstream in client batch `batch`.
    pub fn sent(&self, batch: u64, simple: bool, described: Described, refused: bool) {
        if !self.enabled {
            return;
        }
        self.lock().push_back(Pending {
            batch,
            simple,
            described,
            refused,
            started: Instant::now(),
            rows: None,
            error: None,
        });
    }

    /// A server message (as the client receives it) of batch `batch`.
    pub fn answered(&self, batch: u64, tag: u8, body: &[u8]) {
        if !self.enabled || !matches!(tag, b'C' | b'E' | b's' | b'I' | b'Z') {
            return;
        }
        let mut done = Vec::new();
        {
            let mut pending = self.lock();
            if tag == b'Z' {
                // The batch is over: its Queries are complete, and Executes
                // still waiting were skipped (an earlier error).
                while pending.front().is_some_and(|p| p.batch <= batch) {
                    if let Some(p) = pending.pop_front()
                        && p.simple
                    {
                        done.push(p);
                    }
                }
            } else if let Some(front) = pending.front_mut().filter(|p| p.batch == batch) {
                match tag {
                    b'C' => {
                        if let Some(rows) = command_rows(body) {
                            front.rows = Some(front.rows.unwrap_or(0) + rows);
                        }
                    }
                    b'E' if front.error.is_none() => front.error = Some(sqlstate(body)),
                    _ => {}
                }
                if !front.simple
                    && let Some(p) = pending.pop_front()
                {
                    done.push(p);
                }
            }
        }
        for p in done {
            self.record(p);
        }
    }

    fn record(&self, p: Pending) {
        let outcome = match (&p.error, p.refused) {
            (None, _) => Outcome::Ok,
            (Some(_), true) => Outcome::Refused,
            (Some(_), false) => Outcome::Error,
        };
        self.audit.record(AuditEvent::Statement(Statement {
            session: self.session.clone(),
            text: p.described.text,
            class: p.described.class,
            fingerprint: p.described.fingerprint,
            duration_us: u64::try_from(p.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            rows: p.rows,
            outcome,
            sqlstate: p.error,
        }));
    }
}

/// The row count at the end of a CommandComplete tag (`SELECT 3`,
/// `INSERT 0 5`, `UPDATE 2`, …); `None` for tags without one.
fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = body.strip_suffix(b"\0").unwrap_or(body);
    let tag = std::str::from_utf8(tag).ok()?;
    let mut words = tag.split(' ');
    let command = words.next()?;
    if !matches!(
        command,
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE"
    ) {
        return None;
    }
    words.next_back()?.parse().ok()
}

/// The SQLSTATE of an ErrorResponse body (`XX000` if absent or unreadable).
fn sqlstate(body: &[u8]) -> String {
    match BackendMessage::decode(&Frame {
        tag: b'E',
        body: bytes::Bytes::copy_from_slice(body),
    }) {
        Ok(BackendMessage::ErrorResponse(fields)) => {
            fields.get(b'C').unwrap_or("XX000").to_string()
        }
        _ => "XX000".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<AuditEvent>>);

    impl AuditSink for Collect {
        fn masking(&self, _: &juris_types::audit::MaskingEvent) {}
        fn record(&self, event: AuditEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn statements(sink: &Collect) -> Vec<Statement> {
        sink.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                AuditEvent::Statement(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn described(text: &str) -> Described {
        Described {
            text: text.into(),
            class: StatementClass::Read,
            fingerprint: "f".into(),
        }
    }

    #[test]
    fn tags_and_error_fields_parse() {
        assert_eq!(command_rows(b"SELECT 3\0"), Some(3));
        assert_eq!(command_rows(b"INSERT 0 5\0"), Some(5));
        assert_eq!(command_rows(b"CREATE TABLE\0"), None);
        assert_eq!(command_rows(b"SELECT x\0"), None);
        assert_eq!(sqlstate(b"SERROR\0C42501\0Mno\0\0"), "42501");
        assert_eq!(sqlstate(b"\0"), "XX000");
        assert_eq!(sqlstate(b"garbage"), "XX000");
    }

    #[test]
    fn queries_sum_rows_and_executes_complete_or_are_skipped() {
        let sink = Arc::new(Collect::default());
        let log = StatementLog::new("s".into(), sink.clone(), None);
        // Batch 0: a two-statement Query.
        log.sent(0, true, described("select 1; select 2"), false);
        // Batch 1: two Executes; the first fails, the second is skipped.
        log.sent(1, false, described("select 1/0"), false);
        log.sent(1, false, described("select 3"), false);
        // Batch 2: a refused Query.
        log.sent(2, true, described("drop table t"), true);
        log.answered(0, b'C', b"SELECT 1\0");
        log.answered(0, b'C', b"SELECT 1\0");
        log.answered(0, b'Z', b"I");
        log.answered(1, b'E', b"SERROR\0C22012\0\0");
        log.answered(1, b'Z', b"I");
        log.answered(2, b'E', b"SERROR\0C42501\0\0");
        log.answered(2, b'Z', b"I");
        let got = statements(&sink);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].rows, Some(2));
        assert_eq!(got[0].outcome, Outcome::Ok);
        assert_eq!(&*got[1].text, "select 1/0");
        assert_eq!(got[1].outcome, Outcome::Error);
        assert_eq!(got[1].sqlstate.as_deref(), Some("22012"));
        assert_eq!(got[2].outcome, Outcome::Refused);
    }
}
