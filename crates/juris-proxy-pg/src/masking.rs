//! Result masking for one session: what the relay does to server messages
//! before they reach a client whose connection has masking rules.
//!
//! A RowDescription becomes a *plan*: per column, the column rule that
//! applies (found through the catalog's origins, so aliases and views do not
//! matter) and how its values are encoded (text, or binary of which type).
//! DataRows are then rewritten against the plan: only rows in which
//! something changes are re-encoded, every other row is forwarded as it
//! came. COPY rows, error and notice fields and NOTIFY payloads go through
//! the same masker.
//!
//! Fail closed: a value that must be masked in a binary type Juris cannot
//! rewrite becomes NULL; if the catalog cannot be asked, the session ends
//! rather than guess.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use juris_mask::{ColumnRuleId, CopyFormat, DetectorId, Findings, Masker, Outcome, SourceColumn};
use juris_pgwire::{CopyResponse, ErrorFields, FieldDescription};
use juris_policy::{CopyDataFormat, CopyOut};
use juris_types::SessionId;
use juris_types::audit::{MaskAction, MaskingEvent};

use crate::AuditSink;
use crate::catalog::{Catalog, ColumnOrigin};

/// Masking could not be done safely; the session must end.
#[derive(Debug, thiserror::Error)]
pub enum MaskingFailure {
    #[error(
        "masking cannot resolve the result's columns ({0}); the session is ended so that nothing unmasked leaves the gateway"
    )]
    Catalog(String),
    #[error("the upstream sent a malformed {0}")]
    Malformed(&'static str),
    #[error(
        "binary COPY output cannot be masked; the session is ended so that nothing unmasked leaves the gateway"
    )]
    BinaryCopy,
}

/// Type OIDs whose text form cannot carry the values detectors look for.
const NO_SCAN_TYPES: &[u32] = &[
    16,   // bool
    21,   // int2
    26,   // oid
    700,  // float4
    701,  // float8
    1082, // date
    1083, // time
    1114, // timestamp
    1184, // timestamptz
    1186, // interval
    1266, // timetz
    2950, // uuid
];

/// Type OIDs whose binary form is their text (so it can be rewritten).
const BINARY_TEXT_TYPES: &[u32] = &[
    18,   // char
    19,   // name
    25,   // text
    114,  // json
    142,  // xml
    705,  // unknown
    1042, // bpchar
    1043, // varchar
    2275, // cstring
];

const INT4: u32 = 23;
const INT8: u32 = 20;
const BYTEA: u32 = 17;

/// How a column's values are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Text format of a type detectors can find something in.
    Text,
    /// Text format of a type that cannot hold detectable values.
    TextNoScan,
    /// bytea in text format (`\x` + hex): decoded and scanned, NULL if
    /// anything is found (`ssn::bytea` must not be a way around masking).
    TextBytea,
    /// Binary format whose bytes are the text.
    BinaryText,
    BinaryInt4,
    BinaryInt8,
    BinaryNoScan,
    /// Any other binary type: scanned as bytes, NULL if anything is found.
    BinaryOpaque,
}

impl Encoding {
    fn of(field: &FieldDescription) -> Encoding {
        let binary = field.format == 1;
        let ty = field.type_oid;
        match (binary, ty) {
            (false, BYTEA) => Encoding::TextBytea,
            (false, t) if NO_SCAN_TYPES.contains(&t) => Encoding::TextNoScan,
            (false, _) => Encoding::Text,
            (true, t) if BINARY_TEXT_TYPES.contains(&t) => Encoding::BinaryText,
            (true, INT4) => Encoding::BinaryInt4,
            (true, INT8) => Encoding::BinaryInt8,
            (true, t) if NO_SCAN_TYPES.contains(&t) => Encoding::BinaryNoScan,
            (true, _) => Encoding::BinaryOpaque,
        }
    }
}

