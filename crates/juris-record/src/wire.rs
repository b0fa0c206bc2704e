//! PostgreSQL messages as events: the mapping from a recorded wire
//! message (type byte and body, as the client sent or received it) to the
//! [`EventKind`] a replay shows.
//!
//! Chunk format 2 stores the messages themselves and decodes them here
//! at read time, so this mapping is what version-1 recordings held: the
//! data plane used to apply it before recording. Changing it changes what
//! replays show for every stored recording.

use bytes::Bytes;
use juris_pgwire::{BackendMessage, Frame, FrontendMessage};

use crate::event::{Column, EventKind};

/// Backend message types a recording keeps; the others (ReadyForQuery,
/// ParseComplete, ParameterStatus, …) are protocol bookkeeping a replay
/// has no use for.
pub fn is_recorded_server_message(tag: u8) -> bool {
    matches!(tag, b'D' | b'T' | b'C' | b'E' | b'N' | b'd')
}

/// Frontend message types a recording keeps.
pub fn is_recorded_client_message(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'd' | b'F')
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The event for a message the client received (`body` without the
/// 5-byte header); `None` for a type that is not recorded. A message the
/// codec cannot decode (it was forwarded all the same) is `raw`.
pub fn server_message_event(tag: u8, body: &[u8]) -> Option<EventKind> {
    if !is_recorded_server_message(tag) {
        return None;
    }
    let Ok(decoded) = BackendMessage::decode(&Frame {
        tag,
        body: Bytes::copy_from_slice(body),
    }) else {
        return Some(EventKind::raw(body));
    };
    match decoded {
        BackendMessage::DataRow { values } => Some(EventKind::DataRow {
            values: values.iter().map(|v| v.as_deref().map(text)).collect(),
        }),
        BackendMessage::RowDescription { fields } => Some(EventKind::RowDescription {
            columns: fields
                .into_iter()
                .map(|f| Column {
                    name: f.name,
                    type_oid: f.type_oid,
                })
                .collect(),
        }),
        BackendMessage::CommandComplete { tag } => Some(EventKind::CommandComplete { tag }),
        BackendMessage::ErrorResponse(fields) => Some(EventKind::Error {
            sqlstate: fields.get(b'C').unwrap_or_default().to_string(),
            message: fields.get(b'M').unwrap_or_default().to_string(),
        }),
        BackendMessage::NoticeResponse(fields) => Some(EventKind::Notice {
            sqlstate: fields.get(b'C').unwrap_or_default().to_string(),
            message: fields.get(b'M').unwrap_or_default().to_string(),
        }),
        BackendMessage::CopyData(data) => Some(EventKind::CopyData { text: text(&data) }),
        _ => None,
    }
}

/// The event for a message the client sent on a session that masks
/// nothing (a masked session records the masked text as JSON events
/// instead); `None` for a type that is not recorded. A fast-path call, or
/// a message the codec cannot decode, is `raw`.
pub fn client_message_event(tag: u8, body: &[u8]) -> Option<EventKind> {
    if !is_recorded_client_message(tag) {
        return None;
    }
    let decoded = FrontendMessage::decode(&Frame {
        tag,
        body: Bytes::copy_from_slice(body),
    });
    Some(match decoded {
        Ok(FrontendMessage::Query { sql }) => EventKind::Query { text: sql },
        Ok(FrontendMessage::Parse { name, sql, .. }) => EventKind::Parse {
            statement: name,
            text: sql,
        },
        Ok(FrontendMessage::Bind {
            portal,
            statement,
            params,
            ..
        }) => EventKind::Bind {
            portal,
            statement,
            params: params.iter().map(|p| p.as_deref().map(text)).collect(),
        },
        Ok(FrontendMessage::Execute { portal, max_rows }) => EventKind::Execute {
            portal,
            max_rows: u32::try_from(max_rows).unwrap_or(0),
        },
        Ok(FrontendMessage::CopyData(data)) => EventKind::CopyData { text: text(&data) },
        Ok(_) | Err(_) => EventKind::raw(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows_are_text_and_malformed_ones_raw() {
        let mut body = vec![0, 3];
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"hi");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            server_message_event(b'D', &body),
            Some(EventKind::DataRow {
                values: vec![Some("hi".into()), None, Some(String::new())]
            })
        );
        let cut = &body[..body.len() - 1];
        assert_eq!(server_message_event(b'D', cut), Some(EventKind::raw(cut)));
    }

    #[test]
    fn bookkeeping_messages_are_not_events() {
        assert_eq!(server_message_event(b'Z', b"I"), None);
        assert_eq!(server_message_event(b'1', b""), None);
        assert_eq!(client_message_event(b'S', b""), None);
        assert_eq!(
            server_message_event(b'C', b"SELECT 1\0"),
            Some(EventKind::CommandComplete {
                tag: "SELECT 1".into()
            })
        );
    }

    #[test]
    fn client_messages_are_statements_and_fast_path_calls_raw() {
        assert_eq!(
            client_message_event(b'Q', b"select 1\0"),
            Some(EventKind::Query {
                text: "select 1".into()
            })
        );
        let mut execute = b"p1\0".to_vec();
        execute.extend_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            client_message_event(b'E', &execute),
            Some(EventKind::Execute {
                portal: "p1".into(),
                max_rows: 0
            })
        );
        assert_eq!(
            client_message_event(b'F', b"\x00\x01"),
            Some(EventKind::raw(b"\x00\x01"))
        );
    }
}
