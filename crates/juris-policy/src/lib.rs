//! Statement classification and authorization for Juris.
//!
//! [`classify`] parses SQL with the real PostgreSQL grammar (`pg_query`, i.e.
//! libpg_query) and assigns every statement a [`StatementClass`];
//! [`authorize`] compares those classes with a role's [`AccessLevel`].
//!
//! This crate is pure: no I/O, no async runtime.
//!
//! # Fail closed
//!
//! Anything not explicitly recognised is at least [`StatementClass::Ddl`]
//! (admin only); SQL that does not parse is [`StatementClass::Unparseable`].
//!
//! # Function calls
//!
//! A `SELECT` can write through the functions it calls (`nextval`,
//! `pg_terminate_backend`, `lo_import`, …). Rather than walking every one of
//! the ~250 parse-node types (where one forgotten node would fail open), the
//! statement's tokens from the PostgreSQL lexer are checked against a
//! deny-list of identifiers: any occurrence of a known writing or
//! administrative function name raises the class, whatever syntactic
//! position it is in. A column that happens to be called `nextval` is
//! therefore over-classified (fail closed). Unicode-escaped identifiers
//! (`U&"..."`) cannot be checked cheaply and raise the class to `Ddl`.
//! The same token pass detects row-locking clauses (`FOR UPDATE`, …) in
//! subqueries.
//!
//! # Fingerprints
//!
//! Fingerprinting re-parses a statement, doubling the cost on the data
//! path, and is only needed when a statement is denied (to look up or
//! request an approval). It is therefore lazy: a [`Classified`] records the
//! byte span of its statement and [`Classified::fingerprint`] computes the
//! fingerprint on demand; [`fingerprint`] does the same for a single
//! statement text. Where a fingerprint is wanted for every statement (the
//! audit record), [`classify_keyed`] also returns a [`FingerprintKey`]
//! from the tokens it lexed anyway: texts that differ only in constant
//! values share it, and with it their fingerprint.

use std::ops::Range;

mod copy;
mod review;
mod shape;
pub use copy::{CopyDataFormat, CopyOut, copy_outs};
pub use review::{PolicyError, ReviewPolicy};
pub use shape::FingerprintKey;

use StatementClass::{Administration as Adm, Ddl, Read, Session, Write};
use juris_types::{AccessLevel, ReviewedStatement, StatementClass};
use pg_query::NodeEnum;
use pg_query::protobuf::{self, Token};

/// One classified statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What the statement does.
    pub class: StatementClass,
    /// Short statement tag for messages, e.g. `SELECT`, `DROP TABLE`, `COPY FROM`.
    pub summary: &'static str,
    /// Byte range of this statement in the SQL passed to [`classify`].
    pub span: Range<usize>,
    /// The kind of hard-to-undo statement this is, for command review.
    pub review: Option<ReviewedStatement>,
}

impl Classified {
    /// The text of this statement within `sql` (the string given to [`classify`]).
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        sql.get(self.span.clone()).unwrap_or(sql)
    }

    /// The `pg_query` fingerprint (hex) of this statement; `None` if it does
    /// not parse. `sql` must be the string given to [`classify`].
    pub fn fingerprint(&self, sql: &str) -> Option<String> {
        fingerprint(self.text(sql))
    }
}

/// The `pg_query` fingerprint (16 hex digits) of one statement, `None` if it
/// does not parse. Literal values and whitespace do not affect it.
pub fn fingerprint(statement: &str) -> Option<String> {
    pg_query::fingerprint(statement, 0, 0).ok().map(|f| f.hex)
}

/// Outcome of [`authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every statement is within the role's level.
    Allow,
    /// The first statement that exceeds the role's level.
    Deny {
        class: StatementClass,
        summary: &'static str,
    },
}

/// Classify every statement of a (possibly multi-statement) SQL string.
///
/// Unparseable SQL yields a single [`StatementClass::Unparseable`] entry;
/// an empty string or one holding only comments yields an empty `Vec`.
pub fn classify(sql: &str) -> Vec<Classified> {
    classify_keyed(sql).0
}