/// What to do with one result column.
#[derive(Debug, Clone)]
struct ColumnPlan {
    rule: Option<ColumnRuleId>,
    encoding: Encoding,
    label: String,
    /// Values the rule masked since the last report (a plain counter: this
    /// is the per-value hot path).
    masked: u64,
}

/// How the rows of a running COPY are masked.
struct CopyPlan {
    format: CopyFormat,
    rules: Vec<Option<ColumnRuleId>>,
    header_pending: bool,
}

/// Where a masking count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    Rule,
    Detector(DetectorId),
}

/// Where in the protocol a value was masked, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Place {
    Column(usize),
    CopyField(usize),
    Copy,
    Error,
    Notice,
    Notification,
}

/// Identity of the session, for events.
pub struct SessionLabels {
    pub session: SessionId,
    pub principal: String,
    pub connection: String,
}

/// The masking state of one session.
pub struct SessionMasking {
    masker: Arc<Masker>,
    catalog: Arc<Catalog>,
    audit: Arc<dyn AuditSink>,
    labels: SessionLabels,
    columns: Vec<ColumnPlan>,
    copy: Option<CopyPlan>,
    /// Labels of the current COPY's fields, kept until its report is made.
    copy_labels: Vec<String>,
    counts: HashMap<(Place, Source, &'static str), u64>,
    findings: Findings,
    scratch: Vec<u8>,
    statements: u64,
}

impl std::fmt::Debug for SessionMasking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMasking")
            .field("masker", &self.masker)
            .field("statements", &self.statements)
            .finish_non_exhaustive()
    }
}

impl SessionMasking {
    pub fn new(
        masker: Arc<Masker>,
        catalog: Arc<Catalog>,
        audit: Arc<dyn AuditSink>,
        labels: SessionLabels,
    ) -> Self {
        SessionMasking {
            masker,
            catalog,
            audit,
            labels,
            columns: Vec::new(),
            copy: None,
            copy_labels: Vec::new(),
            counts: HashMap::new(),
            findings: Findings::default(),
            scratch: Vec::new(),
            statements: 0,
        }
    }

    /// The connection's compiled policy.
    pub fn masker(&self) -> &Arc<Masker> {
        &self.masker
    }

    pub fn has_value_rules(&self) -> bool {
        self.masker.has_value_rules()
    }

    /// A RowDescription: plan the columns that follow.
    pub async fn describe(&mut self, fields: &[FieldDescription]) -> Result<(), MaskingFailure> {
        self.fold_column_counts();
        let origins = self.origins(fields).await?;
        self.columns = fields
            .iter()
            .zip(origins)
            .map(|(field, origin)| self.plan(field, origin.as_ref()))
            .collect();
        Ok(())
    }

    async fn origins(
        &self,
        fields: &[FieldDescription],
    ) -> Result<Vec<Option<ColumnOrigin>>, MaskingFailure> {
        let wanted: Vec<(u32, i16)> = fields
            .iter()
            .map(|f| (f.table_oid, f.column_attr))
            .collect();
        if wanted.iter().all(|(oid, _)| *oid == 0) {
            return Ok(vec![None; fields.len()]);
        }
        self.catalog
            .origins(&wanted)
            .await
            .map_err(|e| MaskingFailure::Catalog(e.to_string()))
    }

    fn plan(&self, field: &FieldDescription, origin: Option<&ColumnOrigin>) -> ColumnPlan {
        let source = |c: &crate::catalog::QualifiedColumn| {
            self.masker.column_rule(
                Some(SourceColumn {
                    schema: &c.schema,
                    table: &c.table,
                    column: &c.column,
                }),
                &field.name,
            )
        };
        let (rule, label) = match origin {
            Some(origin) => {
                let from_base = origin
                    .base
                    .as_ref()
                    .and_then(|base| source(base).map(|rule| (rule, qualified(base))));
                match from_base {
                    Some((rule, label)) => (Some(rule), label),
                    None => (
                        source(&origin.own),
                        qualified(origin.base.as_ref().unwrap_or(&origin.own)),
                    ),
                }
            }
            None => (
                self.masker.column_rule(None, &field.name),
                field.name.clone(),
            ),
        };
        ColumnPlan {
            rule,
            encoding: Encoding::of(field),
            label,
            masked: 0,
        }
    }

