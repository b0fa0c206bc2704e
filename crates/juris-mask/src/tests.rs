//! Masker-level tests: compilation problems, column rules, strategies on
//! findings, free text.

use super::*;

const KEY: &[u8] = b"test-hash-key";

fn value_rule(detector: &str, strategy: StrategyName, keep_last: Option<usize>) -> ValueRule {
    ValueRule {
        detector: detector.into(),
        strategy,
        keep_last,
    }
}

fn column(name: Option<&str>, pattern: Option<&str>, strategy: StrategyName) -> ColumnRule {
    ColumnRule {
        name: name.map(Into::into),
        pattern: pattern.map(Into::into),
        strategy,
        keep_last: None,
    }
}

fn masker(values: Vec<ValueRule>) -> Masker {
    Masker::compile(
        &MaskingPolicy {
            values,
            ..Default::default()
        },
        Some(KEY),
    )
    .unwrap()
}

fn mask(m: &Masker, v: &str) -> (Outcome, String) {
    let mut out = b"junk".to_vec();
    let mut f = Findings::new();
    let o = m.mask_value(v.as_bytes(), &mut out, &mut f);
    (o, String::from_utf8(out).unwrap())
}

fn problems(policy: &MaskingPolicy, key: Option<&[u8]>) -> Vec<String> {
    match Masker::compile(policy, key) {
        Ok(_) => Vec::new(),
        Err(MaskError::InvalidPolicy(p)) => p.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn compile_reports_every_problem() {
    let policy = MaskingPolicy {
        exempt_groups: vec![],
        columns: vec![
            column(None, None, StrategyName::Redact),
            column(Some("a.b.c"), Some("*x*"), StrategyName::Redact),
            column(Some("users.ssn"), None, StrategyName::Redact),
            column(None, Some("[ab]"), StrategyName::Hash),
            ColumnRule {
                keep_last: Some(2),
                ..column(None, Some("ok"), StrategyName::Redact)
            },
            ColumnRule {
                keep_last: Some(0),
                ..column(None, Some("ok"), StrategyName::Partial)
            },
        ],
        values: vec![
            value_rule("credit_card", StrategyName::Redact, None),
            value_rule("card", StrategyName::Redact, None),
            value_rule("card", StrategyName::Null, None),
            value_rule("emp", StrategyName::Partial, Some(3)),
        ],
        detectors: vec![
            CustomDetector {
                name: "emp".into(),
                regex: Some("(".into()),
                words: None,
            },
            CustomDetector {
                name: "emp".into(),
                regex: None,
                words: None,
            },
            CustomDetector {
                name: "ssn".into(),
                regex: Some("x".into()),
                words: Some(vec!["y".into()]),
            },
            CustomDetector {
                name: "names".into(),
                regex: None,
                words: Some(vec![]),
            },
            CustomDetector {
                name: "more".into(),
                regex: None,
                words: Some(vec!["ok".into(), " ".into()]),
            },
        ],
    };
    let got = problems(&policy, None);
    let keys: Vec<&str> = got.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "detector[0].regex",
            "detector[1].name",
            "detector[1]",
            "detector[2].name",
            "detector[2]",
            "detector[3].words",
            "detector[4].words[1]",
            "value[0].detector",
            "value[2].detector",
            "column[0]",
            "column[1]",
            "column[2].name",
            "column[3].strategy",
            "column[3].pattern",
            "column[4].keep_last",
            "column[5].keep_last",
        ],
        "{got:#?}"
    );
    assert!(
        got[7].contains("unknown detector `credit_card`"),
        "{}",
        got[7]
    );
    assert!(got[7].contains("card, ssn"), "{}", got[7]);
    let err = Masker::compile(&policy, None).unwrap_err().to_string();
    assert!(
        err.starts_with("invalid masking policy: detector[0].regex: "),
        "{err}"
    );
}