/// [`classify`], and the key the text's fingerprint may be cached under
/// (see [`FingerprintKey`]; `None` when it has none).
pub fn classify_keyed(sql: &str) -> (Vec<Classified>, Option<FingerprintKey>) {
    let unparseable = || {
        vec![Classified {
            class: StatementClass::Unparseable,
            summary: "UNPARSEABLE",
            span: 0..sql.len(),
            review: None,
        }]
    };
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return (unparseable(), None);
    };
    let stmts = &parsed.protobuf.stmts;
    if stmts.is_empty() {
        return (Vec::new(), None);
    }
    let dml = stmts.iter().all(|raw| {
        matches!(
            raw.stmt.as_ref().and_then(|n| n.node.as_ref()),
            Some(
                NodeEnum::SelectStmt(_)
                    | NodeEnum::InsertStmt(_)
                    | NodeEnum::UpdateStmt(_)
                    | NodeEnum::DeleteStmt(_)
                    | NodeEnum::MergeStmt(_)
            )
        )
    });
    // Lexed only when some statement evaluates expressions.
    let mut scan: Option<protobuf::ScanResult> = None;
    let mut out = Vec::with_capacity(stmts.len());
    for raw in stmts {
        let start = usize::try_from(raw.stmt_location)
            .unwrap_or(0)
            .min(sql.len());
        let end = match usize::try_from(raw.stmt_len) {
            Ok(0) | Err(_) => sql.len(),
            Ok(len) => start.saturating_add(len).min(sql.len()),
        };
        let Some(node) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            // Not expected from the parser; never drop a statement silently.
            out.push(Classified {
                class: Ddl,
                summary: "UNKNOWN",
                span: start..end,
                review: None,
            });
            continue;
        };
        let (mut class, summary) = classify_node(node);
        if executes_expressions(node, class) {
            if scan.is_none() {
                match pg_query::scan(sql) {
                    Ok(s) => scan = Some(s),
                    Err(_) => return (unparseable(), None),
                }
            }
            let tokens = scan.as_ref().map_or(&[][..], |s| &s.tokens[..]);
            // Tokens are in source order: binary-search this statement's slice.
            let from = tokens.partition_point(|t| to_usize(t.start) < start);
            let to = tokens.partition_point(|t| to_usize(t.start) < end);
            class = max_class(class, scan_tokens(sql, &tokens[from..to.max(from)]));
        }
        out.push(Classified {
            class,
            summary,
            span: start..end,
            review: review::kind(node, summary),
        });
    }
    // DML other than `SELECT INTO` executes expressions, so it was
    // scanned; text that was not has no key.
    let key = scan
        .as_ref()
        .and_then(|scan| shape::fingerprint_key(sql, &scan.tokens, dml));
    (out, key)
}

/// The highest level required by any of `stmts` (`Read` when empty).
pub fn required_level(stmts: &[Classified]) -> AccessLevel {
    stmts
        .iter()
        .map(|s| s.class.required_level())
        .max()
        .unwrap_or(AccessLevel::Read)
}

/// Authorization v1: a role's level against each statement's class.
pub fn authorize(level: AccessLevel, stmts: &[Classified]) -> Decision {
    match stmts.iter().find(|s| s.class.required_level() > level) {
        None => Decision::Allow,
        Some(s) => Decision::Deny {
            class: s.class,
            summary: s.summary,
        },
    }
}

fn rank(class: StatementClass) -> u8 {
    match class {
        StatementClass::Read => 0,
        StatementClass::Session => 1,
        StatementClass::Write => 2,
        StatementClass::Ddl => 3,
        StatementClass::Administration => 4,
        StatementClass::Unparseable => 5,
    }
}

fn max_class(a: StatementClass, b: StatementClass) -> StatementClass {
    if rank(b) > rank(a) { b } else { a }
}

/// Whether the statement evaluates expressions at run time, so that the
/// function deny-list applies. Plain `EXPLAIN` does not execute; DDL and
/// administration are already admin-only.
fn executes_expressions(node: &NodeEnum, class: StatementClass) -> bool {
    let executes = match node {
        NodeEnum::ExplainStmt(e) => explain_analyze(e),
        _ => true,
    };
    executes && rank(class) < rank(StatementClass::Ddl)
}