    /// NoData, or a result without rows: nothing to plan.
    pub fn no_rows(&mut self) {
        self.columns.clear();
    }

    /// Mask a DataRow body. `Ok(true)`: `out` holds the whole replacement
    /// frame; `Ok(false)`: forward the original.
    pub fn data_row(&mut self, body: &[u8], out: &mut BytesMut) -> Result<bool, MaskingFailure> {
        const MALFORMED: MaskingFailure = MaskingFailure::Malformed("data row");
        let count = body.get(..2).ok_or(MALFORMED)?;
        let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
        let mut position = 2;
        let mut changed = false;
        for index in 0..count {
            let length = body.get(position..position + 4).ok_or(MALFORMED)?;
            let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
            let value_start = position;
            position += 4;
            if length < 0 {
                if changed {
                    out.put_i32(-1);
                }
                continue;
            }
            let length = usize::try_from(length).map_err(|_| MALFORMED)?;
            let value = body.get(position..position + length).ok_or(MALFORMED)?;
            position += length;
            let outcome = self.mask_column(index, value);
            if matches!(outcome, Outcome::Unchanged) {
                if changed {
                    out.put_i32(length as i32);
                    out.put_slice(value);
                }
                continue;
            }
            if !changed {
                changed = true;
                out.clear();
                out.put_u8(b'D');
                out.put_u32(0);
                out.put_slice(&body[..value_start]);
            }
            match outcome {
                Outcome::Null => out.put_i32(-1),
                _ => {
                    out.put_i32(self.scratch.len() as i32);
                    out.put_slice(&self.scratch);
                }
            }
        }
        if position != body.len() {
            return Err(MALFORMED);
        }
        if changed {
            let length = (out.len() - 1) as u32;
            out[1..5].copy_from_slice(&length.to_be_bytes());
        }
        Ok(changed)
    }

    fn mask_column(&mut self, index: usize, value: &[u8]) -> Outcome {
        // Columns beyond the description (should not happen) are treated as
        // text of unknown origin: value rules apply.
        let (rule, encoding) = self
            .columns
            .get(index)
            .map_or((None, Encoding::Text), |c| (c.rule, c.encoding));
        let place = Place::Column(index);
        if let Some(rule) = rule {
            if let Some(plan) = self.columns.get_mut(index) {
                plan.masked += 1;
            }
            return match encoding {
                Encoding::Text
                | Encoding::TextNoScan
                | Encoding::TextBytea
                | Encoding::BinaryText => self.masker.mask_whole(rule, value, &mut self.scratch),
                _ => Outcome::Null,
            };
        }
        if !self.masker.has_value_rules() {
            return Outcome::Unchanged;
        }
        let outcome = match encoding {
            Encoding::TextNoScan | Encoding::BinaryNoScan => return Outcome::Unchanged,
            Encoding::Text | Encoding::BinaryText => {
                self.masker
                    .mask_value(value, &mut self.scratch, &mut self.findings)
            }
            Encoding::BinaryInt4 | Encoding::BinaryInt8 => {
                let text = match (encoding, value.len()) {
                    (Encoding::BinaryInt4, 4) => {
                        i32::from_be_bytes([value[0], value[1], value[2], value[3]]).to_string()
                    }
                    (Encoding::BinaryInt8, 8) => {
                        let mut bytes = [0u8; 8];
                        bytes.copy_from_slice(value);
                        i64::from_be_bytes(bytes).to_string()
                    }
                    _ => return Outcome::Null,
                };
                null_if_found(self.masker.mask_value(
                    text.as_bytes(),
                    &mut self.scratch,
                    &mut self.findings,
                ))
            }
            Encoding::BinaryOpaque => null_if_found(self.masker.mask_value(
                value,
                &mut self.scratch,
                &mut self.findings,
            )),
            Encoding::TextBytea => match decode_hex_bytea(value) {
                Some(bytes) => null_if_found(self.masker.mask_value(
                    &bytes,
                    &mut self.scratch,
                    &mut self.findings,
                )),
                // The escape format (bytea_output = escape) keeps printable
                // bytes as they are: scan it as it is.
                None => null_if_found(self.masker.mask_value(
                    value,
                    &mut self.scratch,
                    &mut self.findings,
                )),
            },
        };
        self.take_findings(place);
        outcome
    }

