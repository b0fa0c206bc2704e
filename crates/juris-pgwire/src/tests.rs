use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits {
        max_message_len: 1 << 20,
        max_startup_len: 10_000,
    }
}

#[test]
fn a_query_has_the_documented_wire_form() {
    let mut out = BytesMut::new();
    FrontendMessage::Query {
        sql: "select 1".into(),
    }
    .encode(&mut out);
    assert_eq!(&out[..], b"Q\0\0\0\x0dselect 1\0");
    let frame = split_frame(&mut out, &limits()).unwrap().unwrap();
    assert!(out.is_empty());
    assert_eq!(
        FrontendMessage::decode(&frame).unwrap(),
        FrontendMessage::Query {
            sql: "select 1".into()
        }
    );
}

#[test]
fn startup_packets_decode_and_need_more_bytes_when_partial() {
    let mut out = BytesMut::new();
    let packet = StartupPacket::Startup {
        protocol_version: code::PROTOCOL_3_0,
        parameters: vec![
            ("user".into(), "alice".into()),
            ("database".into(), "billing".into()),
        ],
    };
    packet.encode(&mut out);
    let mut partial = BytesMut::from(&out[..out.len() - 1]);
    assert_eq!(decode_startup(&mut partial, &limits()), Ok(None));
    assert_eq!(
        decode_startup(&mut out, &limits()).unwrap().unwrap(),
        packet
    );
    assert_eq!(packet.parameter("database"), Some("billing"));

    let mut ssl = BytesMut::from(&[0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..]);
    assert_eq!(
        decode_startup(&mut ssl, &limits()).unwrap(),
        Some(StartupPacket::SslRequest)
    );
}

#[test]
fn bad_lengths_are_errors_before_anything_is_buffered() {
    let mut huge = BytesMut::from(&[0x7fu8, 0xff, 0xff, 0xff, 0, 3, 0, 0][..]);
    assert!(matches!(
        decode_startup(&mut huge, &limits()),
        Err(DecodeError::MessageTooLong { .. })
    ));
    let mut tiny = BytesMut::from(&[0u8, 0, 0, 3][..]);
    assert!(matches!(
        decode_startup(&mut tiny, &limits()),
        Err(DecodeError::InvalidLength(3))
    ));
    let mut negative = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
    assert!(matches!(
        split_frame(&mut negative, &limits()),
        Err(DecodeError::InvalidLength(-1))
    ));
    let mut oversized = BytesMut::from(&b"D\x7f\xff\xff\xff"[..]);
    assert!(matches!(
        split_frame(&mut oversized, &limits()),
        Err(DecodeError::MessageTooLong { .. })
    ));
    let mut old = BytesMut::from(&[0u8, 0, 0, 8, 0, 2, 0, 0][..]);
    assert!(matches!(
        decode_startup(&mut old, &limits()),
        Err(DecodeError::UnsupportedProtocol(_))
    ));
}

#[test]
fn lying_counts_and_trailing_bytes_are_malformed() {
    // A DataRow claiming 1000 columns with 4 bytes of body.
    let frame = Frame {
        tag: b'D',
        body: Bytes::from_static(&[0x03, 0xe8, 0, 0, 0, 0]),
    };
    assert!(matches!(
        BackendMessage::decode(&frame),
        Err(DecodeError::Malformed { .. })
    ));
    let frame = Frame {
        tag: b'Z',
        body: Bytes::from_static(b"II"),
    };
    assert!(matches!(
        BackendMessage::decode(&frame),
        Err(DecodeError::Malformed { .. })
    ));
    let frame = Frame {
        tag: b'Q',
        body: Bytes::from_static(b"no terminator"),
    };
    assert!(matches!(
        FrontendMessage::decode(&frame),
        Err(DecodeError::Malformed { .. })
    ));
    let frame = Frame {
        tag: b'Q',
        body: Bytes::from_static(b"\xff\xfe\0"),
    };
    assert!(matches!(
        FrontendMessage::decode(&frame),
        Err(DecodeError::InvalidUtf8 { .. })
    ));
    let frame = Frame {
        tag: b'?',
        body: Bytes::new(),
    };
    assert_eq!(
        FrontendMessage::decode(&frame),
        Err(DecodeError::UnknownTag(b'?'))
    );
}

