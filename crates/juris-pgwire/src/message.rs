//! Typed protocol messages in both directions.

use bytes::{BufMut, Bytes, BytesMut};

use crate::reader::Reader;
use crate::tag::{backend, frontend};
use crate::{DecodeError, Frame};

/// Describe/Close target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn decode(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(DecodeError::Malformed {
                what: "describe/close target",
            }),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// Messages a client sends after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    Query {
        sql: String,
    },
    Parse {
        name: String,
        sql: String,
        param_types: Vec<u32>,
    },
    Bind {
        portal: String,
        statement: String,
        param_formats: Vec<i16>,
        params: Vec<Option<Bytes>>,
        result_formats: Vec<i16>,
    },
    Describe {
        target: Target,
        name: String,
    },
    Execute {
        portal: String,
        max_rows: i32,
    },
    Close {
        target: Target,
        name: String,
    },
    Sync,
    Flush,
    Terminate,
    CopyData(Bytes),
    CopyDone,
    CopyFail {
        message: String,
    },
    FunctionCall {
        oid: u32,
        arg_formats: Vec<i16>,
        args: Vec<Option<Bytes>>,
        result_format: i16,
    },
    /// 'p': password, SASLInitialResponse, SASLResponse or GSS response; the
    /// meaning depends on the authentication exchange in progress.
    AuthResponse(Bytes),
}

/// Transaction state reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: String,
    pub table_oid: u32,
    pub column_attr: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: i16,
}

/// Body of CopyIn/CopyOut/CopyBothResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    pub format: i8,
    pub column_formats: Vec<i16>,
}

/// Authentication request variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    KerberosV5,
    CleartextPassword,
    Md5Password { salt: [u8; 4] },
    Scm,
    Gss,
    GssContinue(Bytes),
    Sspi,
    Sasl { mechanisms: Vec<String> },
    SaslContinue(Bytes),
    SaslFinal(Bytes),
}

/// Fields of an ErrorResponse or NoticeResponse, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// Severity (localised and not), SQLSTATE and message.
    pub fn new(severity: &str, code: &str, message: impl Into<String>) -> Self {
        ErrorFields {
            fields: vec![
                (b'S', severity.to_string()),
                (b'V', severity.to_string()),
                (b'C', code.to_string()),
                (b'M', message.into()),
            ],
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.fields.push((b'D', detail.into()));
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.fields.push((b'H', hint.into()));
        self
    }

    pub fn get(&self, field: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }

    pub fn severity(&self) -> Option<&str> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }

    pub fn code(&self) -> Option<&str> {
        self.get(b'C')
    }

    pub fn message(&self) -> Option<&str> {
        self.get(b'M')
    }

    fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        let mut fields = Vec::new();
        loop {
            let kind = reader.u8("error field")?;
            if kind == 0 {
                break;
            }
            fields.push((kind, reader.cstr("error field")?));
        }
        Ok(ErrorFields { fields })
    }

    fn encode(&self, out: &mut BytesMut) {
        for (kind, value) in &self.fields {
            out.put_u8(*kind);
            put_cstr(out, value);
        }
        out.put_u8(0);
    }
}

/// Messages a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(Authentication),
    BackendKeyData {
        process_id: i32,
        secret_key: Bytes,
    },
    ParameterStatus {
        name: String,
        value: String,
    },
    ReadyForQuery {
        status: TransactionStatus,
    },
    RowDescription {
        fields: Vec<FieldDescription>,
    },
    DataRow {
        values: Vec<Option<Bytes>>,
    },
    CommandComplete {
        tag: String,
    },
    EmptyQueryResponse,
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    PortalSuspended,
    ParameterDescription {
        types: Vec<u32>,
    },
    CopyInResponse(CopyResponse),
    CopyOutResponse(CopyResponse),
    CopyBothResponse(CopyResponse),
    CopyData(Bytes),
    CopyDone,
    NotificationResponse {
        process_id: i32,
        channel: String,
        payload: String,
    },
    NegotiateProtocolVersion {
        newest_minor: u32,
        unrecognized: Vec<String>,
    },
    FunctionCallResponse(Option<Bytes>),
}

pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// Write the length of the message that starts at `start` (at its length field).
pub(crate) fn patch_len(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Start a tagged message; returns the position of its length field.
fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let start = out.len();
    out.put_u32(0);
    start
}

// Encoders trust their input (it is built by this process, not read off the
// wire) and stay infallible. The wire cannot express more than 65 535 items or
// a value of 2 GiB or more; exceeding that is a caller bug, caught by
// `debug_assert!` in tests rather than by a `Result` on every encode.