    fn take_findings(&mut self, place: Place) {
        if self.findings.is_empty() {
            return;
        }
        for finding in self.findings.iter() {
            *self
                .counts
                .entry((
                    place,
                    Source::Detector(finding.detector),
                    finding.strategy.name(),
                ))
                .or_default() += finding.count;
        }
        self.findings.clear();
    }

    /// A CopyOutResponse. `copy` is the statement's own description when
    /// the relay knows which statement this is.
    pub async fn copy_out(
        &mut self,
        response: &CopyResponse,
        copy: Option<CopyOut>,
    ) -> Result<(), MaskingFailure> {
        if response.format != 0
            || copy
                .as_ref()
                .is_some_and(|c| c.format == CopyDataFormat::Binary)
        {
            return Err(MaskingFailure::BinaryCopy);
        }
        let columns = response.column_formats.len();
        let (format, header, select) = match &copy {
            Some(c) => {
                let mut format = if c.format == CopyDataFormat::Csv {
                    CopyFormat::csv()
                } else {
                    CopyFormat::text()
                };
                if let Some(d) = c.delimiter {
                    format.delimiter = d;
                }
                if let Some(q) = c.quote {
                    format.quote = q;
                    if c.escape.is_none() {
                        format.escape = q;
                    }
                }
                if let Some(e) = c.escape {
                    format.escape = e;
                }
                if let Some(n) = &c.null {
                    format.null = n.as_bytes().to_vec();
                }
                (format, c.header, c.select.clone())
            }
            None => (CopyFormat::text(), false, None),
        };
        let mut rules = vec![None; columns];
        self.copy_labels.clear();
        if self.masker.has_column_rules() {
            // Column rules need to know which column each field is; a COPY
            // whose columns cannot be described is not streamed unmasked.
            let Some(select) = select else {
                return Err(MaskingFailure::Catalog(
                    "the COPY's columns are unknown".into(),
                ));
            };
            let fields = self
                .catalog
                .describe(&select)
                .await
                .map_err(|e| MaskingFailure::Catalog(e.to_string()))?;
            let origins = self.origins(&fields).await?;
            for (index, (field, origin)) in fields.iter().zip(origins).enumerate() {
                let plan = self.plan(field, origin.as_ref());
                if let Some(slot) = rules.get_mut(index) {
                    *slot = plan.rule;
                }
                self.copy_labels.push(plan.label);
            }
        }
        self.copy = Some(CopyPlan {
            format,
            rules,
            header_pending: header,
        });
        Ok(())
    }

    /// One CopyData row of a COPY TO. `Ok(true)`: `out` holds the whole
    /// replacement frame.
    pub fn copy_data(&mut self, body: &[u8], out: &mut BytesMut) -> Result<bool, MaskingFailure> {
        let Some(plan) = self.copy.as_mut() else {
            return Ok(false);
        };
        if plan.header_pending {
            plan.header_pending = false;
            return Ok(false);
        }
        for (index, rule) in plan.rules.iter().enumerate() {
            if let Some(rule) = rule {
                let strategy = self.masker.column_strategy(*rule).name();
                *self
                    .counts
                    .entry((Place::CopyField(index), Source::Rule, strategy))
                    .or_default() += 1;
            }
        }
        self.scratch.clear();
        let changed = juris_mask::mask_row(
            &self.masker,
            &plan.format,
            &plan.rules,
            body,
            &mut self.scratch,
            &mut self.findings,
        )
        .map_err(|_| MaskingFailure::Malformed("COPY row"))?;
        self.take_findings(Place::Copy);
        if !changed {
            return Ok(false);
        }
        out.clear();
        out.put_u8(b'd');
        out.put_u32((self.scratch.len() + 4) as u32);
        out.put_slice(&self.scratch);
        Ok(true)
    }