#[test]
fn error_fields_accessors_and_password_helpers() {
    let fields = ErrorFields::new("FATAL", "28000", "no")
        .with_detail("d")
        .with_hint("h");
    assert_eq!(
        (
            fields.severity(),
            fields.code(),
            fields.message(),
            fields.get(b'H')
        ),
        (Some("FATAL"), Some("28000"), Some("no"), Some("h"))
    );
    let mut out = BytesMut::new();
    password_message("tok", &mut out);
    let frame = split_frame(&mut out, &limits()).unwrap().unwrap();
    assert_eq!(decode_password(&frame.body).unwrap(), "tok");
    let sasl = SaslInitialResponse {
        mechanism: "SCRAM-SHA-256".into(),
        data: Some(Bytes::from_static(b"n,,n=,r=x")),
    };
    sasl.encode(&mut out);
    let frame = split_frame(&mut out, &limits()).unwrap().unwrap();
    assert_eq!(SaslInitialResponse::decode(&frame.body).unwrap(), sasl);
}

/// Encode `message`, compare with the documented wire bytes, and decode back.
fn frontend_wire(message: FrontendMessage, wire: &[u8]) {
    let mut out = BytesMut::new();
    message.encode(&mut out);
    assert_eq!(&out[..], wire, "{message:?}");
    let frame = split_frame(&mut out, &limits()).unwrap().unwrap();
    assert_eq!(frame.wire_len(), wire.len());
    assert_eq!(FrontendMessage::decode(&frame).unwrap(), message);
}

fn backend_wire(message: BackendMessage, wire: &[u8]) {
    let mut out = BytesMut::new();
    message.encode(&mut out);
    assert_eq!(&out[..], wire, "{message:?}");
    let frame = split_frame(&mut out, &limits()).unwrap().unwrap();
    assert_eq!(frame.wire_len(), wire.len());
    assert_eq!(BackendMessage::decode(&frame).unwrap(), message);
}

#[test]
fn frontend_messages_have_their_documented_wire_forms() {
    frontend_wire(
        FrontendMessage::Parse {
            name: "s1".into(),
            sql: "select $1".into(),
            param_types: vec![23],
        },
        b"P\0\0\0\x17s1\0select $1\0\0\x01\0\0\0\x17",
    );
    frontend_wire(
        FrontendMessage::Bind {
            portal: String::new(),
            statement: "s1".into(),
            param_formats: vec![0],
            params: vec![Some(Bytes::from_static(b"42")), None],
            result_formats: vec![1],
        },
        b"B\0\0\0\x1c\0s1\0\0\x01\0\0\0\x02\0\0\0\x0242\xff\xff\xff\xff\0\x01\0\x01",
    );
    frontend_wire(
        FrontendMessage::Describe {
            target: Target::Portal,
            name: "p".into(),
        },
        b"D\0\0\0\x07Pp\0",
    );
    frontend_wire(
        FrontendMessage::Close {
            target: Target::Statement,
            name: "s1".into(),
        },
        b"C\0\0\0\x08Ss1\0",
    );
    frontend_wire(
        FrontendMessage::Execute {
            portal: String::new(),
            max_rows: 0,
        },
        b"E\0\0\0\x09\0\0\0\0\0",
    );
    frontend_wire(FrontendMessage::Sync, b"S\0\0\0\x04");
    frontend_wire(FrontendMessage::Flush, b"H\0\0\0\x04");
    frontend_wire(FrontendMessage::Terminate, b"X\0\0\0\x04");
    frontend_wire(
        FrontendMessage::CopyData(Bytes::from_static(b"1\t2\n")),
        b"d\0\0\0\x081\t2\n",
    );
    frontend_wire(FrontendMessage::CopyDone, b"c\0\0\0\x04");
    frontend_wire(
        FrontendMessage::CopyFail {
            message: "no".into(),
        },
        b"f\0\0\0\x07no\0",
    );
    frontend_wire(
        FrontendMessage::FunctionCall {
            oid: 1598,
            arg_formats: vec![],
            args: vec![None],
            result_format: 1,
        },
        b"F\0\0\0\x12\0\0\x06\x3e\0\0\0\x01\xff\xff\xff\xff\0\x01",
    );
    frontend_wire(
        FrontendMessage::AuthResponse(Bytes::from_static(b"pw\0")),
        b"p\0\0\0\x07pw\0",
    );
}