#[test]
fn hash_needs_a_key_only_when_used() {
    let policy = MaskingPolicy {
        values: vec![value_rule("email", StrategyName::Hash, None)],
        ..Default::default()
    };
    assert_eq!(problems(&policy, None).len(), 1);
    assert!(problems(&policy, Some(KEY)).is_empty());
    let policy = MaskingPolicy {
        values: vec![value_rule("email", StrategyName::Redact, None)],
        ..Default::default()
    };
    assert!(problems(&policy, None).is_empty());
}

#[test]
fn empty_policy_is_empty() {
    let m = Masker::compile(&MaskingPolicy::default(), None).unwrap();
    assert!(m.is_empty());
    assert!(!m.has_value_rules());
    let (o, out) = mask(&m, "4111111111111111");
    assert_eq!((o, out.as_str()), (Outcome::Unchanged, "junk"));
}

#[test]
fn column_rules_first_match_wins() {
    let policy = MaskingPolicy {
        exempt_groups: vec!["dba".into()],
        columns: vec![
            column(Some("public.users.SSN"), None, StrategyName::Null),
            column(None, Some("*ssn*"), StrategyName::Redact),
            ColumnRule {
                keep_last: Some(2),
                ..column(None, Some("phone"), StrategyName::Partial)
            },
            column(None, Some("email"), StrategyName::Hash),
        ],
        ..Default::default()
    };
    let m = Masker::compile(&policy, Some(KEY)).unwrap();
    assert!(!m.is_empty());
    assert!(m.has_column_rules() && !m.has_value_rules());
    assert_eq!(m.exempt_groups(), ["dba"]);
    let src = |column| {
        Some(SourceColumn {
            schema: "public",
            table: "users",
            column,
        })
    };
    assert_eq!(m.column_rule(src("ssn"), "ssn"), Some(ColumnRuleId(0)));
    assert_eq!(
        m.column_rule(src("customer_ssn"), "x"),
        Some(ColumnRuleId(1))
    );
    assert_eq!(m.column_rule(None, "SSN"), Some(ColumnRuleId(1)));
    assert_eq!(m.column_rule(src("a"), "Phone"), Some(ColumnRuleId(2)));
    assert_eq!(m.column_rule(src("name"), "name"), None);
    assert_eq!(m.column_label(ColumnRuleId(0)), "public.users.SSN");
    assert_eq!(
        m.column_strategy(ColumnRuleId(2)),
        Strategy::Partial { keep_last: 2 }
    );
    assert_eq!(m.column_strategy(ColumnRuleId(99)), Strategy::Redact);
    assert_eq!(m.column_label(ColumnRuleId(99)), "");

    let mut out = Vec::new();
    assert_eq!(m.mask_whole(ColumnRuleId(0), b"x", &mut out), Outcome::Null);
    assert_eq!(
        m.mask_whole(ColumnRuleId(1), b"123", &mut out),
        Outcome::Rewritten
    );
    assert_eq!(out, b"[REDACTED]");
    m.mask_whole(ColumnRuleId(2), b"+1 415 555 0132", &mut out);
    assert_eq!(out, b"+* *** *** **32");
    m.mask_whole(ColumnRuleId(3), b"a@b.io", &mut out);
    let first = out.clone();
    m.mask_whole(ColumnRuleId(3), b"a@b.io", &mut out);
    assert_eq!(out, first);
    assert!(out.starts_with(b"tok_") && out.len() == 24);
}

#[test]
fn value_rules_strategies() {
    let m = masker(vec![
        value_rule("card", StrategyName::Partial, None),
        value_rule("ssn", StrategyName::Redact, None),
        value_rule("email", StrategyName::Hash, None),
    ]);
    assert!(m.has_value_rules());
    assert_eq!(
        mask(&m, "card 4111 1111 1111 1111, ssn 123-45-6789"),
        (
            Outcome::Rewritten,
            "card **** **** **** 1111, ssn [REDACTED]".into()
        )
    );
    let (o, out) = mask(&m, "mail jane@example.com");
    assert_eq!(o, Outcome::Rewritten);
    assert!(out.starts_with("mail tok_") && out.len() == 5 + 24, "{out}");
    let (o, out) = mask(&m, "nothing here 2024-01-15");
    assert_eq!((o, out.as_str()), (Outcome::Unchanged, "junk"));
}