/// Class and tag of one statement, from the parse tree alone.
fn classify_node(node: &NodeEnum) -> (StatementClass, &'static str) {
    match node {
        NodeEnum::SelectStmt(s) => classify_select(s),
        NodeEnum::InsertStmt(s) => (with_class(Write, s.with_clause.as_ref()), "INSERT"),
        NodeEnum::UpdateStmt(s) => (with_class(Write, s.with_clause.as_ref()), "UPDATE"),
        NodeEnum::DeleteStmt(s) => (with_class(Write, s.with_clause.as_ref()), "DELETE"),
        NodeEnum::MergeStmt(s) => (with_class(Write, s.with_clause.as_ref()), "MERGE"),
        NodeEnum::ExplainStmt(e) => {
            let inner = inner_class(e.query.as_deref());
            if explain_analyze(e) {
                (max_class(Read, inner), "EXPLAIN ANALYZE")
            } else {
                (Read, "EXPLAIN")
            }
        }
        NodeEnum::CopyStmt(c) => {
            let to_server = c.is_program || !c.filename.is_empty();
            match (c.is_from, to_server) {
                (_, true) => (Adm, if c.is_from { "COPY FROM" } else { "COPY TO" }),
                (true, false) => (Write, "COPY FROM"),
                (false, false) => (
                    max_class(
                        Read,
                        c.query.as_deref().map_or(Read, |q| inner_class(Some(q))),
                    ),
                    "COPY TO",
                ),
            }
        }
        NodeEnum::DeclareCursorStmt(d) => (
            max_class(Read, inner_class(d.query.as_deref())),
            "DECLARE CURSOR",
        ),
        NodeEnum::FetchStmt(f) => (Read, if f.ismove { "MOVE" } else { "FETCH" }),
        NodeEnum::ClosePortalStmt(_) => (Session, "CLOSE"),
        NodeEnum::VariableShowStmt(_) => (Read, "SHOW"),
        NodeEnum::VariableSetStmt(v) => classify_set(v),
        NodeEnum::TransactionStmt(t) => classify_transaction(t),
        NodeEnum::DiscardStmt(_) => (Session, "DISCARD"),
        NodeEnum::DeallocateStmt(_) => (Session, "DEALLOCATE"),
        NodeEnum::ConstraintsSetStmt(_) => (Session, "SET CONSTRAINTS"),
        NodeEnum::ListenStmt(_) => (Session, "LISTEN"),
        NodeEnum::UnlistenStmt(_) => (Session, "UNLISTEN"),
        NodeEnum::NotifyStmt(_) => (Write, "NOTIFY"),
        NodeEnum::PrepareStmt(p) => (inner_class(p.query.as_deref()), "PREPARE"),
        // The prepared statement is unknown here: assume it writes.
        NodeEnum::ExecuteStmt(_) => (Write, "EXECUTE"),
        NodeEnum::CallStmt(_) => (Write, "CALL"),
        NodeEnum::LockStmt(_) => (Write, "LOCK TABLE"),
        NodeEnum::RefreshMatViewStmt(_) => (Write, "REFRESH MATERIALIZED VIEW"),
        NodeEnum::VacuumStmt(v) => classify_vacuum(v),
        NodeEnum::ClusterStmt(_) => (Ddl, "CLUSTER"),
        NodeEnum::ReindexStmt(_) => (Ddl, "REINDEX"),
        NodeEnum::DoStmt(_) => (Adm, "DO"),
        NodeEnum::LoadStmt(_) => (Adm, "LOAD"),
        NodeEnum::CheckPointStmt(_) => (Adm, "CHECKPOINT"),
        NodeEnum::CreateTableAsStmt(_) => (Ddl, "CREATE TABLE AS"),
        NodeEnum::DropStmt(d) => (Ddl, drop_summary(d.remove_type)),
        NodeEnum::CreateStmt(_) => (Ddl, "CREATE TABLE"),
        NodeEnum::AlterTableStmt(_) => (Ddl, "ALTER TABLE"),
        NodeEnum::IndexStmt(_) => (Ddl, "CREATE INDEX"),
        NodeEnum::ViewStmt(_) => (Ddl, "CREATE VIEW"),
        NodeEnum::CreateSeqStmt(_) => (Ddl, "CREATE SEQUENCE"),
        NodeEnum::AlterSeqStmt(_) => (Ddl, "ALTER SEQUENCE"),
        NodeEnum::CreateFunctionStmt(_) => (Ddl, "CREATE FUNCTION"),
        NodeEnum::AlterFunctionStmt(_) => (Ddl, "ALTER FUNCTION"),
        NodeEnum::CreateSchemaStmt(_) => (Ddl, "CREATE SCHEMA"),
        NodeEnum::TruncateStmt(_) => (Ddl, "TRUNCATE"),
        NodeEnum::CommentStmt(_) => (Ddl, "COMMENT"),
        NodeEnum::SecLabelStmt(_) => (Ddl, "SECURITY LABEL"),
        NodeEnum::CreateTrigStmt(_) => (Ddl, "CREATE TRIGGER"),
        NodeEnum::RuleStmt(_) => (Ddl, "CREATE RULE"),
        NodeEnum::CreatePolicyStmt(_) => (Ddl, "CREATE POLICY"),
        NodeEnum::AlterPolicyStmt(_) => (Ddl, "ALTER POLICY"),
        NodeEnum::RenameStmt(_) => (Ddl, "RENAME"),
        NodeEnum::CreateRoleStmt(_) => (Adm, "CREATE ROLE"),
        NodeEnum::AlterRoleStmt(_) => (Adm, "ALTER ROLE"),
        NodeEnum::AlterRoleSetStmt(_) => (Adm, "ALTER ROLE SET"),
        NodeEnum::DropRoleStmt(_) => (Adm, "DROP ROLE"),
        NodeEnum::GrantStmt(g) => (Adm, if g.is_grant { "GRANT" } else { "REVOKE" }),
        NodeEnum::GrantRoleStmt(g) => (
            Adm,
            if g.is_grant {
                "GRANT ROLE"
            } else {
                "REVOKE ROLE"
            },
        ),
        NodeEnum::AlterDefaultPrivilegesStmt(_) => (Adm, "ALTER DEFAULT PRIVILEGES"),
        NodeEnum::AlterSystemStmt(_) => (Adm, "ALTER SYSTEM"),
        NodeEnum::CreatedbStmt(_) => (Adm, "CREATE DATABASE"),
        NodeEnum::AlterDatabaseStmt(_)
        | NodeEnum::AlterDatabaseSetStmt(_)
        | NodeEnum::AlterDatabaseRefreshCollStmt(_) => (Adm, "ALTER DATABASE"),
        NodeEnum::DropdbStmt(_) => (Adm, "DROP DATABASE"),
        NodeEnum::CreateTableSpaceStmt(_) => (Adm, "CREATE TABLESPACE"),
        NodeEnum::DropTableSpaceStmt(_) => (Adm, "DROP TABLESPACE"),
        NodeEnum::AlterTableSpaceOptionsStmt(_) => (Adm, "ALTER TABLESPACE"),
        NodeEnum::CreateSubscriptionStmt(_) => (Adm, "CREATE SUBSCRIPTION"),
        NodeEnum::AlterSubscriptionStmt(_) => (Adm, "ALTER SUBSCRIPTION"),
        NodeEnum::DropSubscriptionStmt(_) => (Adm, "DROP SUBSCRIPTION"),
        NodeEnum::CreatePublicationStmt(_) => (Adm, "CREATE PUBLICATION"),
        NodeEnum::AlterPublicationStmt(_) => (Adm, "ALTER PUBLICATION"),
        NodeEnum::ReassignOwnedStmt(_) => (Adm, "REASSIGN OWNED"),
        NodeEnum::DropOwnedStmt(_) => (Adm, "DROP OWNED"),
        NodeEnum::CreateExtensionStmt(_) => (Adm, "CREATE EXTENSION"),
        NodeEnum::AlterExtensionStmt(_) | NodeEnum::AlterExtensionContentsStmt(_) => {
            (Adm, "ALTER EXTENSION")
        }
        NodeEnum::CreateEventTrigStmt(_) => (Adm, "CREATE EVENT TRIGGER"),
        NodeEnum::AlterEventTrigStmt(_) => (Adm, "ALTER EVENT TRIGGER"),
        NodeEnum::CreateUserMappingStmt(_) => (Adm, "CREATE USER MAPPING"),
        NodeEnum::AlterUserMappingStmt(_) => (Adm, "ALTER USER MAPPING"),
        NodeEnum::DropUserMappingStmt(_) => (Adm, "DROP USER MAPPING"),
        NodeEnum::CreatePlangStmt(_) => (Adm, "CREATE LANGUAGE"),
        NodeEnum::CreateFdwStmt(_) | NodeEnum::AlterFdwStmt(_) => (Adm, "FOREIGN DATA WRAPPER"),
        // Everything else (ALTER … OWNER, CREATE TYPE/DOMAIN/CAST/…): schema change.
        _ => (Ddl, "DDL"),
    }
}