#[test]
fn backend_messages_have_their_documented_wire_forms() {
    backend_wire(
        BackendMessage::Authentication(Authentication::Ok),
        b"R\0\0\0\x08\0\0\0\0",
    );
    backend_wire(
        BackendMessage::Authentication(Authentication::Md5Password { salt: *b"abcd" }),
        b"R\0\0\0\x0c\0\0\0\x05abcd",
    );
    backend_wire(
        BackendMessage::Authentication(Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()],
        }),
        b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0",
    );
    backend_wire(
        BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from_static(b"r=x"))),
        b"R\0\0\0\x0b\0\0\0\x0br=x",
    );
    backend_wire(
        BackendMessage::Authentication(Authentication::SaslFinal(Bytes::from_static(b"v=y"))),
        b"R\0\0\0\x0b\0\0\0\x0cv=y",
    );
    backend_wire(
        BackendMessage::Authentication(Authentication::GssContinue(Bytes::from_static(b"t"))),
        b"R\0\0\0\x09\0\0\0\x08t",
    );
    for (auth, code) in [
        (Authentication::CleartextPassword, 3u8),
        (Authentication::KerberosV5, 2),
        (Authentication::Scm, 6),
        (Authentication::Gss, 7),
        (Authentication::Sspi, 9),
    ] {
        backend_wire(
            BackendMessage::Authentication(auth),
            &[b'R', 0, 0, 0, 8, 0, 0, 0, code],
        );
    }
    backend_wire(
        BackendMessage::BackendKeyData {
            process_id: 7,
            secret_key: Bytes::from_static(b"\x01\x02\x03\x04"),
        },
        b"K\0\0\0\x0c\0\0\0\x07\x01\x02\x03\x04",
    );
    backend_wire(
        BackendMessage::ParameterStatus {
            name: "a".into(),
            value: "b".into(),
        },
        b"S\0\0\0\x08a\0b\0",
    );
    backend_wire(
        BackendMessage::ReadyForQuery {
            status: TransactionStatus::InTransaction,
        },
        b"Z\0\0\0\x05T",
    );
    backend_wire(
        BackendMessage::RowDescription {
            fields: vec![FieldDescription {
                name: "id".into(),
                table_oid: 0,
                column_attr: 0,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: 0,
            }],
        },
        b"T\0\0\0\x1b\0\x01id\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    backend_wire(
        BackendMessage::DataRow {
            values: vec![Some(Bytes::from_static(b"1")), None],
        },
        b"D\0\0\0\x0f\0\x02\0\0\0\x011\xff\xff\xff\xff",
    );
    backend_wire(
        BackendMessage::CommandComplete {
            tag: "SELECT 1".into(),
        },
        b"C\0\0\0\x0dSELECT 1\0",
    );
    backend_wire(BackendMessage::EmptyQueryResponse, b"I\0\0\0\x04");
    backend_wire(
        BackendMessage::ErrorResponse(ErrorFields::new("ERROR", "42501", "denied")),
        b"E\0\0\0\x22SERROR\0VERROR\0C42501\0Mdenied\0\0",
    );
    backend_wire(
        BackendMessage::NoticeResponse(ErrorFields {
            fields: vec![(b'M', "hi".into())],
        }),
        b"N\0\0\0\x09Mhi\0\0",
    );
    backend_wire(BackendMessage::ParseComplete, b"1\0\0\0\x04");
    backend_wire(BackendMessage::BindComplete, b"2\0\0\0\x04");
    backend_wire(BackendMessage::CloseComplete, b"3\0\0\0\x04");
    backend_wire(BackendMessage::NoData, b"n\0\0\0\x04");
    backend_wire(BackendMessage::PortalSuspended, b"s\0\0\0\x04");
    backend_wire(
        BackendMessage::ParameterDescription { types: vec![25] },
        b"t\0\0\0\x0a\0\x01\0\0\0\x19",
    );
    let copy = CopyResponse {
        format: 0,
        column_formats: vec![0, 0],
    };
    backend_wire(
        BackendMessage::CopyInResponse(copy.clone()),
        b"G\0\0\0\x0b\0\0\x02\0\0\0\0",
    );
    backend_wire(
        BackendMessage::CopyOutResponse(copy.clone()),
        b"H\0\0\0\x0b\0\0\x02\0\0\0\0",
    );
    backend_wire(
        BackendMessage::CopyBothResponse(copy),
        b"W\0\0\0\x0b\0\0\x02\0\0\0\0",
    );
    backend_wire(
        BackendMessage::CopyData(Bytes::from_static(b"x")),
        b"d\0\0\0\x05x",
    );
    backend_wire(BackendMessage::CopyDone, b"c\0\0\0\x04");
    backend_wire(
        BackendMessage::NotificationResponse {
            process_id: 1,
            channel: "ch".into(),
            payload: "p".into(),
        },
        b"A\0\0\0\x0d\0\0\0\x01ch\0p\0",
    );
    backend_wire(
        BackendMessage::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized: vec!["_pq_.x".into()],
        },
        b"v\0\0\0\x13\0\0\0\0\0\0\0\x01_pq_.x\0",
    );
    backend_wire(
        BackendMessage::FunctionCallResponse(None),
        b"V\0\0\0\x08\xff\xff\xff\xff",
    );
}

