//! Replay renderings of a recording's events.
//!
//! * [`render_text`]: a review log: each statement with its time and
//!   duration, the rows as the user saw them (masked), errors and notices.
//! * [`render_json`]: the events as JSON Lines, the same form as inside
//!   chunks, for tools.
//! * [`render_asciicast`]: asciicast v2 (a header object line, then
//!   `[seconds, "o", text]` lines with non-decreasing times) that plays
//!   like a psql transcript in any asciinema player.
//!
//! Recorded text is what a client sent or received, so it may contain
//! terminal escape sequences; both human renderings show every control
//! character as a visible escape (`\x1b`), so that replaying a recording
//! can never drive the reviewer's terminal.

use std::fmt::Write as _;

use serde_json::json;

use crate::event::{Column, Direction, EventKind, RecordEvent};

/// One rendered step of the transcript.
struct Block {
    elapsed_us: u64,
    /// psql-like text, lines separated by `\n`.
    text: String,
    /// For the text log: a one-line label.
    label: String,
}

/// Show control characters as escapes, keep everything else.
fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push_str("    "),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Like [`visible`] but keeps newlines (query text spans lines).
fn visible_multiline(text: &str) -> String {
    text.split('\n')
        .map(|line| visible(line.strip_suffix('\r').unwrap_or(line)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// psql's aligned table format (left-aligned cells, NULL as empty).
fn table(columns: &[Column], rows: &[Vec<Option<String>>]) -> String {
    let names: Vec<String> = columns.iter().map(|c| visible(&c.name)).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| v.as_deref().map(visible).unwrap_or_default())
                .collect()
        })
        .collect();
    let count = names
        .len()
        .max(cells.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0usize; count];
    for (i, name) in names.iter().enumerate() {
        widths[i] = widths[i].max(width(name));
    }
    for row in &cells {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |values: &[String]| {
        let mut out = String::new();
        for (i, w) in widths.iter().enumerate() {
            if i > 0 {
                out.push('|');
            }
            let value = values.get(i).map(String::as_str).unwrap_or("");
            let _ = write!(out, " {value}{} ", " ".repeat(w - width(value)));
        }
        out.trim_end().to_string()
    };
    let mut out = String::new();
    if !names.is_empty() {
        let header: Vec<String> = names
            .iter()
            .zip(&widths)
            .map(|(name, w)| {
                let pad = w - width(name);
                format!("{}{name}{}", " ".repeat(pad / 2), " ".repeat(pad - pad / 2))
            })
            .collect();
        out.push_str(&line(&header));
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
        out.push_str(&rule.join("+"));
        out.push('\n');
    }
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    let _ = write!(
        out,
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    out
}

fn params(values: &[Option<String>]) -> String {
    let shown: Vec<String> = values
        .iter()
        .map(|v| match v {
            Some(v) => format!("'{}'", visible(v).replace('\'', "''")),
            None => "NULL".into(),
        })
        .collect();
    format!("({})", shown.join(", "))
}

/// Walk the events into transcript blocks.
fn transcript(events: &[RecordEvent]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut prompt = String::from("=>");
    let mut columns: Vec<Column> = Vec::new();
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    let mut statement_started: Option<u64> = None;
    let mut copy = String::new();
    for event in events {
        // Rows (or COPY data) the client received for a statement that
        // never completed (an error mid-stream, the session or the node
        // ending) are shown before what cut them short.
        if matches!(
            event.kind,
            EventKind::Error { .. }
                | EventKind::SessionEnd { .. }
                | EventKind::Query { .. }
                | EventKind::Execute { .. }
        ) && (!rows.is_empty() || !copy.is_empty())
        {
            let text = if rows.is_empty() {
                visible_multiline(copy.trim_end_matches('\n'))
            } else {
                table(&columns, &rows)
            };
            blocks.push(Block {
                elapsed_us: event.elapsed_us,
                label: format!("result received before the statement was cut short:\n{text}"),
                text: format!("{text}\n-- (result cut short)"),
            });
            rows.clear();
            copy.clear();
        }
        let mut push = |text: String, label: String| {
            blocks.push(Block {
                elapsed_us: event.elapsed_us,
                text,
                label,
            })
        };
        match &event.kind {
            EventKind::SessionStart {
                session_id,
                principal,
                connection,
                node,
                region,
                client_addr,
            } => {
                prompt = format!("{}=>", visible(connection));
                push(
                    format!(
                        "-- juris session {session_id}: {} on {} (node {}, region {})",
                        visible(&principal.name),
                        visible(connection),
                        visible(node),
                        visible(region)
                    ),
                    format!(
                        "session {session_id} started: {} ({} at {}) on {} via node {} in {}{}",
                        visible(&principal.name),
                        visible(&principal.subject),
                        visible(&principal.issuer),
                        visible(connection),
                        visible(node),
                        visible(region),
                        client_addr
                            .as_deref()
                            .map(|a| format!(" from {}", visible(a)))
                            .unwrap_or_default()
                    ),
                );
            }
            EventKind::Query { text } => {
                statement_started = Some(event.elapsed_us);
                columns.clear();
                rows.clear();
                let text = visible_multiline(text);
                push(format!("{prompt} {text}"), format!("query: {text}"));
            }
            EventKind::Parse { statement, text } => {
                let text = visible_multiline(text);
                let name = if statement.is_empty() {
                    "unnamed statement".to_string()
                } else {
                    format!("statement {}", visible(statement))
                };
                push(
                    format!("{prompt} -- prepare {name}\n{text}"),
                    format!("parse {name}: {text}"),
                );
            }
            EventKind::Bind {
                statement,
                params: values,
                ..
            } => {
                let shown = params(values);
                push(
                    format!("-- bind {} {shown}", visible(statement)),
                    format!("bind {}: {shown}", visible(statement)),
                );
            }
            EventKind::Execute { .. } => {
                statement_started = Some(event.elapsed_us);
                columns.clear();
                rows.clear();
            }
            EventKind::RowDescription { columns: described } => {
                columns = described.clone();
                rows.clear();
            }
            EventKind::DataRow { values } => rows.push(values.clone()),
            EventKind::CopyData { text } => {
                if event.direction == Direction::ServerToClient
                    || event.direction == Direction::ClientToServer
                {
                    copy.push_str(text);
                }
            }
            EventKind::CommandComplete { tag } => {
                let duration = statement_started
                    .take()
                    .map(|start| event.elapsed_us.saturating_sub(start));
                let timing = duration
                    .map(|us| format!(" ({:.3} ms)", us as f64 / 1000.0))
                    .unwrap_or_default();
                let mut text = String::new();
                if !columns.is_empty() || !rows.is_empty() {
                    text.push_str(&table(&columns, &rows));
                } else if !copy.is_empty() {
                    text.push_str(&visible_multiline(copy.trim_end_matches('\n')));
                    text.push('\n');
                    text.push_str(&visible(tag));
                } else {
                    text.push_str(&visible(tag));
                }
                let label = format!("{}{timing}", visible(tag));
                let body = if columns.is_empty() && rows.is_empty() && copy.is_empty() {
                    String::new()
                } else {
                    format!("\n{text}")
                };
                columns.clear();
                rows.clear();
                copy.clear();
                push(text, format!("{label}{body}"));
            }
            EventKind::Error { sqlstate, message } => {
                statement_started = None;
                columns.clear();
                rows.clear();
                copy.clear();
                let message = visible(message);
                push(
                    format!("ERROR:  {message}"),
                    format!("ERROR {}: {message}", visible(sqlstate)),
                );
            }
            EventKind::Notice { sqlstate, message } => {
                let message = visible(message);
                push(
                    format!("NOTICE:  {message}"),
                    format!("NOTICE {}: {message}", visible(sqlstate)),
                );
            }
            EventKind::Gap {
                reason,
                lost_events,
            } => push(
                format!(
                    "-- [{lost_events} events not recorded: {}]",
                    visible(reason)
                ),
                format!(
                    "GAP: {lost_events} events not recorded ({})",
                    visible(reason)
                ),
            ),
            EventKind::SessionEnd { reason } => push(
                format!("-- session ended: {}", visible(reason)),
                format!("session ended: {}", visible(reason)),
            ),
            // Not part of a psql transcript; render_json shows them.
            EventKind::Raw { .. } => {}
        }
    }
    blocks
}

/// A review log: one entry per statement, result, error and session
/// fact, each with its time since the session started.
pub fn render_text(events: &[RecordEvent]) -> String {
    let mut out = String::new();
    for block in transcript(events) {
        let seconds = block.elapsed_us / 1_000_000;
        let micros = block.elapsed_us % 1_000_000;
        let prefix = format!(
            "[{:02}:{:02}:{:02}.{:03}]",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            micros / 1000
        );
        let indent = " ".repeat(prefix.len() + 1);
        for (i, line) in block.label.split('\n').enumerate() {
            if i == 0 {
                let _ = writeln!(out, "{prefix} {line}");
            } else {
                let _ = writeln!(out, "{indent}{line}");
            }
        }
    }
    out
}

/// The events as JSON Lines (one event object per line).
pub fn render_json(events: &[RecordEvent]) -> String {
    let mut out = String::new();
    for event in events {
        // Serialising our own types into a String cannot fail.
        if let Ok(line) = serde_json::to_string(event) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Terminal size and title of an asciicast.
#[derive(Debug, Clone)]
pub struct AsciicastOptions {
    pub width: u32,
    pub height: u32,
    /// Defaults to "juris session <id> (<user> on <connection>)".
    pub title: Option<String>,
}

impl Default for AsciicastOptions {
    fn default() -> Self {
        AsciicastOptions {
            width: 120,
            height: 40,
            title: None,
        }
    }
}

/// asciicast v2 of the session as a psql transcript.
pub fn render_asciicast(events: &[RecordEvent], options: &AsciicastOptions) -> String {
    let start = events.first();
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| match start.map(|e| &e.kind) {
            Some(EventKind::SessionStart {
                session_id,
                principal,
                connection,
                ..
            }) => format!(
                "juris session {session_id} ({} on {})",
                visible(&principal.name),
                visible(connection)
            ),
            _ => "juris session".to_string(),
        });
    let mut header = json!({
        "version": 2,
        "width": options.width,
        "height": options.height,
        "title": title,
    });
    if let Some(first) = start {
        header["timestamp"] = json!(first.at_ms / 1000);
    }
    let mut out = header.to_string();
    out.push('\n');
    let base = start.map_or(0, |e| e.elapsed_us);
    let mut last_time = 0.0f64;
    for block in transcript(events) {
        let time = (block.elapsed_us.saturating_sub(base) as f64 / 1_000_000.0).max(last_time);
        last_time = time;
        let text = format!("{}\r\n", block.text.replace('\n', "\r\n"));
        out.push_str(&json!([time, "o", text]).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, elapsed_us: u64, direction: Direction, kind: EventKind) -> RecordEvent {
        RecordEvent {
            seq,
            at_ms: 1_700_000_000_000 + elapsed_us / 1000,
            elapsed_us,
            direction,
            kind,
        }
    }

    #[test]
    fn table_looks_like_psql() {
        let columns = vec![
            Column {
                name: "id".into(),
                type_oid: 23,
            },
            Column {
                name: "email".into(),
                type_oid: 25,
            },
        ];
        let rows = vec![
            vec![Some("1".into()), Some("a***@example.com".into())],
            vec![Some("22".into()), None],
        ];
        assert_eq!(
            table(&columns, &rows),
            " id |      email\n----+------------------\n 1  | a***@example.com\n 22 |\n(2 rows)"
        );
    }

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        let events = vec![event(
            1,
            0,
            Direction::ServerToClient,
            EventKind::Notice {
                sqlstate: "00000".into(),
                message: "\u{1b}]0;pwned\u{7}".into(),
            },
        )];
        let text = render_text(&events);
        assert!(!text.contains('\u{1b}'), "{text}");
        let cast = render_asciicast(&events, &AsciicastOptions::default());
        for line in cast.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(!v.to_string().contains("\\u001b"), "{line}");
        }
    }

    #[test]
    fn statement_timing_in_text() {
        let events = vec![
            event(
                1,
                1000,
                Direction::ClientToServer,
                EventKind::Query {
                    text: "delete from t".into(),
                },
            ),
            event(
                2,
                3500,
                Direction::ServerToClient,
                EventKind::CommandComplete {
                    tag: "DELETE 3".into(),
                },
            ),
        ];
        let text = render_text(&events);
        assert!(
            text.contains("[00:00:00.001] query: delete from t"),
            "{text}"
        );
        assert!(text.contains("DELETE 3 (2.500 ms)"), "{text}");
    }

    #[test]
    fn rows_of_a_statement_cut_short_are_shown() {
        let row = |seq, v: &str| {
            event(
                seq,
                seq * 100,
                Direction::ServerToClient,
                EventKind::DataRow {
                    values: vec![Some(v.into())],
                },
            )
        };
        let events = vec![
            event(
                1,
                0,
                Direction::ClientToServer,
                EventKind::Query {
                    text: "select 1/(3-x) from t".into(),
                },
            ),
            event(
                2,
                50,
                Direction::ServerToClient,
                EventKind::RowDescription {
                    columns: vec![Column {
                        name: "q".into(),
                        type_oid: 23,
                    }],
                },
            ),
            row(3, "first-row"),
            row(4, "second-row"),
            event(
                5,
                900,
                Direction::ServerToClient,
                EventKind::Error {
                    sqlstate: "22012".into(),
                    message: "division by zero".into(),
                },
            ),
            event(
                6,
                1000,
                Direction::ClientToServer,
                EventKind::Query {
                    text: "select 2".into(),
                },
            ),
            row(7, "interrupted-row"),
            event(
                8,
                2000,
                Direction::Meta,
                EventKind::SessionEnd {
                    reason: "recording interrupted".into(),
                },
            ),
        ];
        let text = render_text(&events);
        let first = text.find("first-row").expect(&text);
        let error = text.find("division by zero").expect(&text);
        assert!(first < error, "{text}");
        assert!(text.contains("second-row"), "{text}");
        let last = text.find("interrupted-row").expect(&text);
        assert!(last < text.find("recording interrupted").unwrap(), "{text}");
        let cast = render_asciicast(&events, &AsciicastOptions::default());
        assert!(cast.contains("interrupted-row"), "{cast}");
    }
}