    /// CopyDone: the COPY is over.
    pub fn copy_done(&mut self) {
        self.copy = None;
    }

    /// Mask the free-text fields of an ErrorResponse or NoticeResponse.
    pub fn error_fields(&mut self, fields: &mut ErrorFields, notice: bool) -> bool {
        if !self.masker.has_value_rules() {
            return false;
        }
        let mut changed = false;
        for (kind, value) in fields.fields.iter_mut() {
            // Message, detail, hint, context, internal query.
            if !matches!(kind, b'M' | b'D' | b'H' | b'W' | b'q') {
                continue;
            }
            if let std::borrow::Cow::Owned(masked) =
                self.masker.mask_text(value, &mut self.findings)
            {
                *value = masked;
                changed = true;
            }
        }
        self.take_findings(if notice { Place::Notice } else { Place::Error });
        changed
    }

    /// Mask a NOTIFY payload; `Some` when it changed.
    pub fn notification(&mut self, payload: &str) -> Option<String> {
        if !self.masker.has_value_rules() {
            return None;
        }
        let masked = match self.masker.mask_text(payload, &mut self.findings) {
            std::borrow::Cow::Owned(masked) => Some(masked),
            std::borrow::Cow::Borrowed(_) => None,
        };
        self.take_findings(Place::Notification);
        masked
    }

    /// Move the per-column rule counters into the report.
    fn fold_column_counts(&mut self) {
        for (index, plan) in self.columns.iter_mut().enumerate() {
            if plan.masked == 0 {
                continue;
            }
            if let Some(rule) = plan.rule {
                let strategy = self.masker.column_strategy(rule).name();
                *self
                    .counts
                    .entry((Place::Column(index), Source::Rule, strategy))
                    .or_default() += plan.masked;
            }
            plan.masked = 0;
        }
    }

    /// A statement's output ended: report what was masked, if anything.
    pub fn statement_done(&mut self) {
        self.statements += 1;
        self.fold_column_counts();
        if self.counts.is_empty() {
            return;
        }
        let mut actions: Vec<MaskAction> = self
            .counts
            .drain()
            .map(|((place, source, strategy), count)| MaskAction {
                column: match place {
                    Place::Column(i) => self
                        .columns
                        .get(i)
                        .map_or_else(|| format!("(column {})", i + 1), |c| c.label.clone()),
                    Place::CopyField(i) => self
                        .copy_labels
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("(copy field {})", i + 1)),
                    Place::Copy => "(copy)".into(),
                    Place::Error => "(error)".into(),
                    Place::Notice => "(notice)".into(),
                    Place::Notification => "(notification)".into(),
                },
                detector: match source {
                    Source::Rule => "column rule".into(),
                    Source::Detector(d) => self.masker.detector_name(d).to_string(),
                },
                strategy: strategy.to_string(),
                count,
            })
            .collect();
        actions.sort_by(|a, b| (&a.column, &a.detector).cmp(&(&b.column, &b.detector)));
        self.audit.masking(&MaskingEvent {
            session: self.labels.session,
            principal: self.labels.principal.clone(),
            connection: self.labels.connection.clone(),
            statement: self.statements,
            actions,
        });
    }
}

fn qualified(c: &crate::catalog::QualifiedColumn) -> String {
    format!("{}.{}.{}", c.schema, c.table, c.column)
}