#[test]
fn tag_constants_match_the_direction() {
    assert_eq!(tag::frontend::CLOSE, b'C');
    assert_eq!(tag::backend::COMMAND_COMPLETE, b'C');
    assert_eq!(tag::frontend::SYNC, tag::backend::PARAMETER_STATUS);
    assert_eq!(tag::frontend::QUERY, b'Q');
}

#[test]
fn partial_frames_wait_without_consuming() {
    let mut out = BytesMut::new();
    FrontendMessage::Sync.encode(&mut out);
    FrontendMessage::Query { sql: "x".into() }.encode(&mut out);
    let whole = out.clone();
    for cut in 0..whole.len() {
        let mut partial = BytesMut::from(&whole[..cut]);
        let mut frames = Vec::new();
        while let Some(frame) = split_frame(&mut partial, &limits()).unwrap() {
            frames.push(frame.tag);
        }
        let expected: &[u8] = if cut >= 5 { b"S" } else { b"" };
        assert_eq!(frames, expected, "cut at {cut}");
        assert_eq!(partial.len(), cut - 5 * frames.len());
    }
}

#[test]
fn the_length_limit_is_inclusive_and_checked_on_the_header_alone() {
    let tight = Limits {
        max_message_len: 8,
        max_startup_len: 8,
    };
    let mut fits = BytesMut::from(&b"d\0\0\0\x08abcd"[..]);
    assert!(split_frame(&mut fits, &tight).unwrap().is_some());
    // Only the header has arrived: refused without waiting for 9 more bytes.
    let mut over = BytesMut::from(&b"d\0\0\0\x09"[..]);
    assert_eq!(
        split_frame(&mut over, &tight),
        Err(DecodeError::MessageTooLong { len: 9, max: 8 })
    );
    let mut short = BytesMut::from(&b"d\0\0\0\x03"[..]);
    assert_eq!(
        split_frame(&mut short, &tight),
        Err(DecodeError::InvalidLength(3))
    );
    let mut startup = BytesMut::from(&[0u8, 0, 0, 9][..]);
    assert_eq!(
        decode_startup(&mut startup, &tight),
        Err(DecodeError::MessageTooLong { len: 9, max: 8 })
    );
    let mut negative = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xf0][..]);
    assert_eq!(
        decode_startup(&mut negative, &tight),
        Err(DecodeError::InvalidLength(-16))
    );
}

#[test]
fn startup_phase_requests_and_their_errors() {
    let decode = |bytes: &[u8]| decode_startup(&mut BytesMut::from(bytes), &limits());
    assert_eq!(
        decode(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]),
        Ok(Some(StartupPacket::GssEncRequest))
    );
    assert_eq!(
        decode(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 9, 1, 2, 3, 4]),
        Ok(Some(StartupPacket::CancelRequest {
            process_id: 9,
            secret_key: Bytes::from_static(&[1, 2, 3, 4]),
        }))
    );
    // Protocol 3.2 allows a longer cancel key.
    let mut long_key = vec![0, 0, 0, 44, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 9];
    long_key.extend([7u8; 32]);
    assert!(matches!(
        decode(&long_key),
        Ok(Some(StartupPacket::CancelRequest { secret_key, .. })) if secret_key.len() == 32
    ));
    assert!(matches!(
        decode(&[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 9]),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        decode(&[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0]),
        Err(DecodeError::Malformed { .. })
    ));
    assert_eq!(
        decode(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x31]),
        Err(DecodeError::UnknownRequest(80_877_105))
    );
    // Protocol 3.2 startup is accepted; a missing final terminator is not.
    assert!(matches!(
        decode(b"\0\0\0\x09\0\x03\0\x02\0"),
        Ok(Some(StartupPacket::Startup {
            protocol_version: 0x0003_0002,
            ..
        }))
    ));
    assert!(matches!(
        decode(b"\0\0\0\x0d\0\x03\0\0user\0"),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        decode(b"\0\0\0\x0d\0\x03\0\0u\0\xff\0\0"),
        Err(DecodeError::InvalidUtf8 { .. })
    ));
    // Direct TLS starts with a handshake record: callers peek before decoding.
    let tls = [TLS_HANDSHAKE_FIRST_BYTE, 0x03, 0x01, 0x00, 0xc8];
    assert!(matches!(
        decode(&tls),
        Err(DecodeError::MessageTooLong { .. })
    ));
    // Nothing is consumed while the packet is incomplete.
    let mut partial = BytesMut::from(&[0u8, 0, 0, 8, 0x04][..]);
    assert_eq!(decode_startup(&mut partial, &limits()), Ok(None));
    assert_eq!(partial.len(), 5);
}

