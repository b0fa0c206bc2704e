//! Audit facts the data plane reports. The data plane hands them to an
//! audit sink (a trait of the proxy); where they are persisted is the
//! evidence layer's business. Values here are always already masked or
//! metadata: never a cleartext value that a masking rule covers.

use serde::{Deserialize, Serialize};

use crate::SessionId;

/// What masking did to one statement's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskingEvent {
    pub session: SessionId,
    /// Display name of the principal.
    pub principal: String,
    pub connection: String,
    /// Ordinal of the statement's result within the session, from 1.
    pub statement: u64,
    pub actions: Vec<MaskAction>,
}

/// One kind of masking applied to one place, with how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskAction {
    /// `schema.table.column`, the result column's name when it has no
    /// source column, or where in the protocol: `(error)`, `(notice)`,
    /// `(notification)`, `(copy field N)`.
    pub column: String,
    /// The detector that matched, or `column rule` for a column rule.
    pub detector: String,
    /// `redact`, `partial`, `hash` or `null`.
    pub strategy: String,
    /// Values masked.
    pub count: u64,
}
