//! Command review: which statements a connection holds until reviewers
//! approve them.
//!
//! [`kind`] names the hard-to-undo kind of one parsed statement (DROP,
//! TRUNCATE, ALTER, a DELETE or UPDATE without WHERE, privilege changes),
//! looking into the statements that run inside it (`PREPARE … AS`,
//! `EXPLAIN ANALYZE`, data-modifying CTEs). [`ReviewPolicy`] is one
//! connection's rule: those kinds plus regular expressions on the text.
//!
//! Fail closed: SQL that does not parse, and `DO` blocks (whose body is
//! opaque here), are held by every non-empty policy.

use juris_types::{ReviewedStatement, StatementClass};
use pg_query::NodeEnum;
use pg_query::protobuf;

use crate::Classified;

/// A review rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A pattern is not a valid regular expression.
    #[error("patterns[{index}]: {reason}")]
    Pattern { index: usize, reason: String },
}

/// Largest compiled pattern accepted (bytes of automaton), so a config
/// cannot make the data path allocate without bound.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// One connection's command-review rule.
#[derive(Debug, Clone)]
pub struct ReviewPolicy {
    kinds: Vec<ReviewedStatement>,
    patterns: Vec<regex::Regex>,
}

impl ReviewPolicy {
    /// Compiles a rule; every pattern must be a valid regular expression.
    pub fn new(kinds: &[ReviewedStatement], patterns: &[String]) -> Result<Self, PolicyError> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(index, p)| {
                regex::RegexBuilder::new(p)
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| PolicyError::Pattern {
                        index,
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(ReviewPolicy {
            kinds: kinds.to_vec(),
            patterns,
        })
    }

    /// The first statement of `stmts` (classified from `sql`) that must be
    /// reviewed before it runs.
    pub fn held<'a>(&self, sql: &str, stmts: &'a [Classified]) -> Option<&'a Classified> {
        if self.kinds.is_empty() && self.patterns.is_empty() {
            return None;
        }
        stmts.iter().find(|s| self.holds(s, s.text(sql)))
    }

    fn holds(&self, stmt: &Classified, text: &str) -> bool {
        if stmt.class == StatementClass::Unparseable || stmt.summary == "DO" {
            return true;
        }
        let by_kind = self.kinds.iter().any(|k| match k {
            ReviewedStatement::AnyWrite => {
                stmt.class.required_level() > juris_types::AccessLevel::Read
            }
            kind => stmt.review == Some(*kind),
        });
        by_kind || self.patterns.iter().any(|p| p.is_match(text))
    }
}

/// The review kind of one parsed statement, or of what it runs.
pub(crate) fn kind(node: &NodeEnum, summary: &str) -> Option<ReviewedStatement> {
    use ReviewedStatement::*;
    match node {
        NodeEnum::UpdateStmt(s) if s.where_clause.is_none() => Some(UnqualifiedWrite),
        NodeEnum::DeleteStmt(s) if s.where_clause.is_none() => Some(UnqualifiedWrite),
        NodeEnum::UpdateStmt(s) => with_kind(s.with_clause.as_ref()),
        NodeEnum::DeleteStmt(s) => with_kind(s.with_clause.as_ref()),
        NodeEnum::InsertStmt(s) => with_kind(s.with_clause.as_ref()),
        NodeEnum::SelectStmt(s) => with_kind(s.with_clause.as_ref()),
        NodeEnum::MergeStmt(s) => with_kind(s.with_clause.as_ref()),
        NodeEnum::PrepareStmt(p) => inner_kind(p.query.as_deref()),
        NodeEnum::ExplainStmt(e) => inner_kind(e.query.as_deref()),
        NodeEnum::CreateTableAsStmt(c) => inner_kind(c.query.as_deref()),
        NodeEnum::GrantStmt(_)
        | NodeEnum::GrantRoleStmt(_)
        | NodeEnum::CreateRoleStmt(_)
        | NodeEnum::AlterRoleStmt(_)
        | NodeEnum::AlterRoleSetStmt(_)
        | NodeEnum::DropRoleStmt(_)
        | NodeEnum::AlterDefaultPrivilegesStmt(_)
        | NodeEnum::ReassignOwnedStmt(_) => Some(Privileges),
        NodeEnum::TruncateStmt(_) => Some(Truncate),
        NodeEnum::RenameStmt(_)
        | NodeEnum::AlterOwnerStmt(_)
        | NodeEnum::AlterObjectSchemaStmt(_)
        | NodeEnum::AlterDomainStmt(_)
        | NodeEnum::AlterEnumStmt(_)
        | NodeEnum::AlterTableMoveAllStmt(_) => Some(Alter),
        _ if summary.starts_with("DROP") => Some(Drop),
        _ if summary.starts_with("ALTER") => Some(Alter),
        _ => None,
    }
}