#[test]
fn malformed_bodies_are_rejected() {
    fn malformed<T>(result: Result<T, DecodeError>) -> bool {
        matches!(result, Err(DecodeError::Malformed { .. }))
    }
    let backend = |tag: u8, body: &'static [u8]| {
        BackendMessage::decode(&Frame {
            tag,
            body: Bytes::from_static(body),
        })
    };
    let frontend = |tag: u8, body: &'static [u8]| {
        FrontendMessage::decode(&Frame {
            tag,
            body: Bytes::from_static(body),
        })
    };

    assert!(malformed(backend(b'R', b"\0\0\0\x05ab")));
    assert!(malformed(backend(b'R', b"\0\0\0\x63")));
    assert!(malformed(backend(b'R', b"\0\0\0\x0aSCRAM\0")));
    assert!(malformed(backend(b'K', b"\0\0\0\x01ab")));
    assert!(malformed(backend(b'Z', b"X")));
    assert!(malformed(backend(b'D', b"\0\x01\xff\xff\xff\xfe")));
    assert!(malformed(backend(b'D', b"\0\x01\0\0\0\x09abc")));
    assert!(malformed(backend(b'T', b"\xff\xff")));
    assert!(malformed(backend(b'E', b"Mno terminator")));
    assert!(malformed(backend(b'v', b"\0\0\0\0\x7f\xff\xff\xff")));
    assert!(malformed(backend(b'v', b"\0\0\0\0\xff\xff\xff\xff")));
    assert!(malformed(backend(b'1', b"x")));
    assert!(malformed(frontend(b'D', b"Xname\0")));
    assert!(malformed(frontend(b'S', b"x")));
    assert!(malformed(frontend(b'B', b"\0\0\xff\xff")));
    assert!(malformed(frontend(b'E', b"\0\0\0")));
    assert!(malformed(frontend(b'P', b"s\0q\0\0\x02\0\0\0\x17")));
    assert_eq!(backend(b'Q', b""), Err(DecodeError::UnknownTag(b'Q')));
    assert!(matches!(
        decode_password(b"pw"),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        decode_password(b"pw\0x"),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        SaslInitialResponse::decode(b"SCRAM-SHA-256\0\xff\xff\xff\xff"),
        Ok(SaslInitialResponse { data: None, .. })
    ));
}

#[test]
fn counts_above_i16_max_are_read_unsigned_like_the_server() {
    // 40 000 NULL parameters: legal since the count is an unsigned 16-bit field.
    let params = vec![None; 40_000];
    let message = FrontendMessage::Bind {
        portal: String::new(),
        statement: String::new(),
        param_formats: vec![],
        params,
        result_formats: vec![],
    };
    let mut out = BytesMut::new();
    message.encode(&mut out);
    let frame = split_frame(&mut out, &limits()).unwrap().unwrap();
    assert_eq!(FrontendMessage::decode(&frame).unwrap(), message);
}

#[test]
fn frames_share_the_read_buffer() {
    let mut buf = BytesMut::new();
    FrontendMessage::CopyData(Bytes::from_static(b"payload")).encode(&mut buf);
    let before = buf.as_ptr() as usize;
    let frame = split_frame(&mut buf, &limits()).unwrap().unwrap();
    assert_eq!(frame.body.as_ptr() as usize, before + 5);
    let mut again = BytesMut::new();
    frame.encode(&mut again);
    assert_eq!(&again[..], b"d\0\0\0\x0bpayload");
}

