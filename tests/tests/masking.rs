//! Inline masking: column rules (by source column, through aliases, views,
//! joins and subqueries, or by a glob on the column name), value detectors
//! on everything else that reaches the client (computed expressions, free
//! text, COPY rows, errors, notices, NOTIFY payloads), in text and binary
//! formats; exemption only through a group that itself holds a role on the
//! connection; stable hash tokens; masking events in the node log that never
//! carry cleartext; and `juris check` on bad masking config.
//!
//! Every expectation is computed from the values read directly from
//! PostgreSQL (no gateway), so a leak or a wrong masked form fails.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{CONNECTION, Env, connect, connect_with_messages, db_error, psql};
use futures_util::TryStreamExt;
use juris_testkit::gateway::{ConnectionSpec, GatewaySpec, RoleSpec, juris_binary};
use juris_testkit::oidc::AUDIENCE;
use juris_testkit::postgres::UpstreamAuth;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

/// The region's HMAC key for the `hash` strategy.
const MASK_KEY: &str = "5f1c0a7e93b24d68a0e1c2b3d4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d";

const REDACTED: &str = "[REDACTED]";

/// The masking policy under test (appended to connection `billing`, and to
/// `reports` where a test has one).
const MASKING: &str = r#"
[connection.masking]
exempt_groups = ["pii-readers"]
[[connection.masking.column]]
name = "public.customers.ssn"
strategy = "partial"
keep_last = 4
[[connection.masking.column]]
pattern = "*card*"
strategy = "partial"
keep_last = 4
[[connection.masking.column]]
name = "public.customers.email"
strategy = "hash"
[[connection.masking.column]]
name = "public.customers.phone"
strategy = "null"
[[connection.masking.column]]
name = "public.accounts.balance"
strategy = "redact"
[[connection.masking.value]]
detector = "ssn"
strategy = "redact"
[[connection.masking.value]]
detector = "card"
strategy = "redact"
[[connection.masking.value]]
detector = "employee_id"
strategy = "redact"
[[connection.masking.detector]]
name = "employee_id"
regex = "EMP-[0-9]{6}"
"#;

/// Run directly on the upstream before any client connects.
const SETUP: &str = "
create unique index customers_ssn_key on public.customers (ssn);
create view public.v as select id, ssn as s from public.customers;
create table public.accounts (id int primary key, balance bigint not null);
insert into public.accounts select id, 1000000000 + id * 7919 from public.customers;
create table public.tickets (id int primary key, body text not null);
insert into public.tickets
  select id, 'customer ' || ssn || ' paid with ' || card_number || ' badge EMP-' || lpad(id::text, 6, '0')
  from public.customers where id <= 20;
";

/// One seeded customer as PostgreSQL holds it.
#[derive(Debug, Clone)]
struct Customer {
    id: i32,
    full_name: String,
    email: String,
    ssn: String,
    card: String,
    phone: String,
}

/// The environment plus the cleartext it must never leak.
struct Masked {
    env: Env,
    customers: Vec<Customer>,
}

impl Masked {
    /// Standard roles, the masking policy on `billing`, the region key, the
    /// extra upstream objects; `customise` may add connections and roles.
    async fn start(customise: impl FnOnce(&mut GatewaySpec)) -> anyhow::Result<Masked> {
        let env = Env::start_with(UpstreamAuth::ScramSha256, |spec| {
            spec.mask_hash_key = Some(MASK_KEY.into());
            spec.connection_settings
                .push((CONNECTION.into(), MASKING.into()));
            customise(spec);
        })
        .await?;
        let direct = env.direct().await?;
        direct.batch_execute(SETUP).await?;
        let customers = direct
            .query(
                "select id, full_name, email, ssn, card_number, phone from customers order by id",
                &[],
            )
            .await?
            .iter()
            .map(|r| Customer {
                id: r.get(0),
                full_name: r.get(1),
                email: r.get(2),
                ssn: r.get(3),
                card: r.get(4),
                phone: r.get(5),
            })
            .collect::<Vec<_>>();
        assert_eq!(customers.len(), 1000);
        Ok(Masked { env, customers })
    }

    /// The customer with this id.
    fn customer(&self, id: i32) -> &Customer {
        &self.customers[usize::try_from(id - 1).unwrap()]
    }

    /// Fail if `text` contains any seeded SSN or card number.
    fn assert_no_cleartext(&self, what: &str, text: &str) {
        for c in &self.customers {
            assert!(
                !text.contains(&c.ssn),
                "{what}: cleartext SSN of customer {} ({}) leaked:\n{}",
                c.id,
                c.ssn,
                excerpt(text, &c.ssn)
            );
            assert!(
                !text.contains(&c.card),
                "{what}: cleartext card number of customer {} ({}) leaked:\n{}",
                c.id,
                c.card,
                excerpt(text, &c.card)
            );
        }
    }

    /// The node log never holds a seeded SSN or card number.
    fn assert_log_clean(&self) {
        self.assert_no_cleartext("node log", &self.env.gateway.log());
    }

    async fn token(&self, login: &str) -> anyhow::Result<String> {
        self.env.oidc.user_token(login).await
    }

    async fn client_as(&self, login: &str) -> anyhow::Result<tokio_postgres::Client> {
        self.env.client(&self.token(login).await?).await
    }
}

/// A few lines around the first occurrence of `needle`.
fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    text[start..end].chars().take(400).collect()
}