fn put_count(out: &mut BytesMut, n: usize) {
    debug_assert!(
        n <= usize::from(u16::MAX),
        "count {n} does not fit the wire"
    );
    out.put_u16(n as u16);
}

fn put_nullable(out: &mut BytesMut, value: &Option<Bytes>) {
    match value {
        None => out.put_i32(-1),
        Some(v) => {
            debug_assert!(i32::try_from(v.len()).is_ok(), "value too long");
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
    }
}

fn put_i16s(out: &mut BytesMut, values: &[i16]) {
    put_count(out, values.len());
    for v in values {
        out.put_i16(*v);
    }
}

fn i16s(reader: &mut Reader, what: &'static str) -> Result<Vec<i16>, DecodeError> {
    let n = reader.count(2, what)?;
    (0..n).map(|_| reader.i16(what)).collect()
}

fn nullables(reader: &mut Reader, what: &'static str) -> Result<Vec<Option<Bytes>>, DecodeError> {
    let n = reader.count(4, what)?;
    (0..n).map(|_| reader.nullable(what)).collect()
}

impl FrontendMessage {
    /// Decode a client message from its frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame.body.clone());
        let message = match frame.tag {
            frontend::QUERY => FrontendMessage::Query {
                sql: r.cstr("query")?,
            },
            frontend::PARSE => {
                let name = r.cstr("statement name")?;
                let sql = r.cstr("query")?;
                let n = r.count(4, "parameter types")?;
                let param_types = (0..n)
                    .map(|_| r.u32("parameter type"))
                    .collect::<Result<_, _>>()?;
                FrontendMessage::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            frontend::BIND => FrontendMessage::Bind {
                portal: r.cstr("portal name")?,
                statement: r.cstr("statement name")?,
                param_formats: i16s(&mut r, "parameter formats")?,
                params: nullables(&mut r, "parameters")?,
                result_formats: i16s(&mut r, "result formats")?,
            },
            frontend::DESCRIBE => FrontendMessage::Describe {
                target: Target::decode(r.u8("describe target")?)?,
                name: r.cstr("describe name")?,
            },
            frontend::EXECUTE => FrontendMessage::Execute {
                portal: r.cstr("portal name")?,
                max_rows: r.i32("row limit")?,
            },
            frontend::CLOSE => FrontendMessage::Close {
                target: Target::decode(r.u8("close target")?)?,
                name: r.cstr("close name")?,
            },
            frontend::SYNC => FrontendMessage::Sync,
            frontend::FLUSH => FrontendMessage::Flush,
            frontend::TERMINATE => FrontendMessage::Terminate,
            frontend::COPY_DATA => FrontendMessage::CopyData(r.rest()),
            frontend::COPY_DONE => FrontendMessage::CopyDone,
            frontend::COPY_FAIL => FrontendMessage::CopyFail {
                message: r.cstr("copy failure")?,
            },
            frontend::FUNCTION_CALL => FrontendMessage::FunctionCall {
                oid: r.u32("function oid")?,
                arg_formats: i16s(&mut r, "argument formats")?,
                args: nullables(&mut r, "arguments")?,
                result_format: r.i16("result format")?,
            },
            frontend::AUTH_RESPONSE => FrontendMessage::AuthResponse(r.rest()),
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.finish("message (trailing bytes)")?;
        Ok(message)
    }

    /// Append the message's wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self {
            FrontendMessage::Query { .. } => frontend::QUERY,
            FrontendMessage::Parse { .. } => frontend::PARSE,
            FrontendMessage::Bind { .. } => frontend::BIND,
            FrontendMessage::Describe { .. } => frontend::DESCRIBE,
            FrontendMessage::Execute { .. } => frontend::EXECUTE,
            FrontendMessage::Close { .. } => frontend::CLOSE,
            FrontendMessage::Sync => frontend::SYNC,
            FrontendMessage::Flush => frontend::FLUSH,
            FrontendMessage::Terminate => frontend::TERMINATE,
            FrontendMessage::CopyData(_) => frontend::COPY_DATA,
            FrontendMessage::CopyDone => frontend::COPY_DONE,
            FrontendMessage::CopyFail { .. } => frontend::COPY_FAIL,
            FrontendMessage::FunctionCall { .. } => frontend::FUNCTION_CALL,
            FrontendMessage::AuthResponse(_) => frontend::AUTH_RESPONSE,
        };
        let start = begin(out, tag);
        match self {
            FrontendMessage::Query { sql } => put_cstr(out, sql),
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                put_cstr(out, name);
                put_cstr(out, sql);
                put_count(out, param_types.len());
                for t in param_types {
                    out.put_u32(*t);
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => {
                put_cstr(out, portal);
                put_cstr(out, statement);
                put_i16s(out, param_formats);
                put_count(out, params.len());
                for p in params {
                    put_nullable(out, p);
                }
                put_i16s(out, result_formats);
            }
            FrontendMessage::Describe { target, name }
            | FrontendMessage::Close { target, name } => {
                out.put_u8(target.byte());
                put_cstr(out, name);
            }
            FrontendMessage::Execute { portal, max_rows } => {
                put_cstr(out, portal);
                out.put_i32(*max_rows);
            }
            FrontendMessage::Sync
            | FrontendMessage::Flush
            | FrontendMessage::Terminate
            | FrontendMessage::CopyDone => {}
            FrontendMessage::CopyData(data) | FrontendMessage::AuthResponse(data) => {
                out.put_slice(data)
            }
            FrontendMessage::CopyFail { message } => put_cstr(out, message),
            FrontendMessage::FunctionCall {
                oid,
                arg_formats,
                args,
                result_format,
            } => {
                out.put_u32(*oid);
                put_i16s(out, arg_formats);
                put_count(out, args.len());
                for a in args {
                    put_nullable(out, a);
                }
                out.put_i16(*result_format);
            }
        }
        patch_len(out, start);
    }
}

/// Encode a PasswordMessage.
pub fn password_message(password: &str, out: &mut BytesMut) {
    let start = begin(out, frontend::AUTH_RESPONSE);
    put_cstr(out, password);
    patch_len(out, start);
}

/// The password in a PasswordMessage body.
pub fn decode_password(body: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader::new(Bytes::copy_from_slice(body));
    let password = r.cstr("password")?;
    r.finish("password message")?;
    Ok(password)
}

/// Encode a SASLResponse.
pub fn sasl_response(data: &[u8], out: &mut BytesMut) {
    let start = begin(out, frontend::AUTH_RESPONSE);
    out.put_slice(data);
    patch_len(out, start);
}

/// The first message of a SASL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    pub mechanism: String,
    pub data: Option<Bytes>,
}