fn classify_select(s: &protobuf::SelectStmt) -> (StatementClass, &'static str) {
    if s.into_clause.is_some() {
        return (Ddl, "SELECT INTO");
    }
    let summary = if s.values_lists.is_empty() {
        "SELECT"
    } else {
        "VALUES"
    };
    let mut class = with_class(Read, s.with_clause.as_ref());
    if !s.locking_clause.is_empty() {
        class = max_class(class, Write);
    }
    for arm in [s.larg.as_deref(), s.rarg.as_deref()].into_iter().flatten() {
        class = max_class(class, classify_select(arm).0);
    }
    (class, summary)
}

/// `base` raised by the class of every CTE (a data-modifying CTE writes).
fn with_class(base: StatementClass, with: Option<&protobuf::WithClause>) -> StatementClass {
    let Some(with) = with else { return base };
    with.ctes
        .iter()
        .fold(base, |class, cte| match cte.node.as_ref() {
            Some(NodeEnum::CommonTableExpr(cte)) => {
                max_class(class, inner_class(cte.ctequery.as_deref()))
            }
            _ => max_class(class, Ddl),
        })
}

/// Class of a nested statement; a missing one is treated as unknown (`Ddl`).
fn inner_class(node: Option<&protobuf::Node>) -> StatementClass {
    match node.and_then(|n| n.node.as_ref()) {
        Some(n) => classify_node(n).0,
        None => Ddl,
    }
}

