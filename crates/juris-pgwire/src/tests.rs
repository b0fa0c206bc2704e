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

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _.,;()*'$=-]{0,40}"
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
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|d| FrontendMessage::CopyData(Bytes::from(d))),
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
        proptest::collection::vec(
            (
                prop_oneof![Just(b'S'), Just(b'C'), Just(b'M'), Just(b'D')],
                text(),
            ),
            0..5,
        )
        .prop_map(|fields| ErrorFields { fields })
    };
    let copy = (any::<i8>(), proptest::collection::vec(any::<i16>(), 0..4)).prop_map(
        |(format, column_formats)| CopyResponse {
            format,
            column_formats,
        },
    );
    prop_oneof![
        Just(BackendMessage::Authentication(Authentication::Ok)),
        Just(BackendMessage::Authentication(
            Authentication::CleartextPassword
        )),
        any::<[u8; 4]>()
            .prop_map(|salt| BackendMessage::Authentication(Authentication::Md5Password { salt })),
        proptest::collection::vec("[A-Z0-9-]{1,20}", 0..3).prop_map(|mechanisms| {
            BackendMessage::Authentication(Authentication::Sasl { mechanisms })
        }),
        (any::<i32>(), any::<[u8; 4]>()).prop_map(|(process_id, s)| {
            BackendMessage::BackendKeyData {
                process_id,
                secret_key: Bytes::copy_from_slice(&s),
            }
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
        Just(BackendMessage::ParseComplete),
        Just(BackendMessage::NoData),
        proptest::collection::vec(any::<u32>(), 0..4)
            .prop_map(|types| BackendMessage::ParameterDescription { types }),
        copy.clone().prop_map(BackendMessage::CopyInResponse),
        copy.prop_map(BackendMessage::CopyOutResponse),
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
    fn startup_packets_round_trip(parameters in proptest::collection::vec(("[a-z_]{1,12}", text()), 0..5), pid in any::<i32>(), secret in any::<[u8; 4]>()) {
        for packet in [
            StartupPacket::Startup { protocol_version: code::PROTOCOL_3_0, parameters: parameters.clone() },
            StartupPacket::CancelRequest { process_id: pid, secret_key: Bytes::copy_from_slice(&secret) },
            StartupPacket::GssEncRequest,
        ] {
            let mut out = BytesMut::new();
            packet.encode(&mut out);
            prop_assert_eq!(decode_startup(&mut out, &limits()).unwrap().unwrap(), packet);
        }
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