impl SaslInitialResponse {
    /// Decode from a 'p' body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(body));
        let mechanism = r.cstr("SASL mechanism")?;
        let data = r.nullable("SASL data")?;
        r.finish("SASL initial response")?;
        Ok(SaslInitialResponse { mechanism, data })
    }

    /// Encode as a whole 'p' message.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = begin(out, frontend::AUTH_RESPONSE);
        put_cstr(out, &self.mechanism);
        put_nullable(out, &self.data);
        patch_len(out, start);
    }
}

impl BackendMessage {
    /// Decode a server message from its frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame.body.clone());
        let message = match frame.tag {
            backend::AUTHENTICATION => {
                BackendMessage::Authentication(match r.i32("authentication code")? {
                    0 => Authentication::Ok,
                    2 => Authentication::KerberosV5,
                    3 => Authentication::CleartextPassword,
                    5 => Authentication::Md5Password {
                        salt: r.array("md5 salt")?,
                    },
                    6 => Authentication::Scm,
                    7 => Authentication::Gss,
                    8 => Authentication::GssContinue(r.rest()),
                    9 => Authentication::Sspi,
                    10 => {
                        let mut mechanisms = Vec::new();
                        loop {
                            let m = r.cstr("SASL mechanism")?;
                            if m.is_empty() {
                                break;
                            }
                            mechanisms.push(m);
                        }
                        Authentication::Sasl { mechanisms }
                    }
                    11 => Authentication::SaslContinue(r.rest()),
                    12 => Authentication::SaslFinal(r.rest()),
                    _ => {
                        return Err(DecodeError::Malformed {
                            what: "authentication code",
                        });
                    }
                })
            }
            backend::BACKEND_KEY_DATA => {
                let process_id = r.i32("process id")?;
                let secret_key = r.rest();
                if secret_key.len() < 4 || secret_key.len() > 256 {
                    return Err(DecodeError::Malformed { what: "secret key" });
                }
                BackendMessage::BackendKeyData {
                    process_id,
                    secret_key,
                }
            }
            backend::PARAMETER_STATUS => BackendMessage::ParameterStatus {
                name: r.cstr("parameter name")?,
                value: r.cstr("parameter value")?,
            },
            backend::READY_FOR_QUERY => BackendMessage::ReadyForQuery {
                status: match r.u8("transaction status")? {
                    b'I' => TransactionStatus::Idle,
                    b'T' => TransactionStatus::InTransaction,
                    b'E' => TransactionStatus::Failed,
                    _ => {
                        return Err(DecodeError::Malformed {
                            what: "transaction status",
                        });
                    }
                },
            },
            backend::ROW_DESCRIPTION => {
                let n = r.count(19, "row description")?;
                let fields = (0..n)
                    .map(|_| {
                        Ok(FieldDescription {
                            name: r.cstr("column name")?,
                            table_oid: r.u32("table oid")?,
                            column_attr: r.i16("column number")?,
                            type_oid: r.u32("type oid")?,
                            type_size: r.i16("type size")?,
                            type_modifier: r.i32("type modifier")?,
                            format: r.i16("format")?,
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?;
                BackendMessage::RowDescription { fields }
            }
            backend::DATA_ROW => BackendMessage::DataRow {
                values: nullables(&mut r, "data row")?,
            },
            backend::COMMAND_COMPLETE => BackendMessage::CommandComplete {
                tag: r.cstr("command tag")?,
            },
            backend::EMPTY_QUERY_RESPONSE => BackendMessage::EmptyQueryResponse,
            backend::ERROR_RESPONSE => BackendMessage::ErrorResponse(ErrorFields::decode(&mut r)?),
            backend::NOTICE_RESPONSE => {
                BackendMessage::NoticeResponse(ErrorFields::decode(&mut r)?)
            }
            backend::PARSE_COMPLETE => BackendMessage::ParseComplete,
            backend::BIND_COMPLETE => BackendMessage::BindComplete,
            backend::CLOSE_COMPLETE => BackendMessage::CloseComplete,
            backend::NO_DATA => BackendMessage::NoData,
            backend::PORTAL_SUSPENDED => BackendMessage::PortalSuspended,
            backend::PARAMETER_DESCRIPTION => {
                let n = r.count(4, "parameter description")?;
                BackendMessage::ParameterDescription {
                    types: (0..n)
                        .map(|_| r.u32("parameter type"))
                        .collect::<Result<_, _>>()?,
                }
            }
            backend::COPY_IN_RESPONSE
            | backend::COPY_OUT_RESPONSE
            | backend::COPY_BOTH_RESPONSE => {
                let format = r.u8("copy format")? as i8;
                let response = CopyResponse {
                    format,
                    column_formats: i16s(&mut r, "copy column formats")?,
                };
                match frame.tag {
                    backend::COPY_IN_RESPONSE => BackendMessage::CopyInResponse(response),
                    backend::COPY_OUT_RESPONSE => BackendMessage::CopyOutResponse(response),
                    _ => BackendMessage::CopyBothResponse(response),
                }
            }
            backend::COPY_DATA => BackendMessage::CopyData(r.rest()),
            backend::COPY_DONE => BackendMessage::CopyDone,
            backend::NOTIFICATION_RESPONSE => BackendMessage::NotificationResponse {
                process_id: r.i32("process id")?,
                channel: r.cstr("channel")?,
                payload: r.cstr("payload")?,
            },
            backend::NEGOTIATE_PROTOCOL_VERSION => {
                let newest_minor = r.u32("protocol minor version")?;
                let n = r.i32("option count")?;
                let n = usize::try_from(n).map_err(|_| DecodeError::Malformed {
                    what: "option count",
                })?;
                let mut unrecognized = Vec::new();
                for _ in 0..n {
                    if r.is_empty() {
                        return Err(DecodeError::Malformed {
                            what: "option count",
                        });
                    }
                    unrecognized.push(r.cstr("option name")?);
                }
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognized,
                }
            }
            backend::FUNCTION_CALL_RESPONSE => {
                BackendMessage::FunctionCallResponse(r.nullable("function result")?)
            }
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.finish("message (trailing bytes)")?;
        Ok(message)
    }

    /// Append the message's wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self {
            BackendMessage::Authentication(_) => backend::AUTHENTICATION,
            BackendMessage::BackendKeyData { .. } => backend::BACKEND_KEY_DATA,
            BackendMessage::ParameterStatus { .. } => backend::PARAMETER_STATUS,
            BackendMessage::ReadyForQuery { .. } => backend::READY_FOR_QUERY,
            BackendMessage::RowDescription { .. } => backend::ROW_DESCRIPTION,
            BackendMessage::DataRow { .. } => backend::DATA_ROW,
            BackendMessage::CommandComplete { .. } => backend::COMMAND_COMPLETE,
            BackendMessage::EmptyQueryResponse => backend::EMPTY_QUERY_RESPONSE,
            BackendMessage::ErrorResponse(_) => backend::ERROR_RESPONSE,
            BackendMessage::NoticeResponse(_) => backend::NOTICE_RESPONSE,
            BackendMessage::ParseComplete => backend::PARSE_COMPLETE,
            BackendMessage::BindComplete => backend::BIND_COMPLETE,
            BackendMessage::CloseComplete => backend::CLOSE_COMPLETE,
            BackendMessage::NoData => backend::NO_DATA,
            BackendMessage::PortalSuspended => backend::PORTAL_SUSPENDED,
            BackendMessage::ParameterDescription { .. } => backend::PARAMETER_DESCRIPTION,
            BackendMessage::CopyInResponse(_) => backend::COPY_IN_RESPONSE,
            BackendMessage::CopyOutResponse(_) => backend::COPY_OUT_RESPONSE,
            BackendMessage::CopyBothResponse(_) => backend::COPY_BOTH_RESPONSE,
            BackendMessage::CopyData(_) => backend::COPY_DATA,
            BackendMessage::CopyDone => backend::COPY_DONE,
            BackendMessage::NotificationResponse { .. } => backend::NOTIFICATION_RESPONSE,
            BackendMessage::NegotiateProtocolVersion { .. } => backend::NEGOTIATE_PROTOCOL_VERSION,
            BackendMessage::FunctionCallResponse(_) => backend::FUNCTION_CALL_RESPONSE,
        };
        let start = begin(out, tag);
        match self {
            BackendMessage::Authentication(auth) => match auth {
                Authentication::Ok => out.put_i32(0),
                Authentication::KerberosV5 => out.put_i32(2),
                Authentication::CleartextPassword => out.put_i32(3),
                Authentication::Md5Password { salt } => {
                    out.put_i32(5);
                    out.put_slice(salt);
                }
                Authentication::Scm => out.put_i32(6),
                Authentication::Gss => out.put_i32(7),
                Authentication::GssContinue(data) => {
                    out.put_i32(8);
                    out.put_slice(data);
                }
                Authentication::Sspi => out.put_i32(9),
                Authentication::Sasl { mechanisms } => {
                    out.put_i32(10);
                    for m in mechanisms {
                        put_cstr(out, m);
                    }
                    out.put_u8(0);
                }
                Authentication::SaslContinue(data) => {
                    out.put_i32(11);
                    out.put_slice(data);
                }
                Authentication::SaslFinal(data) => {
                    out.put_i32(12);
                    out.put_slice(data);
                }
            },
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => {
                out.put_i32(*process_id);
                out.put_slice(secret_key);
            }
            BackendMessage::ParameterStatus { name, value } => {
                put_cstr(out, name);
                put_cstr(out, value);
            }
            BackendMessage::ReadyForQuery { status } => out.put_u8(match status {
                TransactionStatus::Idle => b'I',
                TransactionStatus::InTransaction => b'T',
                TransactionStatus::Failed => b'E',
            }),
            BackendMessage::RowDescription { fields } => {
                put_count(out, fields.len());
                for f in fields {
                    put_cstr(out, &f.name);
                    out.put_u32(f.table_oid);
                    out.put_i16(f.column_attr);
                    out.put_u32(f.type_oid);
                    out.put_i16(f.type_size);
                    out.put_i32(f.type_modifier);
                    out.put_i16(f.format);
                }
            }
            BackendMessage::DataRow { values } => {
                put_count(out, values.len());
                for v in values {
                    put_nullable(out, v);
                }
            }
            BackendMessage::CommandComplete { tag } => put_cstr(out, tag),
            BackendMessage::ErrorResponse(fields) | BackendMessage::NoticeResponse(fields) => {
                fields.encode(out)
            }
            BackendMessage::ParameterDescription { types } => {
                put_count(out, types.len());
                for t in types {
                    out.put_u32(*t);
                }
            }
            BackendMessage::CopyInResponse(c)
            | BackendMessage::CopyOutResponse(c)
            | BackendMessage::CopyBothResponse(c) => {
                out.put_i8(c.format);
                put_i16s(out, &c.column_formats);
            }
            BackendMessage::CopyData(data) => out.put_slice(data),
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            } => {
                out.put_i32(*process_id);
                put_cstr(out, channel);
                put_cstr(out, payload);
            }
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            } => {
                out.put_u32(*newest_minor);
                out.put_i32(unrecognized.len() as i32);
                for u in unrecognized {
                    put_cstr(out, u);
                }
            }
            BackendMessage::FunctionCallResponse(value) => put_nullable(out, value),
            BackendMessage::EmptyQueryResponse
            | BackendMessage::ParseComplete
            | BackendMessage::BindComplete
            | BackendMessage::CloseComplete
            | BackendMessage::NoData
            | BackendMessage::PortalSuspended
            | BackendMessage::CopyDone => {}
        }
        patch_len(out, start);
    }
}