fn inner_kind(node: Option<&protobuf::Node>) -> Option<ReviewedStatement> {
    let node = node?.node.as_ref()?;
    kind(node, "")
}

/// The kind of the first reviewed statement among data-modifying CTEs.
fn with_kind(with: Option<&protobuf::WithClause>) -> Option<ReviewedStatement> {
    with?.ctes.iter().find_map(|cte| match cte.node.as_ref() {
        Some(NodeEnum::CommonTableExpr(cte)) => inner_kind(cte.ctequery.as_deref()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify;
    use ReviewedStatement::*;

    fn default_policy() -> ReviewPolicy {
        ReviewPolicy::new(&[Drop, Truncate, Alter, UnqualifiedWrite, Privileges], &[]).unwrap()
    }

    fn held(policy: &ReviewPolicy, sql: &str) -> Option<String> {
        let stmts = classify(sql);
        policy.held(sql, &stmts).map(|s| s.text(sql).to_string())
    }

    #[test]
    fn the_default_kinds_hold_what_is_hard_to_undo() {
        let p = default_policy();
        for sql in [
            "DROP TABLE t",
            "drop index if exists i",
            "TRUNCATE t",
            "ALTER TABLE t ADD COLUMN x int",
            "ALTER TABLE t RENAME TO u",
            "ALTER TABLE t OWNER TO bob",
            "DELETE FROM t",
            "UPDATE t SET x = 1",
            "GRANT SELECT ON t TO bob",
            "REVOKE ALL ON t FROM bob",
            "CREATE ROLE eve",
            "PREPARE p AS DELETE FROM t",
            "EXPLAIN ANALYZE DELETE FROM t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "DO $$ BEGIN EXECUTE 'drop table t'; END $$",
            "this is not sql",
        ] {
            assert!(held(&p, sql).is_some(), "{sql} should be held");
        }
        for sql in [
            "SELECT * FROM t",
            "DELETE FROM t WHERE id = 1",
            "UPDATE t SET x = 1 WHERE id = 2",
            "INSERT INTO t VALUES (1)",
            "CREATE TABLE t (x int)",
            "EXPLAIN DELETE FROM t WHERE id = 1",
            "BEGIN",
        ] {
            assert!(held(&p, sql).is_none(), "{sql} should run");
        }
    }

    #[test]
    fn the_held_statement_of_a_batch_is_named() {
        let p = default_policy();
        assert_eq!(
            held(&p, "SELECT 1; DROP TABLE t; SELECT 2").as_deref(),
            Some("DROP TABLE t")
        );
    }

    #[test]
    fn patterns_and_any_write_extend_the_kinds() {
        let p = ReviewPolicy::new(&[], &["(?i)^\\s*vacuum\\s+full".to_string()]).unwrap();
        assert!(held(&p, "VACUUM FULL t").is_some());
        assert!(held(&p, "VACUUM t").is_none());
        let p = ReviewPolicy::new(&[AnyWrite], &[]).unwrap();
        assert!(held(&p, "INSERT INTO t VALUES (1)").is_some());
        assert!(held(&p, "SELECT 1").is_none());
        let empty = ReviewPolicy::new(&[], &[]).unwrap();
        assert!(held(&empty, "DROP TABLE t").is_none());
        assert!(held(&empty, "not sql").is_none());
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let err = ReviewPolicy::new(&[], &["ok".into(), "(".into()]).unwrap_err();
        assert!(
            matches!(err, PolicyError::Pattern { index: 1, .. }),
            "{err}"
        );
    }
}
