//! Fingerprint keys: what a statement's `pg_query` fingerprint depends on,
//! read from the lexer's tokens instead of a second parse.
//!
//! A fingerprint leaves out the values of constants, so `… where aid = 1`
//! and `… where aid = 2` share one. Computing it parses the text again,
//! which costs about as much as classifying it; and a client of the simple
//! protocol that writes its values into the SQL sends a new text with
//! every statement, so a cache by text never hits. A [`FingerprintKey`] is
//! the text's tokens (from the PostgreSQL lexer, which classification runs
//! anyway) with every constant replaced by its kind. Texts with one key
//! lex to the same tokens but for the constants' values, so they parse to
//! the same tree but for those values.
//!
//! That is only the same fingerprint where every such value becomes a
//! constant node (`A_Const`, whose value fingerprints skip). Elsewhere the
//! grammar turns a constant into structure: `float(24)` is `real` and
//! `float(53)` `double precision`, `current_timestamp(3)` keeps its
//! precision, `int[3]` its bound, and utility statements keep strings as
//! names and options (`COPY … TO 'file'`). So a key exists only for
//! `SELECT`, `INSERT`, `UPDATE`, `DELETE` and `MERGE` statements in which
//! every constant follows an operator, a comma, one of a few keywords that
//! only an expression can follow (`WHERE`, `AND`, `THEN`, `LIMIT`, …), or
//! a `(` that opens an expression (a function call's, `IN (`,
//! `VALUES (`, or a nested one). Any other text has no key and is
//! fingerprinted by parsing it.

use pg_query::protobuf::{ScanToken, Token};

/// The key under which a statement text's fingerprint may be cached: two
/// texts with equal keys have the same fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FingerprintKey(String);