/// Any text a C string can carry: arbitrary Unicode without NUL.
fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,40}"
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from))
}

fn frontend() -> impl Strategy<Value = FrontendMessage> {
    let target = prop_oneof![Just(Target::Statement), Just(Target::Portal)];
    prop_oneof![
        text().prop_map(|sql| FrontendMessage::Query { sql }),
        (
            text(),
            text(),
            proptest::collection::vec(any::<u32>(), 0..5)
        )
            .prop_map(|(name, sql, param_types)| FrontendMessage::Parse {
                name,
                sql,
                param_types
            }),
        (
            text(),
            text(),
            proptest::collection::vec(any::<i16>(), 0..4),
            proptest::collection::vec(value(), 0..4),
            proptest::collection::vec(any::<i16>(), 0..4)
        )
            .prop_map(
                |(portal, statement, param_formats, params, result_formats)| {
                    FrontendMessage::Bind {
                        portal,
                        statement,
                        param_formats,
                        params,
                        result_formats,
                    }
                }
            ),
        (target.clone(), text())
            .prop_map(|(target, name)| FrontendMessage::Describe { target, name }),
        (target, text()).prop_map(|(target, name)| FrontendMessage::Close { target, name }),
        (text(), any::<i32>())
            .prop_map(|(portal, max_rows)| FrontendMessage::Execute { portal, max_rows }),
        Just(FrontendMessage::Sync),
        Just(FrontendMessage::Flush),
        Just(FrontendMessage::Terminate),
        Just(FrontendMessage::CopyDone),
        blob().prop_map(FrontendMessage::CopyData),
        blob().prop_map(FrontendMessage::AuthResponse),
        text().prop_map(|message| FrontendMessage::CopyFail { message }),
        (
            any::<u32>(),
            proptest::collection::vec(any::<i16>(), 0..3),
            proptest::collection::vec(value(), 0..3),
            any::<i16>()
        )
            .prop_map(|(oid, arg_formats, args, result_format)| {
                FrontendMessage::FunctionCall {
                    oid,
                    arg_formats,
                    args,
                    result_format,
                }
            }),
    ]
}

fn backend() -> impl Strategy<Value = BackendMessage> {
    let field = (
        text(),
        any::<u32>(),
        any::<i16>(),
        any::<u32>(),
        any::<i16>(),
        any::<i32>(),
        any::<i16>(),
    )
        .prop_map(
            |(name, table_oid, column_attr, type_oid, type_size, type_modifier, format)| {
                FieldDescription {
                    name,
                    table_oid,
                    column_attr,
                    type_oid,
                    type_size,
                    type_modifier,
                    format,
                }
            },
        );
    let fields = || {
        proptest::collection::vec((1u8..=255, text()), 0..5)
            .prop_map(|fields| ErrorFields { fields })
    };
    let copy = (any::<i8>(), proptest::collection::vec(any::<i16>(), 0..4)).prop_map(
        |(format, column_formats)| CopyResponse {
            format,
            column_formats,
        },
    );
    prop_oneof![
        prop_oneof![
            Just(Authentication::Ok),
            Just(Authentication::CleartextPassword),
            Just(Authentication::KerberosV5),
            Just(Authentication::Scm),
            Just(Authentication::Gss),
            Just(Authentication::Sspi),
            blob().prop_map(Authentication::GssContinue),
            blob().prop_map(Authentication::SaslContinue),
            blob().prop_map(Authentication::SaslFinal),
        ]
        .prop_map(BackendMessage::Authentication),
        any::<[u8; 4]>()
            .prop_map(|salt| BackendMessage::Authentication(Authentication::Md5Password { salt })),
        proptest::collection::vec("[A-Z0-9-]{1,20}", 0..3).prop_map(|mechanisms| {
            BackendMessage::Authentication(Authentication::Sasl { mechanisms })
        }),
        (
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 4..=256)
        )
            .prop_map(|(process_id, s)| BackendMessage::BackendKeyData {
                process_id,
                secret_key: Bytes::from(s),
            }),
        (text(), text()).prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        prop_oneof![
            Just(TransactionStatus::Idle),
            Just(TransactionStatus::InTransaction),
            Just(TransactionStatus::Failed)
        ]
        .prop_map(|status| BackendMessage::ReadyForQuery { status }),
        proptest::collection::vec(field, 0..4)
            .prop_map(|fields| BackendMessage::RowDescription { fields }),
        proptest::collection::vec(value(), 0..6)
            .prop_map(|values| BackendMessage::DataRow { values }),
        text().prop_map(|tag| BackendMessage::CommandComplete { tag }),
        fields().prop_map(BackendMessage::ErrorResponse),
        fields().prop_map(BackendMessage::NoticeResponse),
        prop_oneof![
            Just(BackendMessage::EmptyQueryResponse),
            Just(BackendMessage::ParseComplete),
            Just(BackendMessage::BindComplete),
            Just(BackendMessage::CloseComplete),
            Just(BackendMessage::NoData),
            Just(BackendMessage::PortalSuspended),
            Just(BackendMessage::CopyDone),
        ],
        blob().prop_map(BackendMessage::CopyData),
        proptest::collection::vec(any::<u32>(), 0..4)
            .prop_map(|types| BackendMessage::ParameterDescription { types }),
        copy.clone().prop_map(BackendMessage::CopyInResponse),
        copy.clone().prop_map(BackendMessage::CopyOutResponse),
        copy.prop_map(BackendMessage::CopyBothResponse),
        (any::<i32>(), text(), text()).prop_map(|(process_id, channel, payload)| {
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }
        }),
        (any::<u32>(), proptest::collection::vec(text(), 0..3)).prop_map(
            |(newest_minor, unrecognized)| BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized
            }
        ),
        value().prop_map(BackendMessage::FunctionCallResponse),
    ]
}

