//! Shared vocabulary of Juris: identifiers, the authenticated [`Principal`],
//! access levels and statement classes.
//!
//! This crate is pure: no I/O, no async runtime. Every other crate may depend
//! on it; it depends on nothing of ours.

use std::fmt;

pub mod audit;

use serde::{Deserialize, Serialize};

/// Who is calling, as established from a validated identity-provider token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The token issuer (`iss`).
    pub issuer: String,
    /// The subject (`sub`): stable id of the user or machine identity.
    pub subject: String,
    /// A human-friendly name, when the token carries one (email, preferred_username).
    pub display_name: Option<String>,
    /// IdP groups from the configured groups claim.
    pub groups: Vec<String>,
    /// Seconds since the Unix epoch at which the token expires.
    pub expires_at: u64,
}

impl Principal {
    /// The name to show in logs and messages: display name, else subject.
    pub fn name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.subject)
    }
}

/// Unique id of one client session through a node. Serialized as its 32
/// hex digits (as logs and audit records show it): JSON numbers cannot
/// carry 128 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u128);

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() || text.len() > 32 {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is not a session id (1 to 32 hex digits)"
            )));
        }
        u128::from_str_radix(&text, 16)
            .map(SessionId)
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a session id (hex)")))
    }
}

impl SessionId {
    /// A fresh random session id.
    pub fn random() -> Self {
        SessionId(rand::random())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A session open through a node right now, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    pub session: SessionId,
    /// Display name of the principal.
    pub principal: String,
    /// `issuer` and `sub` of the principal (who may see the session).
    pub issuer: String,
    pub subject: String,
    pub connection: String,
    pub role: String,
    /// The just-in-time grant the session rides on, e.g. `g-7`.
    pub grant: Option<String>,
    /// The client's `ip:port`.
    pub client: String,
    /// Milliseconds since the Unix epoch.
    pub started_ms: u64,
}

/// How much a role may do on a connection. Ordered: `Read < Write < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Statements that only read.
    Read,
    /// Reads plus data modification (INSERT/UPDATE/DELETE/COPY FROM …).
    Write,
    /// Everything: DDL, role and server administration.
    Admin,
}

impl AccessLevel {
    /// Lower-case name as used in config files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Read => "read",
            AccessLevel::Write => "write",
            AccessLevel::Admin => "admin",
        }
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a single SQL statement does, as far as authorization is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementClass {
    /// Only reads data or session-local state (SELECT, SHOW, EXPLAIN without ANALYZE of writes, …).
    Read,
    /// Transaction control and session settings that change no data (BEGIN, COMMIT, SET, PREPARE of a read…).
    Session,
    /// Modifies data (INSERT, UPDATE, DELETE, MERGE, COPY FROM, nextval, …).
    Write,
    /// Schema changes (CREATE/ALTER/DROP of relations, TRUNCATE, …).
    Ddl,
    /// Role, privilege and server administration (CREATE ROLE, GRANT, ALTER SYSTEM, …).
    Administration,
    /// Could not be parsed: treated as the most privileged class (fail closed).
    Unparseable,
}

/// A kind of statement that command review can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewedStatement {
    /// DROP of any object.
    Drop,
    /// TRUNCATE.
    Truncate,
    /// ALTER of any object (ALTER SYSTEM included).
    Alter,
    /// DELETE or UPDATE without a WHERE clause.
    UnqualifiedWrite,
    /// GRANT, REVOKE, CREATE/ALTER/DROP ROLE.
    Privileges,
    /// Every statement that changes data or schema.
    AnyWrite,
}

impl StatementClass {
    /// The least access level that may run a statement of this class.
    pub fn required_level(self) -> AccessLevel {
        match self {
            StatementClass::Read | StatementClass::Session => AccessLevel::Read,
            StatementClass::Write => AccessLevel::Write,
            StatementClass::Ddl | StatementClass::Administration | StatementClass::Unparseable => {
                AccessLevel::Admin
            }
        }
    }

    /// Name used in messages, e.g. `DDL`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Session => "session",
            StatementClass::Write => "write",
            StatementClass::Ddl => "ddl",
            StatementClass::Administration => "administration",
            StatementClass::Unparseable => "unparseable",
        }
    }
}

impl fmt::Display for StatementClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_classes_map_to_levels() {
        assert!(AccessLevel::Read < AccessLevel::Write && AccessLevel::Write < AccessLevel::Admin);
        assert_eq!(
            StatementClass::Unparseable.required_level(),
            AccessLevel::Admin
        );
        assert_eq!(StatementClass::Session.required_level(), AccessLevel::Read);
        assert_eq!(StatementClass::Write.required_level(), AccessLevel::Write);
    }

    #[test]
    fn session_ids_are_distinct_and_hex() {
        let (a, b) = (SessionId::random(), SessionId::random());
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 32);
    }
}