impl FingerprintKey {
    /// Its length in bytes (about the text's).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (a text of comments only).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Separates tokens: no SQL text can hold a NUL.
const SEPARATOR: char = '\0';
/// Starts a constant's kind: a token that could hold it whole (a quoted
/// identifier) starts with `"`.
const CONSTANT: char = '\u{1}';

/// The key of `sql` from its tokens (all of them, in order), when every
/// statement in it is data manipulation (`dml`) and every constant is in a
/// place where it can only be a value.
pub(crate) fn fingerprint_key(
    sql: &str,
    tokens: &[ScanToken],
    dml: bool,
) -> Option<FingerprintKey> {
    if !dml {
        return None;
    }
    let mut key = String::with_capacity(sql.len() + tokens.len());
    // Whether a constant right after the previous token would be a value.
    let mut value_follows = false;
    let mut previous = None;
    let mut semicolons = 0;
    for token in tokens {
        let kind = Token::try_from(token.token).ok()?;
        if matches!(kind, Token::SqlComment | Token::CComment) {
            continue;
        }
        // Semicolons count between statements, not after the last one.
        if kind == Token::Ascii59 {
            semicolons += 1;
            continue;
        }
        for _ in 0..std::mem::take(&mut semicolons) {
            key.push(';');
            key.push(SEPARATOR);
        }
        if let Some(marker) = constant_marker(kind) {
            if !value_follows {
                return None;
            }
            key.push(CONSTANT);
            key.push(marker);
        } else {
            let text =
                sql.get(usize::try_from(token.start).ok()?..usize::try_from(token.end).ok()?)?;
            if text.starts_with('"')
                || text
                    .get(..3)
                    .is_some_and(|u| u.eq_ignore_ascii_case("u&\""))
            {
                key.push_str(text);
            } else {
                // Keywords and unquoted names are the same in any case (the
                // lexer folds ASCII letters, and only those).
                key.extend(text.chars().map(|c| c.to_ascii_lowercase()));
            }
        }
        key.push(SEPARATOR);
        value_follows = match kind {
            // `(` opens an expression after a place where one starts, and
            // after `IN` or `VALUES`; after a name it opens a call's
            // arguments (or a type's modifiers, which are constants too).
            Token::Ascii40 => {
                value_follows || matches!(previous, Some(Token::Ident | Token::InP | Token::Values))
            }
            other => starts_expression(other),
        };
        previous = Some(kind);
    }
    Some(FingerprintKey(key))
}

/// The kind of a constant token, `None` for other tokens.
fn constant_marker(kind: Token) -> Option<char> {
    Some(match kind {
        Token::Iconst => 'i',
        Token::Fconst => 'f',
        Token::Sconst => 's',
        Token::Usconst => 'u',
        Token::Bconst => 'b',
        Token::Xconst => 'x',
        _ => return None,
    })
}

/// Whether a constant right after a token of `kind` (other than `(`) can
/// only be a value.
fn starts_expression(kind: Token) -> bool {
    match kind {
        // Operators: + - * / % ^ < = > and the longer ones.
        Token::Ascii37
        | Token::Ascii42
        | Token::Ascii43
        | Token::Ascii45
        | Token::Ascii47
        | Token::Ascii60
        | Token::Ascii61
        | Token::Ascii62
        | Token::Ascii94
        | Token::Op
        | Token::ColonEquals
        | Token::EqualsGreater
        | Token::LessEquals
        | Token::GreaterEquals
        | Token::NotEquals => true,
        // A comma separates expressions (arguments, lists, type modifiers,
        // which are constants too).
        Token::Ascii44 => true,
        // Keywords that only an expression follows.
        Token::Select
        | Token::Where
        | Token::And
        | Token::Or
        | Token::Not
        | Token::Case
        | Token::When
        | Token::Then
        | Token::Else
        | Token::Limit
        | Token::Offset
        | Token::Between
        | Token::Like
        | Token::Ilike
        | Token::Returning
        | Token::By
        | Token::Having
        | Token::On => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::{classify_keyed, fingerprint};

    fn key(sql: &str) -> Option<crate::FingerprintKey> {
        classify_keyed(sql).1
    }

    /// Statements whose constants the grammar keeps as values, each with
    /// other values (and spacing, case of keywords, comments) in its
    /// variants: every variant must have the first one's key and
    /// fingerprint.
    const SAME_SHAPE: &[&[&str]] = &[
        &[
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 9876543;",
            "select abalance  from pgbench_accounts /* hi */ where aid =\n42;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42 -- done",
        ],
        &[
            "UPDATE pgbench_accounts SET abalance = abalance + -4 WHERE aid = 7;",
            "UPDATE pgbench_accounts SET abalance = abalance + -4999 WHERE aid = 123456;",
        ],
        &[
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, CURRENT_TIMESTAMP);",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (10, 1, 35, -4999, CURRENT_TIMESTAMP);",
        ],
        &[
            "select * from t where name = 'x' and note like 'a%' limit 5 offset 10",
            "select * from t where name = 'other name' and note like '%z' limit 50 offset 0",
            "select * from t where name = E'it''s' and note like 'q' limit 1 offset 2",
        ],
        &[
            "select case when a > 1.5 then 'big' else 'small' end from t where b between 1 and 2",
            "select case when a > 99.25 then 'huge' else 'tiny' end from t where b between 10 and 20",
        ],
        &[
            "select x from t where y in (1, 2, 3) or z = any(array_fn(5)) order by 1",
            "select x from t where y in (7, 8, 9) or z = any(array_fn(6)) order by 2",
        ],
        &[
            "select f(1, 'a', x'ff', b'101'), g((2 + 3) * 4), 1::mytype(10) from t",
            "select f(2, 'b', x'00', b'1'), g((9 + 8) * 7), 1::mytype(20) from t",
        ],
        &[
            "delete from t where id = 5 returning id, 'gone'",
            "delete from t where id = 6 returning id, 'removed'",
        ],
        &[
            "insert into t values (1, 'a'), (2, 'b') on conflict (id) do update set v = 'c'",
            "insert into t values (3, 'x'), (4, 'y') on conflict (id) do update set v = 'z'",
        ],
        &[
            "select count(*) from t group by a having count(*) > 3",
            "select count(*) from t group by a having count(*) > 300",
        ],
        &[
            "select a from t join u on t.id = u.id and u.k = 'k1' where not t.flag = 0; select 2",
            "select a from t join u on t.id = u.id and u.k = 'k2' where not t.flag = 1; select 3",
        ],
    ];

    #[test]
    fn texts_that_differ_in_values_share_a_key_and_a_fingerprint() {
        for group in SAME_SHAPE {
            let first = key(group[0]).unwrap_or_else(|| panic!("no key: {}", group[0]));
            let expected = fingerprint(group[0]).unwrap();
            for variant in *group {
                assert_eq!(key(variant).as_ref(), Some(&first), "{variant}");
                assert_eq!(fingerprint(variant).unwrap(), expected, "{variant}");
            }
        }
    }

    #[test]
    fn different_statements_have_different_keys() {
        let keys: Vec<_> = SAME_SHAPE
            .iter()
            .map(|group| key(group[0]).unwrap())
            .collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let pairs = [
            ("select a from t where x = 1", "select b from t where x = 1"),
            (
                "select a from t where x = 1",
                "select a from t where x = '1'",
            ),
            (
                "select a from t where x = 1",
                "select a from t where x = 1.0",
            ),
            (
                "select a from t where x = $1",
                "select a from t where x = $2",
            ),
            (
                "select a from t where x in (1, 2)",
                "select a from t where x in (1)",
            ),
            (
                "select \"a b\" from t where x = 1",
                "select a b from t where x = 1",
            ),
        ];
        for (a, b) in pairs {
            assert_ne!(key(a), key(b), "{a} / {b}");
        }
    }

    #[test]
    fn constants_the_grammar_turns_into_structure_leave_no_key() {
        // Each pair differs only in a constant, and in its fingerprint.
        let structural = [
            ("select x::float(24) from t", "select x::float(53) from t"),
            ("select current_timestamp(3)", "select current_timestamp(6)"),
            ("select x::int[3] from t", "select x::int[4] from t"),
            ("copy t to '/tmp/a'", "copy t to '/tmp/b'"),
        ];
        for (a, b) in structural {
            assert_ne!(fingerprint(a), fingerprint(b), "{a} / {b}");
            assert_eq!(key(a), None, "{a}");
            assert_eq!(key(b), None, "{b}");
        }
        // Values in places this module does not vouch for, and utility
        // statements, have no key either (they are fingerprinted by
        // parsing).
        for sql in [
            "select 'x'::varchar(10)",
            "select interval '1 day'",
            "select date '2025-01-01'",
            "select cast(1 as int)",
            "set work_mem = '64MB'",
            "explain analyze select 1",
            "fetch 5 from c",
            "select 1; set search_path = 'x'",
            "create table t (a int default 5)",
        ] {
            assert_eq!(key(sql), None, "{sql}");
        }
        assert_eq!(key("select 1 +"), None, "unparseable");
    }

    proptest::proptest! {
        /// Whatever values a statement carries, texts with one key have
        /// one fingerprint.
        #[test]
        fn texts_with_one_key_have_one_fingerprint(
            values in proptest::collection::vec(
                (0..i64::MAX, -100_000i32..100_000, "[a-zA-Z0-9 %_']{0,12}", -1e12f64..1e12),
                2,
            ),
        ) {
            let texts: Vec<String> = values
                .iter()
                .map(|(aid, delta, name, ratio)| {
                    let quoted = name.replace('\'', "''");
                    format!(
                        "select a, '{quoted}', f({delta}) from t \
                         where aid = {aid} and b = {ratio} and c in ({delta}, {aid}) limit {aid}"
                    )
                })
                .collect();
            let (Some(a), Some(b)) = (key(&texts[0]), key(&texts[1])) else {
                panic!("no key for {texts:?}");
            };
            if a == b {
                proptest::prop_assert_eq!(fingerprint(&texts[0]), fingerprint(&texts[1]));
            }
        }
    }
}