/// `\x48656c6c6f` → `Hello`; `None` for anything else.
fn decode_hex_bytea(value: &[u8]) -> Option<Vec<u8>> {
    let hex = value.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    hex.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn null_if_found(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Unchanged => Outcome::Unchanged,
        _ => Outcome::Null,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use juris_mask::{ColumnRule, MaskingPolicy, StrategyName, ValueRule};
    use juris_pgwire::{BackendMessage, Frame};
    use proptest::prelude::*;

    use super::*;
    use crate::upstream::UpstreamTarget;

    #[derive(Default)]
    struct Collect(Mutex<Vec<MaskingEvent>>);

    impl AuditSink for Collect {
        fn masking(&self, event: &MaskingEvent) {
            self.0.lock().unwrap().push(event.clone());
        }

        fn record(&self, _event: juris_audit::AuditEvent) {}
    }

    const SSN: &str = "123-45-6789";
    const CARD: &str = "4111111111111111";

    fn session(audit: Arc<Collect>) -> SessionMasking {
        let policy = MaskingPolicy {
            exempt_groups: Vec::new(),
            columns: vec![ColumnRule {
                name: None,
                pattern: Some("*secret*".into()),
                strategy: StrategyName::Partial,
                keep_last: Some(2),
            }],
            values: vec![
                ValueRule {
                    detector: "ssn".into(),
                    strategy: StrategyName::Redact,
                    keep_last: None,
                },
                ValueRule {
                    detector: "card".into(),
                    strategy: StrategyName::Partial,
                    keep_last: Some(4),
                },
            ],
            detectors: Vec::new(),
        };
        // Never connected: every column here has table OID 0.
        let target = Arc::new(UpstreamTarget::new(
            "t".into(),
            "127.0.0.1".into(),
            1,
            "db".into(),
            "u".into(),
            None,
            None,
        ));
        SessionMasking::new(
            Arc::new(Masker::compile(&policy, None).unwrap()),
            Arc::new(Catalog::new(
                target,
                juris_pgwire::Limits::default(),
                std::time::Duration::from_secs(1),
            )),
            audit,
            SessionLabels {
                session: SessionId(7),
                principal: "bob".into(),
                connection: "billing".into(),
            },
        )
    }

    fn field(name: &str, type_oid: u32, format: i16) -> FieldDescription {
        FieldDescription {
            name: name.into(),
            table_oid: 0,
            column_attr: 0,
            type_oid,
            type_size: -1,
            type_modifier: -1,
            format,
        }
    }

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = BytesMut::new();
        BackendMessage::DataRow {
            values: values
                .iter()
                .map(|v| v.map(bytes::Bytes::copy_from_slice))
                .collect(),
        }
        .encode(&mut out);
        out[5..].to_vec()
    }

    fn decode_row(frame: &[u8]) -> Vec<Option<Vec<u8>>> {
        let frame = Frame {
            tag: frame[0],
            body: bytes::Bytes::copy_from_slice(&frame[5..]),
        };
        match BackendMessage::decode(&frame).unwrap() {
            BackendMessage::DataRow { values } => {
                values.into_iter().map(|v| v.map(|b| b.to_vec())).collect()
            }
            other => panic!("not a data row: {other:?}"),
        }
    }

    #[tokio::test]
    async fn rows_with_nothing_to_mask_are_forwarded_and_others_rewritten() {
        let audit = Arc::new(Collect::default());
        let mut masking = session(audit.clone());
        masking
            .describe(&[
                field("note", 25, 0),
                field("id", 23, 0),
                field("when", 1184, 0),
            ])
            .await
            .unwrap();
        let mut out = BytesMut::new();
        let clean = row(&[Some(b"hello"), Some(b"42"), None]);
        assert!(!masking.data_row(&clean, &mut out).unwrap());

        let dirty = row(&[
            Some(format!("ssn {SSN}").as_bytes()),
            None,
            Some(b"2026-01-01"),
        ]);
        assert!(masking.data_row(&dirty, &mut out).unwrap());
        let values = decode_row(&out);
        assert_eq!(values[0].as_deref(), Some(&b"ssn [REDACTED]"[..]));
        assert_eq!(values[1], None);
        assert_eq!(values[2].as_deref(), Some(&b"2026-01-01"[..]));
        masking.statement_done();
        let events = audit.0.lock().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].actions[0].column, "note");
        assert_eq!(events[0].actions[0].detector, "ssn");
        assert_eq!(events[0].actions[0].count, 1);
    }

    #[tokio::test]
    async fn binary_values_that_cannot_be_rewritten_become_null() {
        let mut masking = session(Arc::new(Collect::default()));
        masking
            .describe(&[
                field("n", INT8, 1),
                field("secret_code", INT4, 1),
                field("name", 25, 1),
                field("other", 1700, 1),
            ])
            .await
            .unwrap();
        let card: i64 = CARD.parse().unwrap();
        let mut out = BytesMut::new();
        let data = row(&[
            Some(&card.to_be_bytes()),
            Some(&7i32.to_be_bytes()),
            Some(CARD.as_bytes()),
            Some(&[0, 1, 0, 0]),
        ]);
        assert!(masking.data_row(&data, &mut out).unwrap());
        let values = decode_row(&out);
        assert_eq!(values[0], None, "an int8 card number is nulled");
        assert_eq!(values[1], None, "a column rule on a binary int4 nulls it");
        assert_eq!(values[2].as_deref(), Some(&b"************1111"[..]));
        assert_eq!(values[3].as_deref(), Some(&[0u8, 1, 0, 0][..]));
    }

    #[tokio::test]
    async fn bytea_holding_a_detected_value_becomes_null() {
        let mut masking = session(Arc::new(Collect::default()));
        masking
            .describe(&[field("t", BYTEA, 0), field("b", BYTEA, 1)])
            .await
            .unwrap();
        let hex: String = SSN.bytes().map(|b| format!("{b:02x}")).collect();
        let text = format!("\\x{hex}");
        let mut out = BytesMut::new();
        let data = row(&[Some(text.as_bytes()), Some(SSN.as_bytes())]);
        assert!(masking.data_row(&data, &mut out).unwrap());
        assert_eq!(decode_row(&out), vec![None, None]);
        let harmless = row(&[Some(b"\\x0102"), Some(b"\x01\x02")]);
        assert!(!masking.data_row(&harmless, &mut out).unwrap());
        assert_eq!(decode_hex_bytea(b"\\x4a75"), Some(b"Ju".to_vec()));
        assert_eq!(decode_hex_bytea(b"\\x4"), None);
        assert_eq!(decode_hex_bytea(b"plain"), None);
    }

    #[tokio::test]
    async fn errors_notices_and_notifications_are_masked() {
        let mut masking = session(Arc::new(Collect::default()));
        let mut fields = ErrorFields::new("ERROR", "23505", "duplicate key")
            .with_detail(format!("Key (ssn)=({SSN}) already exists."));
        assert!(masking.error_fields(&mut fields, false));
        assert_eq!(
            fields.get(b'D'),
            Some("Key (ssn)=([REDACTED]) already exists.")
        );
        assert_eq!(fields.code(), Some("23505"));
        let payload = masking.notification(&format!("card {CARD}")).unwrap();
        assert!(!payload.contains(CARD), "{payload}");
        assert!(masking.notification("nothing here").is_none());
    }

    #[tokio::test]
    async fn malformed_rows_are_errors() {
        let mut masking = session(Arc::new(Collect::default()));
        masking.describe(&[field("a", 25, 0)]).await.unwrap();
        let mut out = BytesMut::new();
        for body in [
            &[][..],
            &[0, 1],
            &[0, 1, 0, 0, 0, 9, b'x'],
            &[0, 1, 255, 255, 255, 255, 1],
        ] {
            assert!(masking.data_row(body, &mut out).is_err(), "{body:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_rows_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut masking = session(Arc::new(Collect::default()));
            runtime
                .block_on(masking.describe(&[field("a", 25, 0), field("b", INT8, 1), field("c", 17, 1)]))
                .unwrap();
            let mut out = BytesMut::new();
            let _ = masking.data_row(&body, &mut out);
            let _ = masking.copy_data(&body, &mut out);
        }
    }
}