/// Whether an `EXPLAIN` executes its statement. Fail closed: any `ANALYZE`
/// option not explicitly false counts.
fn explain_analyze(e: &protobuf::ExplainStmt) -> bool {
    e.options.iter().any(|opt| match opt.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case("analyze") => {
            !matches!(
                d.arg.as_ref().and_then(|a| a.node.as_ref()),
                Some(NodeEnum::Boolean(protobuf::Boolean { boolval: false }))
                    | Some(NodeEnum::Integer(protobuf::Integer { ival: 0 }))
            ) && !matches!(
                d.arg.as_ref().and_then(|a| a.node.as_ref()),
                Some(NodeEnum::String(s)) if matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0")
            )
        }
        Some(NodeEnum::DefElem(_)) => false,
        _ => true,
    })
}

fn classify_set(v: &protobuf::VariableSetStmt) -> (StatementClass, &'static str) {
    use protobuf::VariableSetKind as K;
    let name = v.name.to_ascii_lowercase();
    let kind = K::try_from(v.kind).unwrap_or(K::Undefined);
    let privilege = matches!(name.as_str(), "role" | "session_authorization");
    match kind {
        K::VarReset | K::VarResetAll => (Session, "RESET"),
        // `SET ROLE NONE` / `SET SESSION AUTHORIZATION DEFAULT` still change identity.
        _ if privilege => (
            Adm,
            if name == "role" {
                "SET ROLE"
            } else {
                "SET SESSION AUTHORIZATION"
            },
        ),
        K::Undefined => (Ddl, "SET"),
        _ => (Session, "SET"),
    }
}

fn classify_transaction(t: &protobuf::TransactionStmt) -> (StatementClass, &'static str) {
    use protobuf::TransactionStmtKind as K;
    match K::try_from(t.kind).unwrap_or(K::Undefined) {
        K::TransStmtBegin => (Session, "BEGIN"),
        K::TransStmtStart => (Session, "START TRANSACTION"),
        K::TransStmtCommit => (Session, "COMMIT"),
        K::TransStmtRollback => (Session, "ROLLBACK"),
        K::TransStmtSavepoint => (Session, "SAVEPOINT"),
        K::TransStmtRelease => (Session, "RELEASE"),
        K::TransStmtRollbackTo => (Session, "ROLLBACK TO"),
        K::TransStmtPrepare => (Write, "PREPARE TRANSACTION"),
        K::TransStmtCommitPrepared => (Write, "COMMIT PREPARED"),
        K::TransStmtRollbackPrepared => (Write, "ROLLBACK PREPARED"),
        K::Undefined => (Ddl, "TRANSACTION"),
    }
}

fn classify_vacuum(v: &protobuf::VacuumStmt) -> (StatementClass, &'static str) {
    if !v.is_vacuumcmd {
        return (Write, "ANALYZE");
    }
    let full = v.options.iter().any(|o| {
        matches!(o.node.as_ref(), Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case("full"))
    });
    if full {
        (Ddl, "VACUUM FULL")
    } else {
        (Write, "VACUUM")
    }
}

