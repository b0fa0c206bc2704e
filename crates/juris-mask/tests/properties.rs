//! Property tests: cards are always caught and never leak, invalid SSNs are
//! never flagged, nothing panics, UTF-8 stays UTF-8, hash and partial keep
//! their promises.

mod common;

use common::{KEY, all_builtins, mixed};
use juris_mask::{
    ColumnRule, CopyFormat, Findings, Masker, MaskingPolicy, Outcome, StrategyName, mask_row,
};
use proptest::prelude::*;

/// Issuer prefix and a length that issuer uses.
const ISSUERS: &[(&str, usize)] = &[
    ("4", 13),
    ("4", 16),
    ("4", 19),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("644", 16),
    ("649", 19),
    ("65", 16),
    ("3528", 16),
    ("3589", 19),
    ("300", 14),
    ("305", 16),
    ("36", 14),
    ("38", 16),
    ("62", 17),
    ("50", 13),
    ("56", 18),
    ("58", 19),
    ("6", 13),
];

/// Group sizes as printed on cards of each length.
fn groups(len: usize) -> &'static [usize] {
    match len {
        13 => &[4, 4, 5],
        14 => &[4, 6, 4],
        15 => &[4, 6, 5],
        16 => &[4, 4, 4, 4],
        17 => &[4, 4, 4, 5],
        18 => &[4, 4, 4, 6],
        _ => &[4, 4, 4, 4, 3],
    }
}

fn luhn_complete(mut digits: Vec<u8>) -> Vec<u8> {
    // Check digit for the payload: double every second digit from the right
    // of the final number, i.e. from the payload's last digit.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let mut x = u32::from(d);
            if k % 2 == 0 {
                x *= 2;
                if x > 9 {
                    x -= 9;
                }
            }
            x
        })
        .sum();
    digits.push(((10 - sum % 10) % 10) as u8);
    digits
}

fn card() -> impl Strategy<Value = String> {
    (0..ISSUERS.len(), prop::collection::vec(0u8..10, 19)).prop_map(|(k, random)| {
        let (prefix, len) = ISSUERS[k];
        let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
        digits.extend_from_slice(&random[..len - 1 - digits.len()]);
        luhn_complete(digits)
            .into_iter()
            .map(|d| char::from(b'0' + d))
            .collect()
    })
}

fn format_card(digits: &str, sep: Option<char>) -> String {
    let Some(sep) = sep else {
        return digits.to_string();
    };
    let mut out = String::new();
    let mut pos = 0;
    for (k, g) in groups(digits.len()).iter().enumerate() {
        if k > 0 {
            out.push(sep);
        }
        out.push_str(&digits[pos..pos + g]);
        pos += g;
    }
    out
}

/// Text around a finding: anything, joined by a plain separator.
fn surroundings() -> impl Strategy<Value = (String, String)> {
    let left = (
        "[a-zA-Z0-9 ,.;:!?é€-]{0,20}",
        prop::sample::select(vec![" ", "(", "\"", "=", ": ", "\t", ""]),
    );
    let right = (
        prop::sample::select(vec![" ", ")", "\"", ", ", ";", "\n", ""]),
        "[a-zA-Z0-9 ,.;:!?é€-]{0,20}",
    );
    (left, right).prop_map(|((l, ls), (rs, r))| {
        // An empty separator is only allowed at the very edge of the value.
        let l = if ls.is_empty() {
            String::new()
        } else {
            format!("{l}{ls}")
        };
        let r = if rs.is_empty() {
            String::new()
        } else {
            format!("{rs}{r}")
        };
        (l, r)
    })
}

fn mask_str(m: &Masker, v: &str) -> (Outcome, String) {
    let mut out = Vec::new();
    let mut f = Findings::new();
    let o = m.mask_value(v.as_bytes(), &mut out, &mut f);
    (o, String::from_utf8(out).expect("UTF-8 in, UTF-8 out"))
}