#[test]
fn null_value_rule_nulls_the_value_but_redacts_text() {
    let m = masker(vec![
        value_rule("ssn", StrategyName::Null, None),
        value_rule("email", StrategyName::Partial, Some(3)),
    ]);
    let mut f = Findings::new();
    let mut out = Vec::new();
    assert_eq!(
        m.mask_value(b"a@b.io 123-45-6789", &mut out, &mut f),
        Outcome::Null
    );
    assert_eq!(f.total(), 2);
    let mut f = Findings::new();
    let text = m.mask_text("duplicate key (ssn)=(123-45-6789) for a@b.io", &mut f);
    assert_eq!(text, "duplicate key (ssn)=([REDACTED]) for *@b.io");
    let got: Vec<_> = f
        .iter()
        .map(|x| (m.detector_name(x.detector), x.strategy))
        .collect();
    assert_eq!(
        got,
        [
            ("ssn", Strategy::Redact),
            ("email", Strategy::Partial { keep_last: 3 })
        ]
    );
    assert!(matches!(
        m.mask_text("clean", &mut f),
        Cow::Borrowed("clean")
    ));
}

#[test]
fn custom_detectors_and_merging() {
    let policy = MaskingPolicy {
        values: vec![
            value_rule("employee_id", StrategyName::Partial, Some(2)),
            value_rule("codenames", StrategyName::Redact, None),
            value_rule("ssn", StrategyName::Partial, None),
        ],
        detectors: vec![
            CustomDetector {
                name: "employee_id".into(),
                regex: Some(r"EMP-\d{3}-\d{2}-\d{4}".into()),
                words: None,
            },
            CustomDetector {
                name: "codenames".into(),
                regex: None,
                words: Some(vec!["Bluebird".into(), "red fox".into()]),
            },
        ],
        ..Default::default()
    };
    let m = Masker::compile(&policy, None).unwrap();
    assert_eq!(m.detector_name(DetectorId(9)), "employee_id");
    assert_eq!(m.detector_name(DetectorId(10)), "codenames");
    assert_eq!(m.detector_name(DetectorId(500)), "unknown");
    // The custom span contains an SSN-shaped run: one merged span.
    let (_, out) = mask(
        &m,
        "EMP-123-45-6789 met BLUEBIRD and the Red Fox, not bluebirds",
    );
    assert_eq!(
        out,
        "***-***-**-**89 met [REDACTED] and the [REDACTED], not bluebirds"
    );
    let spans = m.scan(b"x EMP-123-45-6789 123-45-6789");
    assert_eq!(
        spans,
        [
            Span {
                start: 2,
                end: 17,
                detector: DetectorId(9)
            },
            Span {
                start: 18,
                end: 29,
                detector: DetectorId(1)
            }
        ]
    );
}

#[test]
fn overlap_takes_the_strongest_strategy() {
    let policy = MaskingPolicy {
        values: vec![
            value_rule("ssn", StrategyName::Partial, None),
            value_rule("label", StrategyName::Redact, None),
        ],
        detectors: vec![CustomDetector {
            name: "label".into(),
            regex: Some(r"ssn \d{3}".into()),
            words: None,
        }],
        ..Default::default()
    };
    let m = Masker::compile(&policy, None).unwrap();
    assert_eq!(mask(&m, "ssn 123-45-6789!").1, "[REDACTED]!");
}

#[test]
fn custom_regex_never_splits_characters() {
    let policy = MaskingPolicy {
        values: vec![value_rule("byte", StrategyName::Redact, None)],
        detectors: vec![CustomDetector {
            name: "byte".into(),
            regex: Some(r"(?-u:\xA9)".into()),
            words: None,
        }],
        ..Default::default()
    };
    let m = Masker::compile(&policy, None).unwrap();
    assert_eq!(mask(&m, "a©b").1, "a[REDACTED]b");
}