proptest! {
    #[test]
    fn frontend_messages_round_trip(messages in proptest::collection::vec(frontend(), 1..6)) {
        let mut out = BytesMut::new();
        for m in &messages { m.encode(&mut out); }
        for m in &messages {
            let frame = split_frame(&mut out, &limits()).unwrap().unwrap();
            prop_assert_eq!(&FrontendMessage::decode(&frame).unwrap(), m);
        }
        prop_assert!(out.is_empty());
    }

    #[test]
    fn backend_messages_round_trip(messages in proptest::collection::vec(backend(), 1..6)) {
        let mut out = BytesMut::new();
        for m in &messages { m.encode(&mut out); }
        for m in &messages {
            let frame = split_frame(&mut out, &limits()).unwrap().unwrap();
            prop_assert_eq!(&BackendMessage::decode(&frame).unwrap(), m);
        }
    }

    #[test]
    fn startup_packets_round_trip(
        parameters in proptest::collection::vec(("[^\\x00]{1,12}", text()), 0..5),
        minor in 0u32..=0xffff,
        pid in any::<i32>(),
        secret in proptest::collection::vec(any::<u8>(), 4..=256),
    ) {
        for packet in [
            StartupPacket::Startup { protocol_version: (3 << 16) | minor, parameters: parameters.clone() },
            StartupPacket::CancelRequest { process_id: pid, secret_key: Bytes::from(secret.clone()) },
            StartupPacket::SslRequest,
            StartupPacket::GssEncRequest,
        ] {
            let mut out = BytesMut::new();
            packet.encode(&mut out);
            prop_assert_eq!(decode_startup(&mut out, &limits()).unwrap().unwrap(), packet);
        }
    }

    /// Valid messages with a few bytes overwritten or cut off: close to the
    /// grammar, so decoding goes deep before it fails.
    #[test]
    fn damaged_messages_never_panic(
        front in frontend(),
        back in backend(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        front.encode(&mut wire);
        back.encode(&mut wire);
        for (at, byte) in &edits {
            let i = at.index(wire.len());
            wire[i] = *byte;
        }
        wire.truncate(cut.index(wire.len() + 1));
        let mut buf = wire.clone();
        while let Ok(Some(frame)) = split_frame(&mut buf, &limits()) {
            let _ = FrontendMessage::decode(&frame);
            let _ = BackendMessage::decode(&frame);
        }
        let _ = decode_startup(&mut wire, &limits());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&data[..]);
        let _ = decode_startup(&mut buf, &limits());
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(frame)) = split_frame(&mut buf, &limits()) {
            let _ = FrontendMessage::decode(&frame);
            let _ = BackendMessage::decode(&frame);
            let _ = SaslInitialResponse::decode(&frame.body);
            let _ = decode_password(&frame.body);
        }
        if let Some(tag) = data.first() {
            let frame = Frame { tag: *tag, body: Bytes::copy_from_slice(&data[1..]) };
            let _ = FrontendMessage::decode(&frame);
            let _ = BackendMessage::decode(&frame);
        }
    }
}