/// Fragments that exercise every detector and the COPY syntax, mixed with
/// random text and bytes.
fn messy_input() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop::sample::select(vec![
        "4111 1111 1111 1111",
        "4111111111111111",
        "123-45-6789",
        "123456789",
        "jane.doe@example.com",
        "@",
        "+1 (415) 555-0132",
        "415-555-0132",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "192.168.0.1",
        "2001:db8::1",
        "::",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        "eyJ",
        "AKIAIOSFODNN7EXAMPLE",
        "Bearer abcdefghijklmnopqrstuvwxyz",
        "EMP-12345",
        "bluebird",
        "red fox",
        "\\",
        "\\N",
        "\t",
        "\n",
        ",",
        "\"",
        "\"\"",
        "é",
        "€",
        "\u{1F600}",
    ]);
    prop::collection::vec(
        prop_oneof![
            4 => fragment.prop_map(|s| s.as_bytes().to_vec()),
            2 => "[ -~]{0,12}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_card_is_masked_and_never_leaks(
        digits in card(),
        sep in prop::sample::select(vec![None, Some(' '), Some('-')]),
        (left, right) in surroundings(),
        strategy in prop::sample::select(vec![StrategyName::Redact, StrategyName::Partial, StrategyName::Hash]),
    ) {
        let m = all_builtins(strategy);
        let card = format_card(&digits, sep);
        let value = format!("{left}{card}{right}");
        let (o, out) = mask_str(&m, &value);
        prop_assert_eq!(o, Outcome::Rewritten, "{:?} not masked", value);
        prop_assert!(!out.contains(&card), "{:?} -> {:?}", value, out);
        prop_assert!(!out.contains(&digits), "{:?} -> {:?}", value, out);
        let spans = m.scan(value.as_bytes());
        let start = left.len();
        prop_assert!(
            spans.iter().any(|s| s.start <= start && s.end >= start + card.len()),
            "{:?}: {:?}", value, spans
        );
    }

    #[test]
    fn invalid_ssns_are_not_flagged(
        kind in 0..3u8,
        a in 0u32..1000,
        g in 0u32..100,
        s in 0u32..10000,
        dashed: bool,
        (left, right) in surroundings(),
    ) {
        // Make the number invalid in one of the ways the SSA never issues.
        let (a, g, s) = match kind {
            0 => ([0, 666, 900 + a % 100][a as usize % 3], g, s),
            1 => (a, 0, s),
            _ => (a, g, 0),
        };
        let n = if dashed { format!("{a:03}-{g:02}-{s:04}") } else { format!("{a:03}{g:02}{s:04}") };
        let value = format!("{left}{n}{right}");
        let m = all_builtins(StrategyName::Redact);
        let ssn = juris_mask::DetectorId(1);
        prop_assert_eq!(m.detector_name(ssn), "ssn");
        let spans = m.scan(value.as_bytes());
        prop_assert!(
            spans.iter().all(|sp| sp.detector != ssn || value[sp.start..sp.end] != n),
            "{:?}: {:?}", value, spans
        );
    }

    #[test]
    fn nothing_panics_and_utf8_stays_utf8(input in messy_input()) {
        let m = mixed();
        let mut out = Vec::new();
        let mut f = Findings::new();
        let utf8 = std::str::from_utf8(&input).is_ok();
        if m.mask_value(&input, &mut out, &mut f) == Outcome::Rewritten && utf8 {
            prop_assert!(std::str::from_utf8(&out).is_ok(), "{:?} -> {:?}", input, out);
        }
        let text = String::from_utf8_lossy(&input);
        let masked = m.mask_text(&text, &mut f);
        prop_assert!(!masked.contains("EMP-12345"));
        let spans = m.scan(&input);
        for w in spans.windows(2) {
            prop_assert!(w[0].end <= w[1].start);
        }
        prop_assert!(spans.iter().all(|s| s.start < s.end && s.end <= input.len()));
        for format in [CopyFormat::text(), CopyFormat::csv()] {
            let mut row_out = Vec::new();
            let columns = [None, Some(juris_mask::ColumnRuleId(0)), None];
            if let Ok(true) = mask_row(&m, &format, &columns, &input, &mut row_out, &mut f)
                && utf8
            {
                prop_assert!(std::str::from_utf8(&row_out).is_ok());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..300)) {
        let m = mixed();
        let mut out = Vec::new();
        let mut f = Findings::new();
        m.mask_value(&input, &mut out, &mut f);
        m.mask_text(&String::from_utf8_lossy(&input), &mut f);
        m.scan(&input);
        for format in [CopyFormat::text(), CopyFormat::csv()] {
            let _ = mask_row(&m, &format, &[], &input, &mut out, &mut f);
        }
    }

    #[test]
    fn hash_is_deterministic_and_keyed(value in ".{1,40}", k1 in "[a-z]{8,16}", k2 in "[a-z]{8,16}") {
        prop_assume!(k1 != k2);
        let policy = MaskingPolicy {
            columns: vec![ColumnRule { name: None, pattern: Some("*".into()), strategy: StrategyName::Hash, keep_last: None }],
            ..Default::default()
        };
        let a = Masker::compile(&policy, Some(k1.as_bytes())).unwrap();
        let b = Masker::compile(&policy, Some(k2.as_bytes())).unwrap();
        let id = a.column_rule(None, "x").unwrap();
        let tok = |m: &Masker| { let mut o = Vec::new(); m.mask_whole(id, value.as_bytes(), &mut o); o };
        prop_assert_eq!(tok(&a), tok(&a));
        prop_assert_ne!(tok(&a), tok(&b));
    }

    #[test]
    fn partial_never_reveals_more_than_n(value in "\\PC{0,40}", n in 1usize..8) {
        let policy = MaskingPolicy {
            columns: vec![ColumnRule { name: None, pattern: Some("*".into()), strategy: StrategyName::Partial, keep_last: Some(n) }],
            ..Default::default()
        };
        let m = Masker::compile(&policy, Some(KEY)).unwrap();
        let mut out = Vec::new();
        m.mask_whole(m.column_rule(None, "x").unwrap(), value.as_bytes(), &mut out);
        let out = String::from_utf8(out).unwrap();
        let revealed = out.chars().filter(|c| !c.is_ascii() || c.is_ascii_alphanumeric()).count();
        prop_assert!(revealed <= n, "{:?} -> {:?}", value, out);
        prop_assert_eq!(out.chars().count(), value.chars().count());
        let alnum = value.chars().filter(|c| !c.is_ascii() || c.is_ascii_alphanumeric()).count();
        if alnum <= n {
            prop_assert_eq!(revealed, 0);
        }
    }
}
