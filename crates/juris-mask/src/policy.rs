//! The masking policy as configured: plain serde data.
//!
//! The config crate embeds a [`MaskingPolicy`] in each `[[connection]]` as
//! `masking`; [`crate::Masker::compile`] turns it into the form used on the
//! data path and reports every problem with it at once.

use serde::{Deserialize, Serialize};

/// Masking rules of one connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingPolicy {
    /// IdP groups that may see cleartext (the proxy checks membership; this
    /// crate only stores it).
    #[serde(default)]
    pub exempt_groups: Vec<String>,
    /// Column rules, first match wins, in config order.
    /// TOML: `[[connection.masking.column]]`.
    #[serde(default, rename = "column")]
    pub columns: Vec<ColumnRule>,
    /// Value rules applied to every text value.
    /// TOML: `[[connection.masking.value]]`.
    #[serde(default, rename = "value")]
    pub values: Vec<ValueRule>,
    /// Custom detectors usable in value rules by name.
    /// TOML: `[[connection.masking.detector]]`.
    #[serde(default, rename = "detector")]
    pub detectors: Vec<CustomDetector>,
}

/// Masks whole values of the columns it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    /// Exact source column `schema.table.column`. Each part follows
    /// PostgreSQL identifier rules: unquoted parts are folded to lower case,
    /// `"Quoted"` parts are kept as written.
    #[serde(default)]
    pub name: Option<String>,
    /// Glob on the column name alone (`*ssn*`, `email`, `?`), `*` and `?`
    /// only, case-insensitive; matched against the source column's name and
    /// the result column's output name.
    #[serde(default)]
    pub pattern: Option<String>,
    /// How matching values are masked.
    pub strategy: StrategyName,
    /// Only for `partial`: characters kept at the end (default 4).
    #[serde(default)]
    pub keep_last: Option<usize>,
}

/// Masks what a detector finds inside any text value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRule {
    /// A built-in detector (see [`crate::Masker::builtin_detectors`]) or the
    /// name of a custom detector.
    pub detector: String,
    /// How each finding is masked.
    pub strategy: StrategyName,
    /// Only for `partial`: characters kept at the end (default 4).
    #[serde(default)]
    pub keep_last: Option<usize>,
}

/// A user-defined detector: a regular expression or a word list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Name used by value rules; must not shadow a built-in.
    pub name: String,
    /// Regular expression (Rust `regex` syntax) over the value's bytes.
    #[serde(default)]
    pub regex: Option<String>,
    /// Words matched ASCII-case-insensitively, whole words only.
    #[serde(default)]
    pub words: Option<Vec<String>>,
}

/// A masking strategy as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyName {
    /// Replace with `[REDACTED]`.
    Redact,
    /// Keep the last few alphanumerics, star the rest.
    Partial,
    /// Keyed HMAC token `tok_…` (stable, joinable, not reversible).
    Hash,
    /// SQL NULL.
    Null,
}

impl StrategyName {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Redact => "redact",
            StrategyName::Partial => "partial",
            StrategyName::Hash => "hash",
            StrategyName::Null => "null",
        }
    }
}
