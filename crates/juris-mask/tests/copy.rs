//! COPY rows in text and CSV format: escapes, quotes, embedded delimiters
//! and newlines, nulls; unchanged rows are left alone.

mod common;

use common::rule;
use juris_mask::{
    ColumnRule, ColumnRuleId, CopyError, CopyFormat, Findings, Masker, MaskingPolicy, StrategyName,
    mask_row,
};

fn masker() -> Masker {
    Masker::compile(
        &MaskingPolicy {
            columns: vec![
                ColumnRule {
                    name: None,
                    pattern: Some("secret".into()),
                    strategy: StrategyName::Redact,
                    keep_last: None,
                },
                ColumnRule {
                    name: None,
                    pattern: Some("gone".into()),
                    strategy: StrategyName::Null,
                    keep_last: None,
                },
            ],
            values: vec![
                rule("ssn", StrategyName::Partial),
                rule("email", StrategyName::Redact),
                rule("card", StrategyName::Null),
            ],
            ..Default::default()
        },
        None,
    )
    .unwrap()
}

const SECRET: Option<ColumnRuleId> = Some(ColumnRuleId(0));
const GONE: Option<ColumnRuleId> = Some(ColumnRuleId(1));

fn run(format: &CopyFormat, columns: &[Option<ColumnRuleId>], row: &[u8]) -> Option<String> {
    let m = masker();
    let mut out = b"untouched".to_vec();
    let mut f = Findings::new();
    let changed = mask_row(&m, format, columns, row, &mut out, &mut f).unwrap();
    if changed {
        Some(String::from_utf8(out).unwrap())
    } else {
        assert_eq!(out, b"untouched", "out must be left alone");
        None
    }
}

#[test]
fn text_unchanged_rows_are_untouched() {
    let f = CopyFormat::text();
    for row in [
        &b"1\tJane Doe\t\\N\t2024-01-15\n"[..],
        b"a\\tb\tc\\\\d\\nline\n",
        b"\n",
        b"",
        b"\\N\n",
    ] {
        assert_eq!(run(&f, &[], row), None, "{row:?}");
    }
}

#[test]
fn text_value_rules_and_escapes() {
    let f = CopyFormat::text();
    assert_eq!(
        run(&f, &[], b"1\tssn 123-45-6789\t\\N\tok\n").as_deref(),
        Some("1\tssn ***-**-6789\t\\N\tok\n")
    );
    // Escapes are decoded before scanning: `\055` is `-`, the tab inside the
    // value is `\t`, and the rewritten value is escaped again.
    assert_eq!(
        run(&f, &[], b"x\\ty 123\\05545-6789\\\\z\tb\n").as_deref(),
        Some("x\\ty ***-**-6789\\\\z\tb\n")
    );
    // A card under a null rule: the field becomes the null marker.
    assert_eq!(
        run(&f, &[], b"7\t4111 1111 1111 1111\tjane@example.com\n").as_deref(),
        Some("7\t\\N\t[REDACTED]\n")
    );
}

#[test]
fn text_column_rules() {
    let f = CopyFormat::text();
    assert_eq!(
        run(&f, &[None, SECRET, GONE], b"1\ttop\\tsecret\tx\tfree\n").as_deref(),
        Some("1\t[REDACTED]\t\\N\tfree\n")
    );
    // A null stays null under any rule.
    assert_eq!(run(&f, &[SECRET, GONE], b"\\N\t\\N\n"), None);
    // Custom delimiter and null string.
    let f = CopyFormat {
        delimiter: b'|',
        null: b"NULL".to_vec(),
        ..CopyFormat::text()
    };
    assert_eq!(
        run(&f, &[None, SECRET], b"a\\|b|NULL|x\n"),
        None,
        "a null field is never masked and field 2 has no rule"
    );
    assert_eq!(
        run(&f, &[None, SECRET], b"a\\|b|c\\|d|NULL\n").as_deref(),
        Some("a\\|b|[REDACTED]|NULL\n")
    );
}

#[test]
fn csv_quotes_newlines_and_nulls() {
    let f = CopyFormat::csv();
    for row in [
        &b"1,\"Doe, Jane\",,\"\"\n"[..],
        b"2,\"multi\nline \"\"quoted\"\"\",x\n",
    ] {
        assert_eq!(run(&f, &[], row), None);
    }
    assert_eq!(
        run(&f, &[], b"1,\"ssn: 123-45-6789, \"\"x\"\"\nnext\",,\n").as_deref(),
        Some("1,\"ssn: ***-**-6789, \"\"x\"\"\nnext\",,\n")
    );
    assert_eq!(
        run(
            &f,
            &[None, None, SECRET, GONE],
            b"1,jane@example.com,\"\",s\n"
        )
        .as_deref(),
        Some("1,\"[REDACTED]\",\"[REDACTED]\",\n"),
        "an empty quoted string is a value; null rule writes the bare null marker"
    );
    assert_eq!(
        run(&f, &[None, SECRET], b"1,,x\n"),
        None,
        "unquoted empty is NULL in CSV"
    );
}

#[test]
fn csv_custom_escape_and_several_rows() {
    let f = CopyFormat {
        escape: b'\\',
        delimiter: b';',
        ..CopyFormat::csv()
    };
    assert_eq!(
        run(&f, &[], b"\"a\\\"b 123-45-6789\";x\n\"c\";123-45-6789\n").as_deref(),
        Some("\"a\\\"b ***-**-6789\";x\n\"c\";\"***-**-6789\"\n")
    );
}

#[test]
fn malformed_rows_are_errors_without_data() {
    let m = masker();
    let mut out = Vec::new();
    let mut f = Findings::new();
    let csv = CopyFormat::csv();
    let text = CopyFormat::text();
    let cases: [(&CopyFormat, &[u8], CopyError); 3] = [
        (&csv, b"1,\"123-45-6789\n", CopyError::UnterminatedQuote(2)),
        (&csv, b"\"a\"b,c\n", CopyError::DataAfterQuote(3)),
        (&text, b"a\tb\\\n", CopyError::TrailingBackslash),
    ];
    for (format, row, want) in cases {
        let err = mask_row(&m, format, &[], row, &mut out, &mut f).unwrap_err();
        assert_eq!(err, want);
        assert!(!err.to_string().contains("123"));
    }
}