#[test]
fn invalid_utf8_is_fine() {
    let m = masker(vec![value_rule("card", StrategyName::Partial, None)]);
    let mut out = Vec::new();
    let mut f = Findings::new();
    let o = m.mask_value(b"\xff4111111111111111\xfe", &mut out, &mut f);
    assert_eq!(o, Outcome::Rewritten);
    assert_eq!(out, b"\xff************1111\xfe");
}

#[test]
fn masker_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Masker>();
}

#[test]
fn policy_deserializes_from_toml() {
    let p: MaskingPolicy = toml::from_str(
        r#"
        exempt_groups = ["dba"]
        [[column]]
        pattern = "*ssn*"
        strategy = "null"
        [[value]]
        detector = "card"
        strategy = "partial"
        keep_last = 4
        [[detector]]
        name = "codenames"
        words = ["bluebird"]
        "#,
    )
    .unwrap();
    assert_eq!(p.columns[0].strategy, StrategyName::Null);
    assert_eq!(p.values[0].keep_last, Some(4));
    assert_eq!(
        p.detectors[0].words.as_deref(),
        Some(&["bluebird".to_string()][..])
    );
    let unknown = toml::from_str::<MaskingPolicy>(
        "[[value]]\ndetector = \"x\"\nstrategy = \"redact\"\nfoo = 1\n",
    );
    assert!(unknown.is_err());
}

/// Rendering in place against span by span, on random values and spans:
/// the same output whenever every span is `partial` and ASCII, and `out`
/// untouched otherwise.
#[test]
fn render_in_place_matches_render_pieces() {
    let mut next = scan::tests::splitmix(0x5e4d_e41a_0000_0001u64);
    let strategies = [
        StrategyName::Partial,
        StrategyName::Partial,
        StrategyName::Partial,
        StrategyName::Redact,
        StrategyName::Hash,
    ];
    let mut in_place = 0;
    for round in 0..2_000 {
        // A policy: every built-in, mostly `partial` with its own `keep_last`.
        let rules = Masker::builtin_detectors()
            .iter()
            .map(|d| {
                let s = if round % 2 == 0 {
                    StrategyName::Partial
                } else {
                    strategies[(next() % strategies.len() as u64) as usize]
                };
                let keep = (s == StrategyName::Partial).then(|| 1 + (next() % 6) as usize);
                value_rule(d, s, keep)
            })
            .collect();
        let m = masker(rules);
        for _ in 0..20 {
            let len = (next() % 90) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| match next() % 24 {
                    0 => 0xc3,
                    1 => 0xa9,
                    2 => 0xff,
                    _ => b"0123456789abcXYZ-. @_:"[(next() % 22) as usize],
                })
                .collect();
            // Sorted, disjoint, non-empty spans.
            let mut spans = Vec::new();
            let mut pos = 0;
            while pos < len && spans.len() < 4 {
                let start = pos + (next() % 12) as usize;
                let end = start + 1 + (next() % 30) as usize;
                if end > len {
                    break;
                }
                spans.push(RawSpan {
                    start,
                    end,
                    detector: (next() % 9) as u16,
                });
                pos = end;
            }
            let mut want = b"head".to_vec();
            m.render_pieces(&v, &spans, &mut want);
            let mut got = b"head".to_vec();
            if m.render_in_place(&v, &spans, &mut got) {
                in_place += 1;
                assert_eq!(got, want, "{v:?} {spans:?}");
            } else {
                assert_eq!(got, b"head", "{v:?} {spans:?}");
                let all_partial_ascii = spans.iter().all(|s| {
                    v[s.start..s.end].is_ascii()
                        && matches!(m.value_strategy(s.detector), Strategy::Partial { .. })
                });
                assert!(!all_partial_ascii, "{v:?} {spans:?}");
            }
        }
    }
    assert!(in_place > 10_000, "only {in_place} in place");
}
