//! Typed protocol messages in both directions.

use bytes::{BufMut, Bytes, BytesMut};

use crate::reader::Reader;
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

fn put_nullable(out: &mut BytesMut, value: &Option<Bytes>) {
    match value {
        None => out.put_i32(-1),
        Some(v) => {
            out.put_i32(v.len() as i32);
            out.put_slice(v);
        }
    }
}

fn put_i16s(out: &mut BytesMut, values: &[i16]) {
    out.put_i16(values.len() as i16);
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
            b'Q' => FrontendMessage::Query {
                sql: r.cstr("query")?,
            },
            b'P' => {
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
            b'B' => FrontendMessage::Bind {
                portal: r.cstr("portal name")?,
                statement: r.cstr("statement name")?,
                param_formats: i16s(&mut r, "parameter formats")?,
                params: nullables(&mut r, "parameters")?,
                result_formats: i16s(&mut r, "result formats")?,
            },
            b'D' => FrontendMessage::Describe {
                target: Target::decode(r.u8("describe target")?)?,
                name: r.cstr("describe name")?,
            },
            b'E' => FrontendMessage::Execute {
                portal: r.cstr("portal name")?,
                max_rows: r.i32("row limit")?,
            },
            b'C' => FrontendMessage::Close {
                target: Target::decode(r.u8("close target")?)?,
                name: r.cstr("close name")?,
            },
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'X' => FrontendMessage::Terminate,
            b'd' => FrontendMessage::CopyData(r.rest()),
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail {
                message: r.cstr("copy failure")?,
            },
            b'F' => FrontendMessage::FunctionCall {
                oid: r.u32("function oid")?,
                arg_formats: i16s(&mut r, "argument formats")?,
                args: nullables(&mut r, "arguments")?,
                result_format: r.i16("result format")?,
            },
            b'p' => FrontendMessage::AuthResponse(r.rest()),
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.finish("message (trailing bytes)")?;
        Ok(message)
    }

    /// Append the message's wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self {
            FrontendMessage::Query { .. } => b'Q',
            FrontendMessage::Parse { .. } => b'P',
            FrontendMessage::Bind { .. } => b'B',
            FrontendMessage::Describe { .. } => b'D',
            FrontendMessage::Execute { .. } => b'E',
            FrontendMessage::Close { .. } => b'C',
            FrontendMessage::Sync => b'S',
            FrontendMessage::Flush => b'H',
            FrontendMessage::Terminate => b'X',
            FrontendMessage::CopyData(_) => b'd',
            FrontendMessage::CopyDone => b'c',
            FrontendMessage::CopyFail { .. } => b'f',
            FrontendMessage::FunctionCall { .. } => b'F',
            FrontendMessage::AuthResponse(_) => b'p',
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
                out.put_i16(param_types.len() as i16);
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
                out.put_i16(params.len() as i16);
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
                out.put_i16(args.len() as i16);
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
    let start = begin(out, b'p');
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
    let start = begin(out, b'p');
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
        let start = begin(out, b'p');
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
            b'R' => BackendMessage::Authentication(match r.i32("authentication code")? {
                0 => Authentication::Ok,
                2 => Authentication::KerberosV5,
                3 => Authentication::CleartextPassword,
                5 => {
                    let salt = r.bytes(4, "md5 salt")?;
                    Authentication::Md5Password {
                        salt: [salt[0], salt[1], salt[2], salt[3]],
                    }
                }
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
            }),
            b'K' => {
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
            b'S' => BackendMessage::ParameterStatus {
                name: r.cstr("parameter name")?,
                value: r.cstr("parameter value")?,
            },
            b'Z' => BackendMessage::ReadyForQuery {
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
            b'T' => {
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
            b'D' => BackendMessage::DataRow {
                values: nullables(&mut r, "data row")?,
            },
            b'C' => BackendMessage::CommandComplete {
                tag: r.cstr("command tag")?,
            },
            b'I' => BackendMessage::EmptyQueryResponse,
            b'E' => BackendMessage::ErrorResponse(ErrorFields::decode(&mut r)?),
            b'N' => BackendMessage::NoticeResponse(ErrorFields::decode(&mut r)?),
            b'1' => BackendMessage::ParseComplete,
            b'2' => BackendMessage::BindComplete,
            b'3' => BackendMessage::CloseComplete,
            b'n' => BackendMessage::NoData,
            b's' => BackendMessage::PortalSuspended,
            b't' => {
                let n = r.count(4, "parameter description")?;
                BackendMessage::ParameterDescription {
                    types: (0..n)
                        .map(|_| r.u32("parameter type"))
                        .collect::<Result<_, _>>()?,
                }
            }
            b'G' | b'H' | b'W' => {
                let format = r.u8("copy format")? as i8;
                let response = CopyResponse {
                    format,
                    column_formats: i16s(&mut r, "copy column formats")?,
                };
                match frame.tag {
                    b'G' => BackendMessage::CopyInResponse(response),
                    b'H' => BackendMessage::CopyOutResponse(response),
                    _ => BackendMessage::CopyBothResponse(response),
                }
            }
            b'd' => BackendMessage::CopyData(r.rest()),
            b'c' => BackendMessage::CopyDone,
            b'A' => BackendMessage::NotificationResponse {
                process_id: r.i32("process id")?,
                channel: r.cstr("channel")?,
                payload: r.cstr("payload")?,
            },
            b'v' => {
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
            b'V' => BackendMessage::FunctionCallResponse(r.nullable("function result")?),
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.finish("message (trailing bytes)")?;
        Ok(message)
    }

    /// Append the message's wire form.
    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::BackendKeyData { .. } => b'K',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::ReadyForQuery { .. } => b'Z',
            BackendMessage::RowDescription { .. } => b'T',
            BackendMessage::DataRow { .. } => b'D',
            BackendMessage::CommandComplete { .. } => b'C',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::ParseComplete => b'1',
            BackendMessage::BindComplete => b'2',
            BackendMessage::CloseComplete => b'3',
            BackendMessage::NoData => b'n',
            BackendMessage::PortalSuspended => b's',
            BackendMessage::ParameterDescription { .. } => b't',
            BackendMessage::CopyInResponse(_) => b'G',
            BackendMessage::CopyOutResponse(_) => b'H',
            BackendMessage::CopyBothResponse(_) => b'W',
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::NegotiateProtocolVersion { .. } => b'v',
            BackendMessage::FunctionCallResponse(_) => b'V',
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
                out.put_i16(fields.len() as i16);
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
                out.put_i16(values.len() as i16);
                for v in values {
                    put_nullable(out, v);
                }
            }
            BackendMessage::CommandComplete { tag } => put_cstr(out, tag),
            BackendMessage::ErrorResponse(fields) | BackendMessage::NoticeResponse(fields) => {
                fields.encode(out)
            }
            BackendMessage::ParameterDescription { types } => {
                out.put_i16(types.len() as i16);
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