/// The `partial` strategy as specified: the last `keep` alphanumerics stay,
/// the other alphanumerics become `*`, separators stay.
fn partial(value: &str, keep: usize) -> String {
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen > total.saturating_sub(keep) {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

/// `tok_` + 20 lowercase hex characters.
fn is_token(value: &str) -> bool {
    value.strip_prefix("tok_").is_some_and(|hex| {
        hex.len() == 20
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

#[derive(Debug, Clone, Copy)]
enum Format {
    /// Simple protocol: text result format.
    Text,
    /// Extended protocol (tokio-postgres `query`): binary result format.
    Binary,
}

type Rows = Vec<Vec<Option<String>>>;

/// All rows of a query whose columns are all text-typed, in `format`.
async fn fetch(client: &tokio_postgres::Client, format: Format, sql: &str) -> anyhow::Result<Rows> {
    Ok(match format {
        Format::Text => client
            .simple_query(sql)
            .await?
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect(),
        Format::Binary => {
            let mut rows = Vec::new();
            for row in client.query(sql, &[]).await? {
                let mut values = Vec::new();
                for i in 0..row.len() {
                    values.push(row.try_get::<_, Option<String>>(i)?);
                }
                rows.push(values);
            }
            rows
        }
    })
}

fn row(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

/// Everything in rows, for leak checks.
fn flatten(rows: &Rows) -> String {
    rows.iter()
        .flatten()
        .map(|v| v.as_deref().unwrap_or("<null>"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fields of one CSV line (no embedded newlines): (value, was quoted).
fn csv_fields(line: &str) -> Vec<(String, bool)> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let (mut value, mut quoted) = (String::new(), false);
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        value.push('"');
                    } else {
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' {
                break;
            }
            value.push(c);
            chars.next();
        }
        fields.push((value, quoted));
        if chars.next().is_none() {
            return fields;
        }
    }
}

/// Wait until some log line satisfies `predicate`.
async fn wait_for_log_line(env: &Env, predicate: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = env.gateway.log().lines().find(|l| predicate(l)) {
            return Some(line.to_string());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The counts a log line reports: fields whose key contains `count`
/// (`count=7`, `masked_count=7`, `"count":7`) or a multiplier (`partial×7`).
fn counts(line: &str) -> Vec<u64> {
    let number = |s: &str| -> Option<u64> {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    let mut out = Vec::new();
    for (at, _) in line.match_indices("count") {
        // `count` starts a key or ends one (`masked_count`), not `account`.
        if line[..at]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
        {
            continue;
        }
        let rest = &line[at + "count".len()..];
        let after_key = rest.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
        let after_sep = after_key.trim_start_matches(['=', ':', '"', ' ']);
        if after_sep.len() < after_key.len() {
            out.extend(number(after_sep));
        }
    }
    for (at, sign) in line.match_indices('×') {
        out.extend(number(&line[at + sign.len()..]));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn column_rules_follow_the_source_column_through_aliases_views_joins_and_subqueries()
-> anyhow::Result<()> {
    let m = Masked::start(|_| {}).await?;
    let bob = m.client_as("bob").await?;
    let (c1, c2) = (m.customer(1), m.customer(2));
    let (ssn1, card1) = (partial(&c1.ssn, 4), partial(&c1.card, 4));
    assert_eq!(ssn1.len(), 11);
    assert!(ssn1.starts_with("***-**-") && c1.ssn.ends_with(&ssn1[7..]));

    let exact: Vec<(&str, Vec<Option<String>>)> = vec![
        ("select ssn from customers where id = 1", row(&[&ssn1])),
        // An alias hides neither: the rule is on the source column.
        (
            "select ssn as x, card_number as pay from customers where id = 1",
            row(&[&ssn1, &card1]),
        ),
        (
            "select SSN from public.CUSTOMERS c where c.id = 1",
            row(&[&ssn1]),
        ),
        // A view column is its base column.
        ("select s from v where id = 1", row(&[&ssn1])),
        ("select id::text, s from v where id = 1", row(&["1", &ssn1])),
        // Self-join and join with another table.
        (
            "select a.ssn, b.card_number from customers a join customers b on a.id = b.id where a.id = 1",
            row(&[&ssn1, &card1]),
        ),
        (
            "select x.s, y.card_number from v x join customers y using (id) where id = 1",
            row(&[&ssn1, &card1]),
        ),
        (
            "select ssn from customers join accounts using (id) where id = 1",
            row(&[&ssn1]),
        ),
        // Subqueries in FROM, nested, over SELECT *; and a CTE.
        (
            "select s from (select id, ssn as s from customers) t where t.id = 1",
            row(&[&ssn1]),
        ),
        (
            "select t.c from (select card_number as c from (select * from customers) u where u.id = 1) t",
            row(&[&card1]),
        ),
        (
            "with c as (select id, ssn from customers) select ssn from c where id = 1",
            row(&[&ssn1]),
        ),
        // The pattern also matches the result's output name, case-insensitively.
        (
            "select 'hello-world'::text as my_card",
            row(&["*****-*orld"]),
        ),
        (
            "select 'abcd-1234'::text as \"Card_Ref\"",
            row(&["****-1234"]),
        ),
        // Columns without a rule and without detectable PII are untouched.
        (
            "select full_name from customers where id = 2",
            row(&[&c2.full_name]),
        ),
        // Masking is on the way out only: predicates still see cleartext.
        (
            "select id::text from customers where ssn = (select ssn from customers where id = 2)",
            row(&["2"]),
        ),
    ];
    let mut seen = String::new();
    for format in [Format::Text, Format::Binary] {
        for (sql, expected) in &exact {
            let rows = fetch(&bob, format, sql).await?;
            seen.push_str(&flatten(&rows));
            assert_eq!(rows, vec![expected.clone()], "{format:?}: {sql}");
        }

        // No source column in the row description (scalar subquery, UNION):
        // either the column rule or the value detector applies, never cleartext.
        for (sql, ids) in [
            ("select (select ssn from customers where id = 1)", vec![1]),
            (
                "select ssn from customers where id = 1 union all select ssn from customers where id = 2",
                vec![1, 2],
            ),
        ] {
            let rows = fetch(&bob, format, sql).await?;
            seen.push_str(&flatten(&rows));
            assert_eq!(rows.len(), ids.len(), "{format:?}: {sql}");
            for (r, id) in rows.iter().zip(ids) {
                let got = r[0].as_deref().unwrap_or("<null>");
                let ssn = &m.customer(id).ssn;
                assert!(
                    got == partial(ssn, 4) || got == REDACTED,
                    "{format:?}: {sql}: {got}"
                );
            }
        }

        // SELECT *: each rule on its own column, everything else untouched.
        let sql = "select * from customers where id <= 3 order by id";
        let (ids, values): (Vec<i32>, Rows) = match format {
            Format::Text => {
                let rows = fetch(&bob, format, sql).await?;
                (
                    rows.iter()
                        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
                        .collect(),
                    rows.into_iter().map(|r| r[1..6].to_vec()).collect(),
                )
            }
            Format::Binary => {
                let rows = bob.query(sql, &[]).await?;
                (
                    rows.iter().map(|r| r.get(0)).collect(),
                    rows.iter()
                        .map(|r| (1..6).map(|i| r.get::<_, Option<String>>(i)).collect())
                        .collect(),
                )
            }
        };
        assert_eq!(ids, [1, 2, 3], "{format:?}");
        for (id, values) in ids.into_iter().zip(&values) {
            let c = m.customer(id);
            seen.push_str(&flatten(&vec![values.clone()]));
            assert_eq!(
                values[0].as_deref(),
                Some(c.full_name.as_str()),
                "{format:?}"
            );
            let email = values[1].as_deref().unwrap_or("<null>");
            assert!(is_token(email), "{format:?}: email {email}");
            assert_eq!(values[2], Some(partial(&c.ssn, 4)), "{format:?}");
            assert_eq!(values[3], Some(partial(&c.card, 4)), "{format:?}");
            assert_eq!(values[4], None, "{format:?}: phone has the null strategy");
        }

        // Every seeded value, not just a sample.
        let rows = fetch(
            &bob,
            format,
            "select ssn, card_number from customers order by id",
        )
        .await?;
        let expected: Rows = m
            .customers
            .iter()
            .map(|c| row(&[&partial(&c.ssn, 4), &partial(&c.card, 4)]))
            .collect();
        assert!(rows == expected, "{format:?}: all 1000 rows masked");
        seen.push_str(&flatten(&rows));
    }
    m.assert_no_cleartext("tokio-postgres results", &seen);

    // psql, text format, through the same rules.
    let conninfo = m
        .env
        .gateway
        .conninfo(CONNECTION, "bob", &m.token("bob").await?);
    let (ok, out, err) = psql(
        &conninfo,
        &[
            "-P",
            "null=<null>",
            "-c",
            "select id, full_name, email, ssn, card_number, phone from customers where id = 1",
            "-c",
            "select s from v where id = 2",
        ],
    )
    .await?;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let fields: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(fields.len(), 6, "{out}");
    assert_eq!(fields[0], "1");
    assert_eq!(fields[1], c1.full_name);
    assert!(is_token(fields[2]), "{out}");
    assert_eq!(fields[3], ssn1);
    assert_eq!(fields[4], card1);
    assert_eq!(fields[5], "<null>");
    assert_eq!(lines[1], partial(&c2.ssn, 4));
    m.assert_no_cleartext("psql", &format!("{out}\n{err}"));
    m.assert_log_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn computed_expressions_and_free_text_fall_back_to_value_detectors() -> anyhow::Result<()> {
    let m = Masked::start(|_| {}).await?;
    let bob = m.client_as("bob").await?;
    let c2 = m.customer(2);
    // Customer 1 has a Visa, 2 a Mastercard, 3 an Amex (15 digits) number.
    assert_eq!(
        m.customers[..3]
            .iter()
            .map(|c| c.card.len())
            .collect::<Vec<_>>(),
        [16, 16, 15]
    );

    // No source column: the value rules apply (ssn, card, employee_id → redact),
    // masking only the detected span.
    let cases: Vec<(&str, String)> = vec![
        (
            "select ssn || '' from customers where id = 2",
            REDACTED.into(),
        ),
        (
            "select upper(ssn) from customers where id = 2",
            REDACTED.into(),
        ),
        (
            "select 'my ssn is ' || ssn from customers where id = 2",
            format!("my ssn is {REDACTED}"),
        ),
        (
            "select card_number || '' from customers where id = 1",
            REDACTED.into(),
        ),
        (
            "select concat('card: ', card_number, '.') from customers where id = 2",
            format!("card: {REDACTED}."),
        ),
        (
            "select lower(card_number) from customers where id = 3",
            REDACTED.into(),
        ),
        (
            "select string_agg(ssn, ',' order by id) from customers where id <= 3",
            format!("{REDACTED},{REDACTED},{REDACTED}"),
        ),
        // A column without a column rule: its free text goes through the detectors.
        (
            "select body from tickets where id = 2",
            format!("customer {REDACTED} paid with {REDACTED} badge {REDACTED}"),
        ),
        // The custom regex detector; a near miss stays.
        (
            "select 'ref EMP-123456 and EMP-12345'::text",
            format!("ref {REDACTED} and EMP-12345"),
        ),
        // Nothing detectable: untouched.
        (
            "select 'hello ' || full_name from customers where id = 2",
            format!("hello {}", c2.full_name),
        ),
    ];
    // Not asserted, by design: a transformed value the detectors cannot
    // recognise, e.g. encode(ssn::bytea, 'base64'), replace(ssn, '-', ''),
    // reverse(ssn), comes back as computed. Column rules cannot see through
    // expressions and detectors only match what looks like the PII.
    let mut seen = String::new();
    for format in [Format::Text, Format::Binary] {
        for (sql, expected) in &cases {
            let rows = fetch(&bob, format, sql).await?;
            seen.push_str(&flatten(&rows));
            assert_eq!(rows, vec![row(&[expected])], "{format:?}: {sql}");
        }
        // A whole row as JSON: the SSN and card spans are found inside it.
        let rows = fetch(
            &bob,
            format,
            "select row_to_json(c)::text from customers c where id = 2",
        )
        .await?;
        let json = rows[0][0].clone().unwrap_or_default();
        seen.push_str(&json);
        let value: serde_json::Value = serde_json::from_str(&json)?;
        assert_eq!(value["ssn"], REDACTED, "{format:?}: {json}");
        assert_eq!(value["card_number"], REDACTED, "{format:?}: {json}");
        assert_eq!(
            value["full_name"],
            c2.full_name.as_str(),
            "{format:?}: {json}"
        );

        // Every seeded SSN and card number is detected in free text.
        let rows = fetch(
            &bob,
            format,
            "select 'a ' || ssn || ' b ' || card_number || ' c' from customers order by id",
        )
        .await?;
        assert_eq!(rows.len(), 1000);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(
                r[0].as_deref(),
                Some(format!("a {REDACTED} b {REDACTED} c").as_str()),
                "{format:?}: customer {}",
                i + 1
            );
        }
        seen.push_str(&flatten(&rows));
    }
    m.assert_no_cleartext("computed results", &seen);

    let conninfo = m
        .env
        .gateway
        .conninfo(CONNECTION, "bob", &m.token("bob").await?);
    let (ok, out, err) = psql(
        &conninfo,
        &[
            "-c",
            "select 'my ssn is ' || ssn from customers where id = 2",
            "-c",
            "select body from tickets where id = 3",
        ],
    )
    .await?;
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("my ssn is {REDACTED}"),
            format!("customer {REDACTED} paid with {REDACTED} badge {REDACTED}"),
        ]
    );
    m.assert_log_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_and_binary_formats_mask_alike_and_hash_tokens_are_stable() -> anyhow::Result<()> {
    let m = Masked::start(|_| {}).await?;
    let direct = m.env.direct().await?;
    let bob_token = m.token("bob").await?;
    let bob = m.env.client(&bob_token).await?;
    let mut seen = String::new();

    // psql: text format.
    let (ok, out, err) = psql(
        &m.env.gateway.conninfo(CONNECTION, "bob", &bob_token),
        &[
            "-P",
            "null=<null>",
            "-c",
            "select id, ssn, card_number, email, phone from customers where id <= 5 order by id",
            "-c",
            "select balance from accounts where id = 1",
        ],
    )
    .await?;
    assert!(ok, "{err}");
    seen.push_str(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let mut tokens = HashMap::new();
    for line in &lines[..5] {
        let f: Vec<&str> = line.split('|').collect();
        let c = m.customer(f[0].parse()?);
        assert_eq!(f[1], partial(&c.ssn, 4), "{line}");
        assert_eq!(f[2], partial(&c.card, 4), "{line}");
        assert!(is_token(f[3]), "{line}");
        assert_ne!(f[3], c.email);
        assert_eq!(f[4], "<null>", "{line}");
        tokens.insert(c.id, f[3].to_string());
    }
    // A rule on a non-text column: in text format the value is not shown.
    let balance1: i64 = direct
        .query_one("select balance from accounts where id = 1", &[])
        .await?
        .get(0);
    assert!(
        !lines[5].contains(&balance1.to_string()),
        "masked int8 shown in text format: {}",
        lines[5]
    );
    // Different customers, different tokens.
    assert_eq!(
        tokens.values().collect::<BTreeSet<_>>().len(),
        5,
        "{tokens:?}"
    );

    // tokio-postgres prepared statements: binary format, executed twice.
    let statement = bob
        .prepare(
            "select id, ssn, card_number, email, phone from customers where id = any($1) order by id",
        )
        .await?;
    for _ in 0..2 {
        let rows = bob.query(&statement, &[&vec![1i32, 2, 3, 4, 5]]).await?;
        assert_eq!(rows.len(), 5);
        for r in &rows {
            let c = m.customer(r.get(0));
            let ssn: Option<String> = r.get(1);
            let card: Option<String> = r.get(2);
            let email: Option<String> = r.get(3);
            let phone: Option<String> = r.get(4);
            assert_eq!(ssn, Some(partial(&c.ssn, 4)));
            assert_eq!(card, Some(partial(&c.card, 4)));
            assert_eq!(
                email.as_ref(),
                tokens.get(&c.id),
                "binary token = text token"
            );
            assert_eq!(phone, None, "null strategy in binary format");
            seen.push_str(&format!("{ssn:?} {card:?} {email:?}\n"));
        }
    }
    // A masked value of a non-text type in binary format comes back NULL.
    let by_id = bob
        .prepare("select id, balance from accounts where id = $1")
        .await?;
    for id in [1i32, 2] {
        let r = bob.query_one(&by_id, &[&id]).await?;
        assert_eq!(r.get::<_, i32>(0), id);
        assert_eq!(r.get::<_, Option<i64>>(1), None, "int8 balance of {id}");
    }
    let r = bob
        .query_one("select balance, id from accounts where id = 3", &[])
        .await?;
    assert_eq!(r.get::<_, Option<i64>>(0), None);
    assert_eq!(r.get::<_, i32>(1), 3);

    // Same email, same token: in another session of another user (carol).
    let carol = m.client_as("carol").await?;
    for format in [Format::Text, Format::Binary] {
        let rows = fetch(
            &carol,
            format,
            "select id::text, email from customers where id <= 5 order by id",
        )
        .await?;
        for r in rows {
            let id: i32 = r[0].as_deref().unwrap().parse()?;
            assert_eq!(r[1].as_ref(), tokens.get(&id), "{format:?}: customer {id}");
        }
    }
    // GROUP BY and joins on the hashed column still line up.
    let rows = fetch(
        &carol,
        Format::Text,
        "select email, count(*)::text from customers cross join generate_series(1, 3) g \
         where id <= 5 group by email",
    )
    .await?;
    let grouped: BTreeSet<(String, String)> = rows
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    let expected: BTreeSet<(String, String)> =
        tokens.values().map(|t| (t.clone(), "3".into())).collect();
    assert_eq!(grouped, expected);
    let rows = fetch(
        &carol,
        Format::Binary,
        "select a.email, b.email from customers a join customers b on a.email = b.email \
         where a.id <= 5 order by a.id",
    )
    .await?;
    assert_eq!(rows.len(), 5);
    for (i, r) in rows.iter().enumerate() {
        let id = i32::try_from(i + 1)?;
        assert_eq!(r[0].as_ref(), tokens.get(&id));
        assert_eq!(r[1].as_ref(), tokens.get(&id));
    }
    // The tokens reveal nothing of the address.
    for (id, token) in &tokens {
        let local = m.customer(*id).email.split('@').next().unwrap().to_string();
        assert!(!token.contains(&local), "{token}");
    }
    m.assert_no_cleartext("results", &seen);
    m.assert_log_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_out_is_masked_and_binary_copy_is_refused() -> anyhow::Result<()> {
    let m = Masked::start(|_| {}).await?;
    let bob_token = m.token("bob").await?;
    let bob = m.env.client(&bob_token).await?;
    let conninfo = m.env.gateway.conninfo(CONNECTION, "bob", &bob_token);
    let email_token = fetch(
        &bob,
        Format::Text,
        "select email from customers where id = 1",
    )
    .await?[0][0]
        .clone()
        .unwrap();
    assert!(is_token(&email_token));

    // COPY table TO STDOUT, text format, through psql.
    let (ok, out, err) = psql(&conninfo, &["-c", "copy customers to stdout"]).await?;
    assert!(ok, "{err}");
    m.assert_no_cleartext("COPY customers TO STDOUT", &out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1000);
    for line in &lines {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 7, "{line}");
        let c = m.customer(f[0].parse()?);
        assert_eq!(f[1], c.full_name, "{line}");
        assert!(is_token(f[2]), "{line}");
        assert_eq!(f[3], partial(&c.ssn, 4), "{line}");
        assert_eq!(f[4], partial(&c.card, 4), "{line}");
        assert_eq!(f[5], "\\N", "phone has the null strategy: {line}");
        if c.id == 1 {
            assert_eq!(f[2], email_token, "COPY and SELECT give the same token");
        }
    }

    // A column list, and a query in CSV with a header.
    let (ok, out, err) = psql(
        &conninfo,
        &[
            "-c",
            "copy customers (id, ssn) to stdout",
            "-c",
            "copy (select id, full_name, ssn, card_number, email, phone from customers \
             where id <= 5 order by id) to stdout with (format csv, header)",
            "-c",
            "copy (select 'note ' || ssn from customers where id <= 2 order by id) to stdout \
             with (format csv)",
            "-c",
            "copy tickets to stdout",
        ],
    )
    .await?;
    assert!(ok, "{err}");
    m.assert_no_cleartext("COPY", &out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1000 + 6 + 2 + 20, "{err}");
    for (i, line) in lines[..1000].iter().enumerate() {
        let c = &m.customers[i];
        assert_eq!(*line, format!("{}\t{}", c.id, partial(&c.ssn, 4)));
    }
    assert_eq!(lines[1000], "id,full_name,ssn,card_number,email,phone");
    for (i, line) in lines[1001..1006].iter().enumerate() {
        let c = &m.customers[i];
        // Quoting is the encoder's choice; an unquoted empty field is NULL.
        let fields = csv_fields(line);
        let f: Vec<&str> = fields.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(f.len(), 6, "{line}");
        assert_eq!(f[0], c.id.to_string(), "{line}");
        assert_eq!(f[1], c.full_name, "{line}");
        // The same column rules as the equivalent SELECT.
        assert_eq!(f[2], partial(&c.ssn, 4), "{line}");
        assert_eq!(f[3], partial(&c.card, 4), "{line}");
        assert!(is_token(f[4]), "email in COPY (query): {line}");
        if c.id == 1 {
            assert_eq!(f[4], email_token);
        }
        assert_eq!(
            fields[5],
            (String::new(), false),
            "phone (null strategy) is an unquoted empty CSV field: {line}"
        );
    }
    for line in &lines[1006..1008] {
        assert_eq!(
            csv_fields(line)
                .into_iter()
                .map(|(v, _)| v)
                .collect::<Vec<_>>(),
            [format!("note {REDACTED}")],
            "{line}"
        );
    }
    for (i, line) in lines[1008..].iter().enumerate() {
        assert_eq!(
            *line,
            format!(
                "{}\tcustomer {REDACTED} paid with {REDACTED} badge {REDACTED}",
                i + 1
            )
        );
    }

    // tokio-postgres COPY OUT, text: same as psql.
    let stream = bob
        .copy_out(
            "copy (select ssn, card_number from customers where id <= 3 order by id) to stdout",
        )
        .await?;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
    let text = String::from_utf8(chunks.concat())?;
    let expected: String = m.customers[..3]
        .iter()
        .map(|c| format!("{}\t{}\n", partial(&c.ssn, 4), partial(&c.card, 4)))
        .collect();
    assert_eq!(text, expected);

    // Binary COPY cannot be masked: refused with 42501, and the session goes on.
    for sql in [
        "copy customers to stdout with (format binary)",
        "copy (select ssn from customers) to stdout with (format binary)",
    ] {
        let result: Result<Vec<bytes::Bytes>, tokio_postgres::Error> = async {
            let stream = bob.copy_out(sql).await?;
            stream.try_collect().await
        }
        .await;
        let error = match result {
            Ok(chunks) => {
                let data = chunks.concat();
                m.assert_no_cleartext(sql, &String::from_utf8_lossy(&data));
                panic!(
                    "{sql}: not refused ({} bytes of binary COPY data)",
                    data.len()
                );
            }
            Err(error) => error,
        };
        let (code, message) =
            db_error(&error).unwrap_or_else(|| panic!("{sql}: not a server error: {error}"));
        assert_eq!(code, "42501", "{sql}: {message}");
        let lower = message.to_lowercase();
        assert!(
            lower.contains("binary") && lower.contains("mask"),
            "{sql}: {message}"
        );
        assert_eq!(
            bob.query_one("select 41 + 1", &[]).await?.get::<_, i32>(0),
            42
        );
    }
    // psql: the error, then the next command in the same session runs.
    let (_, out, err) = psql(
        &conninfo,
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "copy customers to stdout with (format binary)",
            "-c",
            "select 'still here'",
        ],
    )
    .await?;
    assert!(err.contains("42501"), "{err}");
    let lower = err.to_lowercase();
    assert!(lower.contains("binary") && lower.contains("mask"), "{err}");
    assert!(!out.contains("PGCOPY"), "binary COPY data reached psql");
    assert_eq!(out.trim(), "still here");
    m.assert_no_cleartext("psql binary COPY", &format!("{out}\n{err}"));
    m.assert_log_clean();
    Ok(())
}

/// Wait for the next notice or notification.
async fn next_message(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
) -> anyhow::Result<AsyncMessage> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no notice or notification within 10 s"))?
        .ok_or_else(|| anyhow::anyhow!("connection closed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_notices_and_notifications_are_masked() -> anyhow::Result<()> {
    let m = Masked::start(|_| {}).await?;
    let mut seen = String::new();

    // A writer copies customer 7's SSN into a new row: the unique index
    // refuses it, and PostgreSQL's DETAIL would quote the key.
    let carol_token = m.token("carol").await?;
    let carol = m.env.client(&carol_token).await?;
    let duplicate = "insert into customers (full_name, email, ssn, card_number, phone) \
                     select full_name, 'dup-' || email, ssn, card_number, phone from customers where id = 7";
    let error = carol.execute(duplicate, &[]).await.unwrap_err();
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "23505", "{db:?}");
    let detail = db.detail().unwrap_or_default().to_string();
    seen.push_str(&format!("{} {detail}\n", db.message()));
    assert!(!detail.contains(&m.customer(7).ssn), "{detail}");
    assert!(
        detail.contains("already exists") && detail.contains("(ssn)"),
        "the rest of the DETAIL stays: {detail}"
    );
    assert_eq!(carol.query_one("select 1", &[]).await?.get::<_, i32>(0), 1);
    // The same through psql.
    let (ok, _, err) = psql(
        &m.env.gateway.conninfo(CONNECTION, "carol", &carol_token),
        &["-c", duplicate],
    )
    .await?;
    assert!(!ok);
    assert!(
        err.contains("duplicate key value") && err.contains("DETAIL:"),
        "{err}"
    );
    seen.push_str(&err);

    // A reader provokes errors that quote the value.
    let bob = m.client_as("bob").await?;
    for (sql, expected) in [
        (
            "select ssn::int from customers where id = 2",
            format!("invalid input syntax for type integer: \"{REDACTED}\""),
        ),
        (
            "select card_number::int from customers where id = 3",
            format!("value \"{REDACTED}\" is out of range for type integer"),
        ),
    ] {
        let error = bob.query(sql, &[]).await.unwrap_err();
        let (code, message) = db_error(&error).expect("a server error");
        seen.push_str(&message);
        assert!(code.starts_with("22"), "{sql}: {code} {message}");
        assert_eq!(message, expected, "{sql}");
        let error = bob.simple_query(sql).await.unwrap_err();
        assert_eq!(
            db_error(&error).expect("a server error").1,
            expected,
            "{sql}"
        );
    }

    // An admin's notices, exceptions and notifications.
    let alice_token = m.token("alice").await?;
    let (alice, mut messages) =
        connect_with_messages(&m.env.gateway, CONNECTION, "alice", &alice_token).await?;
    alice
        .batch_execute(
            "do $$ begin raise notice 'x %', (select ssn from customers where id = 3) \
             using detail = (select 'card ' || card_number from customers where id = 4); end $$",
        )
        .await?;
    match next_message(&mut messages).await? {
        AsyncMessage::Notice(notice) => {
            seen.push_str(&format!("{} {:?}\n", notice.message(), notice.detail()));
            assert_eq!(notice.message(), format!("x {REDACTED}"));
            assert_eq!(notice.detail(), Some(format!("card {REDACTED}").as_str()));
        }
        other => panic!("expected a notice, got {other:?}"),
    }
    alice
        .batch_execute("do $$ begin raise notice 'badge EMP-004242 on file'; end $$")
        .await?;
    match next_message(&mut messages).await? {
        AsyncMessage::Notice(notice) => {
            assert_eq!(notice.message(), format!("badge {REDACTED} on file"));
        }
        other => panic!("expected a notice, got {other:?}"),
    }
    let error = alice
        .batch_execute(
            "do $$ begin raise exception 'boom %', (select ssn from customers where id = 6); end $$",
        )
        .await
        .unwrap_err();
    let (code, message) = db_error(&error).expect("a server error");
    seen.push_str(&message);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("P0001", format!("boom {REDACTED}").as_str())
    );

    alice.batch_execute("listen pii_events").await?;
    let notifier = m.env.client(&alice_token).await?;
    notifier
        .batch_execute(
            "select pg_notify('pii_events', \
             (select 'ssn ' || ssn || ' card ' || card_number from customers where id = 5))",
        )
        .await?;
    notifier
        .batch_execute("notify pii_events, 'plain payload'")
        .await?;
    let mut payloads = Vec::new();
    while payloads.len() < 2 {
        match next_message(&mut messages).await? {
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), "pii_events");
                payloads.push(n.payload().to_string());
            }
            other => panic!("expected a notification, got {other:?}"),
        }
    }
    seen.push_str(&payloads.join("\n"));
    assert_eq!(
        payloads,
        [
            format!("ssn {REDACTED} card {REDACTED}"),
            "plain payload".to_string()
        ]
    );

    // psql shows notices on stderr.
    let (ok, _, err) = psql(
        &m.env.gateway.conninfo(CONNECTION, "alice", &alice_token),
        &[
            "-c",
            "do $$ begin raise notice 'x %', (select ssn from customers where id = 8); end $$",
        ],
    )
    .await?;
    assert!(ok, "{err}");
    assert!(err.contains(&format!("NOTICE:  x {REDACTED}")), "{err}");
    seen.push_str(&err);

    m.assert_no_cleartext("errors, notices and notifications", &seen);
    m.assert_log_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exemption_needs_the_exempt_group_itself_to_hold_a_role_on_the_connection()
-> anyhow::Result<()> {
    // `reports` is the same database under the same policy. `pii-readers`
    // holds a role on `reports` only; dana reaches `billing` via `analysts`.
    let m = Masked::start(|spec| {
        let mut reports: ConnectionSpec = spec.connections[0].clone();
        reports.name = "reports".into();
        spec.connections.push(reports);
        spec.connection_settings
            .push(("reports".into(), MASKING.into()));
        spec.roles.push(RoleSpec::new(
            "reports-analysts",
            "analysts",
            "reports",
            "read",
        ));
        spec.roles.push(RoleSpec::new(
            "pii-readers",
            "pii-readers",
            "reports",
            "read",
        ));
    })
    .await?;
    let direct = m.env.direct().await?;
    let (dana_token, erin_token, bob_token) = (
        m.token("dana").await?,
        m.token("erin").await?,
        m.token("bob").await?,
    );
    let sql = "select ssn, card_number, email, phone from customers where id <= 3 order by id";
    let clear: Rows = m.customers[..3]
        .iter()
        .map(|c| row(&[&c.ssn, &c.card, &c.email, &c.phone]))
        .collect();
    let mut seen = String::new();

    // Masked for dana on billing (as for bob), and for bob on reports.
    let bob_billing = connect(&m.env.gateway, CONNECTION, "bob", &bob_token).await?;
    let masked_rows = fetch(&bob_billing, Format::Text, sql).await?;
    for (r, c) in masked_rows.iter().zip(&m.customers) {
        assert_eq!(r[0], Some(partial(&c.ssn, 4)));
        assert!(is_token(r[2].as_deref().unwrap()));
    }
    for (who, connection, token) in [
        ("dana", CONNECTION, &dana_token),
        ("bob", "reports", &bob_token),
    ] {
        let client = connect(&m.env.gateway, connection, who, token).await?;
        for format in [Format::Text, Format::Binary] {
            let rows = fetch(&client, format, sql).await?;
            seen.push_str(&flatten(&rows));
            assert_eq!(rows, masked_rows, "{who} on {connection}, {format:?}");
        }
        let r = client
            .query_one("select balance from accounts where id = 1", &[])
            .await?;
        assert_eq!(r.get::<_, Option<i64>>(0), None, "{who} on {connection}");
        let error = client
            .query("select ssn::int from customers where id = 2", &[])
            .await
            .unwrap_err();
        seen.push_str(&db_error(&error).unwrap().1);
        let (ok, out, err) = psql(
            &m.env.gateway.conninfo(connection, who, token),
            &[
                "-c",
                "copy (select ssn, card_number from customers) to stdout",
            ],
        )
        .await?;
        assert!(ok, "{err}");
        seen.push_str(&out);
    }

    // Cleartext for dana and erin on reports, where pii-readers holds a role:
    // results in both formats, non-text columns, COPY and errors.
    let balance: i64 = direct
        .query_one("select balance from accounts where id = 1", &[])
        .await?
        .get(0);
    let direct_copy: Vec<bytes::Bytes> = direct
        .copy_out("copy (select ssn, card_number, email from customers order by id) to stdout")
        .await?
        .try_collect()
        .await?;
    for (who, token) in [("dana", &dana_token), ("erin", &erin_token)] {
        let client = connect(&m.env.gateway, "reports", who, token).await?;
        for format in [Format::Text, Format::Binary] {
            assert_eq!(
                fetch(&client, format, sql).await?,
                clear,
                "{who}, {format:?}"
            );
        }
        let r = client
            .query_one("select balance from accounts where id = 1", &[])
            .await?;
        assert_eq!(r.get::<_, Option<i64>>(0), Some(balance), "{who}");
        let copy: Vec<bytes::Bytes> = client
            .copy_out("copy (select ssn, card_number, email from customers order by id) to stdout")
            .await?
            .try_collect()
            .await?;
        assert!(
            copy.concat() == direct_copy.concat(),
            "{who}: COPY differs from direct"
        );
        let error = client
            .query("select ssn::int from customers where id = 2", &[])
            .await
            .unwrap_err();
        let message = db_error(&error).unwrap().1;
        assert!(message.contains(&m.customer(2).ssn), "{who}: {message}");
    }
    let (ok, out, err) = psql(
        &m.env.gateway.conninfo("reports", "erin", &erin_token),
        &["-c", "select ssn from customers where id = 4"],
    )
    .await?;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), m.customer(4).ssn);

    // erin has no role on billing at all.
    let (ok, _, err) = psql(
        &m.env.gateway.conninfo(CONNECTION, "erin", &erin_token),
        &["-c", "select 1"],
    )
    .await?;
    assert!(!ok);
    assert!(
        err.contains("holds no role on connection \"billing\""),
        "{err}"
    );

    m.assert_no_cleartext("non-exempt sessions", &seen);
    // Cleartext went to exempt clients, never to the log.
    m.assert_log_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_redefined_behind_the_nodes_back_is_masked_by_its_new_source() -> anyhow::Result<()>
{
    // `create or replace view` keeps the view's OID and column names and may
    // point a column at another source. A migration run directly on the
    // database (or through another node) is DDL this node never sees, so
    // whatever it remembers about the view must expire.
    let m = Masked::start(|_| {}).await?;
    let direct = m.env.direct().await?;
    direct
        .batch_execute(
            "create view public.w as select id, full_name as contact from public.customers",
        )
        .await?;
    let bob = m.client_as("bob").await?;
    let c1 = m.customer(1);
    let sql = "select contact from w where id = 1";
    assert_eq!(
        fetch(&bob, Format::Text, sql).await?,
        vec![row(&[&c1.full_name])]
    );
    let token = fetch(
        &bob,
        Format::Text,
        "select email from customers where id = 1",
    )
    .await?;
    assert!(is_token(token[0][0].as_deref().unwrap()));

    direct
        .batch_execute(
            "create or replace view public.w as select id, email as contact from public.customers",
        )
        .await?;
    // DDL the node does not see is picked up once what it learnt about the
    // view is older than `node.masking_catalog_ttl_ms` (1 s by default).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // The same session, and a new one.
    let bob2 = m.client_as("bob").await?;
    for (session, client) in [("same session", &bob), ("new session", &bob2)] {
        for format in [Format::Text, Format::Binary] {
            let rows = fetch(client, format, sql).await?;
            assert_ne!(
                rows[0][0].as_deref(),
                Some(c1.email.as_str()),
                "{session}, {format:?}: w.contact now reads customers.email, which has a hash rule"
            );
            assert_eq!(rows, token, "{session}, {format:?}");
        }
    }
    m.assert_log_clean();
    Ok(())
}

/// The log line per masked statement is opt-in (`juris::audit=debug`; test
/// nodes run with it, see `juris_testkit::gateway`); the audit chain always
/// gets the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_logs_one_masking_event_per_statement_without_cleartext() -> anyhow::Result<()> {
    let m = Masked::start(|_| {}).await?;
    let bob = m.client_as("bob").await?;

    // One statement, seven SSNs masked by the column rule.
    let rows = fetch(
        &bob,
        Format::Text,
        "select ssn from customers order by id limit 7",
    )
    .await?;
    assert_eq!(rows.len(), 7);
    let column = "public.customers.ssn";
    let line = wait_for_log_line(&m.env, |l| {
        l.contains("mask") && l.contains(column) && l.contains("partial") && counts(l).contains(&7)
    })
    .await;
    let log = m.env.gateway.log();
    assert!(
        line.is_some(),
        "no masking event naming {column}, partial and count 7:\n{log}"
    );
    let per_row: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(column) && counts(l).iter().any(|n| (1..7).contains(n)))
        .collect();
    assert!(
        per_row.is_empty(),
        "events per value, not per statement: {per_row:?}"
    );

    // One statement, three SSNs found by the detector in a computed column.
    let rows = fetch(
        &bob,
        Format::Binary,
        "select 'x ' || ssn from customers order by id limit 3",
    )
    .await?;
    assert_eq!(rows, vec![row(&[&format!("x {REDACTED}")]); 3]);
    let line = wait_for_log_line(&m.env, |l| {
        l.contains("mask")
            && l.contains("ssn")
            && !l.contains(column)
            && l.contains("redact")
            && counts(l).contains(&3)
    })
    .await;
    assert!(
        line.is_some(),
        "no masking event naming detector ssn, redact and count 3:\n{}",
        m.env.gateway.log()
    );

    // A COPY and an error also go through; the log still holds no cleartext.
    let stream = bob.copy_out("copy customers to stdout").await?;
    let _: Vec<bytes::Bytes> = stream.try_collect().await?;
    let _ = bob
        .query("select ssn::int from customers where id = 9", &[])
        .await
        .unwrap_err();
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.assert_log_clean();
    Ok(())
}

/// Run `juris check` on a deployment; returns (success, stdout + stderr).
fn juris_check(file: &std::path::Path, env: &[(&str, &str)]) -> anyhow::Result<(bool, String)> {
    let output = std::process::Command::new(juris_binary()?)
        .arg("check")
        .arg(file)
        .envs(env.iter().copied())
        .output()?;
    Ok((
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn juris_check_names_the_file_and_key_of_bad_masking_config() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, masking: &str, key: Option<&str>, region: &[&str]| {
        let mut spec = GatewaySpec::new("https://idp.example.test", AUDIENCE);
        spec.connections.push(ConnectionSpec {
            name: CONNECTION.into(),
            host: "127.0.0.1".into(),
            port: 5432,
            database: "postgres".into(),
            user: "postgres".into(),
            password: Some("not-used".into()),
            tls_ca_pem: None,
            settings: Vec::new(),
        });
        spec.roles = common::standard_roles();
        spec.mask_hash_key = key.map(str::to_string);
        spec.region_settings = region.iter().map(|s| s.to_string()).collect();
        spec.connection_settings
            .push((CONNECTION.into(), masking.into()));
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub)?;
        spec.write_config(&sub)
    };

    // The policy the other tests run with is valid, with the key in a file or
    // in the environment.
    let file = write("good", MASKING, Some(MASK_KEY), &[])?;
    let (ok, out) = juris_check(&file, &[])?;
    assert!(ok, "{out}");
    let file = write(
        "good-env",
        MASKING,
        None,
        &["mask_hash_key = { env = \"JURIS_E2E_MASK_KEY\" }"],
    )?;
    let (ok, out) = juris_check(&file, &[("JURIS_E2E_MASK_KEY", MASK_KEY)])?;
    assert!(ok, "{out}");

    // An unknown detector name.
    let file = write(
        "unknown-detector",
        "[connection.masking]\n[[connection.masking.value]]\ndetector = \"passport\"\nstrategy = \"redact\"\n",
        Some(MASK_KEY),
        &[],
    )?;
    let (ok, out) = juris_check(&file, &[])?;
    assert!(!ok, "unknown detector accepted: {out}");
    assert!(out.contains(&file.display().to_string()), "{out}");
    assert!(
        out.contains("connection[0].masking.value[0].detector"),
        "{out}"
    );

    // The hash strategy without a region key.
    let file = write(
        "hash-without-key",
        "[connection.masking]\n[[connection.masking.column]]\nname = \"public.customers.email\"\nstrategy = \"hash\"\n",
        None,
        &[],
    )?;
    let (ok, out) = juris_check(&file, &[])?;
    assert!(!ok, "hash without a region key accepted: {out}");
    assert!(out.contains(&file.display().to_string()), "{out}");
    assert!(out.contains("mask_hash_key"), "{out}");

    // A custom detector whose regex does not compile.
    let file = write(
        "bad-regex",
        "[connection.masking]\n[[connection.masking.value]]\ndetector = \"badge\"\nstrategy = \"redact\"\n\
         [[connection.masking.detector]]\nname = \"badge\"\nregex = \"EMP-[0-9\"\n",
        Some(MASK_KEY),
        &[],
    )?;
    let (ok, out) = juris_check(&file, &[])?;
    assert!(!ok, "invalid regex accepted: {out}");
    assert!(out.contains(&file.display().to_string()), "{out}");
    assert!(
        out.contains("connection[0].masking.detector[0].regex"),
        "{out}"
    );
    Ok(())
}

#[test]
fn helpers_compute_the_specified_forms() {
    assert_eq!(partial("123-45-6789", 4), "***-**-6789");
    assert_eq!(partial("4242424242424242", 4), "************4242");
    assert_eq!(partial("hello-world", 4), "*****-*orld");
    assert!(is_token("tok_0123456789abcdef0123"));
    assert!(!is_token("tok_0123456789ABCDEF0123"));
    assert!(!is_token("tok_0123456789abcdef012"));
    assert_eq!(counts("masked column=x count=7 strategy=partial"), [7]);
    assert_eq!(counts("{\"masked_count\":3}"), [3]);
    assert!(counts("account=1").is_empty());
    assert_eq!(
        csv_fields(r#"1,"a ""b"", c",,"""#),
        [
            ("1".to_string(), false),
            ("a \"b\", c".to_string(), true),
            (String::new(), false),
            (String::new(), true)
        ]
    );
    assert_eq!(
        counts("actions=public.customers.ssn column rule partial×7; x ssn redact×12"),
        [7, 12]
    );
}