fn drop_summary(remove_type: i32) -> &'static str {
    use protobuf::ObjectType as O;
    match O::try_from(remove_type) {
        Ok(O::ObjectTable) => "DROP TABLE",
        Ok(O::ObjectIndex) => "DROP INDEX",
        Ok(O::ObjectView) => "DROP VIEW",
        Ok(O::ObjectMatview) => "DROP MATERIALIZED VIEW",
        Ok(O::ObjectSequence) => "DROP SEQUENCE",
        Ok(O::ObjectSchema) => "DROP SCHEMA",
        Ok(O::ObjectFunction) => "DROP FUNCTION",
        Ok(O::ObjectType) => "DROP TYPE",
        Ok(O::ObjectTrigger) => "DROP TRIGGER",
        Ok(O::ObjectExtension) => "DROP EXTENSION",
        _ => "DROP",
    }
}

/// Class implied by the tokens of one statement: deny-listed function names,
/// row-locking clauses and identifiers that cannot be checked.
fn scan_tokens(sql: &str, tokens: &[protobuf::ScanToken]) -> StatementClass {
    let mut class = Read;
    for (i, t) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1).map(|n| n.token);
        match Token::try_from(t.token) {
            Ok(Token::Ident) => {
                let text = token_text(sql, t);
                let name = if let Some(quoted) = text.strip_prefix('"') {
                    quoted
                        .trim_end_matches('"')
                        .replace("\"\"", "\"")
                        .to_ascii_lowercase()
                } else {
                    text.to_ascii_lowercase()
                };
                let fclass = if name == "set_config" {
                    set_config_class(sql, tokens.get(i + 2))
                } else {
                    function_class(&name)
                };
                class = max_class(class, fclass);
            }
            Ok(Token::Uident) => class = max_class(class, Ddl),
            Ok(Token::For)
                if matches!(
                    next.and_then(|n| Token::try_from(n).ok()),
                    Some(Token::Update | Token::Share | Token::No | Token::Key)
                ) =>
            {
                class = max_class(class, Write);
            }
            _ => {}
        }
    }
    class
}

fn to_usize(offset: i32) -> usize {
    usize::try_from(offset).unwrap_or(0)
}

fn token_text<'s>(sql: &'s str, t: &protobuf::ScanToken) -> &'s str {
    sql.get(to_usize(t.start)..to_usize(t.end)).unwrap_or("")
}

/// `set_config(name, …)` is a session setting unless `name` is not a plain
/// literal or names a privilege setting (it is then equivalent to `SET ROLE`).
fn set_config_class(sql: &str, first_arg: Option<&protobuf::ScanToken>) -> StatementClass {
    match first_arg {
        Some(t) if t.token == Token::Sconst as i32 => {
            let text = token_text(sql, t).to_ascii_lowercase();
            if text.contains("role") || text.contains("authorization") || text.contains('\\') {
                Adm
            } else {
                Session
            }
        }
        _ => Adm,
    }
}

/// Deny-list of functions with side effects, by lower-case name.
fn function_class(name: &str) -> StatementClass {
    const ADMIN_PREFIXES: &[&str] = &[
        "dblink",
        "pg_ls_",
        "pg_read_",
        "pg_write",
        "pg_file_",
        "pg_stat_reset",
        "pg_create_",
        "pg_drop_replication",
        "pg_copy_",
        "pg_replication_",
        "pg_logical_",
        "pg_backup_",
        "pg_wal_replay_",
    ];
    const ADMIN: &[&str] = &[
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_stat_file",
        "pg_promote",
        "pg_switch_wal",
        "pg_log_backend_memory_contexts",
        "pg_import_system_collations",
        "pg_start_backup",
        "pg_stop_backup",
        "lo_import",
        "lo_export",
    ];
    const WRITE: &[&str] = &[
        "nextval",
        "setval",
        "pg_notify",
        "loread",
        "lowrite",
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "txid_current",
        "pg_current_xact_id",
    ];
    if ADMIN.contains(&name) || ADMIN_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Adm
    } else if WRITE.contains(&name) || name.starts_with("lo_") {
        Write
    } else if name.starts_with("pg_advisory") || name.starts_with("pg_try_advisory") {
        Session
    } else {
        Read
    }
}

#[cfg(test)]
mod tests;
