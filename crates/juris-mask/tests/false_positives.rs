//! False-positive rates of the built-in detectors on a deterministic corpus
//! of PII-free values, with a bound per detector. The measured numbers are
//! quoted in the crate documentation ("False positives"); run with
//! `--nocapture` to see them.

mod common;

use common::{Rng, all_builtins};
use juris_mask::{Masker, StrategyName};

const WORDS: &[&str] = &[
    "the",
    "order",
    "shipped",
    "from",
    "warehouse",
    "customer",
    "requested",
    "refund",
    "because",
    "package",
    "arrived",
    "damaged",
    "please",
    "contact",
    "support",
    "team",
    "Berlin",
    "Springfield",
    "Maple",
    "Avenue",
    "delivery",
    "before",
    "Monday",
    "invoice",
    "blue",
    "large",
    "Bob",
    "Alice",
    "Jane",
    "Doe",
    "Smith",
    "about",
    "between",
    "table",
];

/// One PII-free value of shape `kind`.
fn value(r: &mut Rng, kind: u64) -> String {
    let y = 2000 + r.below(30);
    let mo = 1 + r.below(12);
    let d = 1 + r.below(28);
    let (h, mi, s) = (r.below(24), r.below(60), r.below(60));
    match kind {
        0 => match r.below(3) {
            0 => format!("ORD-{:08}", r.below(100_000_000)),
            1 => format!("SO{:07}", r.below(10_000_000)),
            _ => format!("order #{}", r.below(1_000_000)),
        },
        1 => match r.below(3) {
            0 => format!(
                "{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:06}+00",
                r.below(1_000_000)
            ),
            1 => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
            _ => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+05:30"),
        },
        2 => match r.below(3) {
            0 => format!("{y}-{mo:02}-{d:02}"),
            1 => format!("{d:02}/{mo:02}/{y}"),
            _ => format!("{y}.{mo:02}.{d:02}"),
        },
        3 => format!(
            "{}-{}-4{}-{}{}-{}",
            r.hex(8),
            r.hex(4),
            r.hex(3),
            r.pick(&["8", "9", "a", "b"]),
            r.hex(3),
            r.hex(12)
        ),
        4 => match r.below(4) {
            0 => format!("v{}.{}.{}", r.below(20), r.below(50), r.below(100)),
            1 => format!(
                "{}.{}.{}.{}",
                r.below(20),
                r.below(50),
                r.below(100),
                1000 + r.below(9000)
            ),
            2 => format!("release-{}.{}", r.below(10), r.below(30)),
            _ => format!(
                "PostgreSQL {}.{} on x86_64-pc-linux-gnu",
                10 + r.below(8),
                r.below(10)
            ),
        },
        5 => match r.below(4) {
            0 => format!(
                "${},{:03}.{:02}",
                1 + r.below(999),
                r.below(1000),
                r.below(100)
            ),
            1 => format!("€{}.{:02}", r.below(10_000), r.below(100)),
            2 => format!("{}.{:02}", r.below(100_000_000), r.below(100)),
            _ => format!("USD {}", r.below(1_000_000)),
        },
        6 => match r.below(3) {
            // Product codes shaped a bit like phone numbers.
            0 => format!(
                "PN-{}-{}-{:04}-{}",
                200 + r.below(800),
                200 + r.below(800),
                r.below(10_000),
                r.upper(1)
            ),
            1 => format!(
                "MDL{}-{:03}-{:04}",
                r.below(1000),
                r.below(1000),
                r.below(10_000)
            ),
            _ => format!(
                "part {:04}-{:03}-{:03}",
                r.below(10_000),
                r.below(1000),
                r.below(1000)
            ),
        },
        7 => match r.below(3) {
            0 => format!("SKU-{}{}-{:04}", r.upper(2), r.below(100), r.below(10_000)),
            1 => format!(
                "{}-{:05}-{}",
                r.upper(3),
                r.below(100_000),
                r.pick(&["S", "M", "L", "XL"])
            ),
            _ => format!("{}{:06}", r.upper(2), r.below(1_000_000)),
        },
        8 => match r.below(3) {
            0 => r.hex(64),
            1 => r.hex(32),
            _ => format!("sha256:{}", r.hex(64)),
        },
        9 => match r.below(3) {
            0 => format!("INV-{y}-{:06}", r.below(1_000_000)),
            1 => format!("INV/{y}/{:05}", r.below(100_000)),
            _ => format!("Invoice {:010}", r.below(10_000_000_000)),
        },
        10 => match r.below(4) {
            0 => format!("{:05}", r.below(100_000)),
            1 => format!("{:05}-{:04}", r.below(100_000), r.below(10_000)),
            2 => format!(
                "{}{} {}{}",
                r.upper(2),
                r.below(10),
                r.below(10),
                r.upper(2)
            ),
            _ => format!("D-{:05} Berlin", r.below(100_000)),
        },
        11 => {
            let lat = r.below(180_000_000) as f64 / 1e6 - 90.0;
            let lon = r.below(360_000_000) as f64 / 1e6 - 180.0;
            match r.below(2) {
                0 => format!("{lat:.6},{lon:.6}"),
                _ => format!("POINT({lon:.4} {lat:.4})"),
            }
        }
        12 => match r.below(2) {
            0 => r.hex(40),
            _ => format!("commit {}", r.hex(7)),
        },
        13 => match r.below(3) {
            0 => format!("{}.{}.{}", r.below(10), r.below(30), r.below(100)),
            1 => format!(
                "{}.{}.{}-rc.{}+build.{}",
                r.below(10),
                r.below(30),
                r.below(100),
                r.below(9),
                r.below(999)
            ),
            _ => format!("^{}.{}", r.below(10), r.below(30)),
        },
        14 => {
            // Prose.
            let n = 5 + r.below(20) as usize;
            let mut s: Vec<&str> = (0..n).map(|_| r.pick(WORDS)).collect();
            s[0] = r.pick(&["The", "Please", "Customer", "Our"]);
            format!("{}.", s.join(" "))
        }
        15 => format!(
            "{} {} {}, {} {:05}",
            1 + r.below(9999),
            r.pick(&["Maple", "Main", "Oak", "Elm"]),
            r.pick(&["St", "Avenue", "Road", "Blvd."]),
            r.pick(&["Springfield, IL", "Austin, TX", "Portland, OR"]),
            r.below(100_000)
        ),
        16 => match r.below(3) {
            0 => format!("{h:02}:{mi:02}"),
            1 => format!("{h:02}:{mi:02}:{s:02}.{:03}", r.below(1000)),
            _ => format!("{} days {h:02}:{mi:02}:{s:02}", r.below(400)),
        },
        17 => match r.below(3) {
            0 => format!("{}", r.below(100_000_000)),
            1 => format!("{}", 1_600_000_000 + r.below(200_000_000)),
            _ => format!("{}", 1_600_000_000_000 + r.below(200_000_000_000)),
        },
        18 => match r.below(2) {
            0 => format!("1Z{}{:010}", r.upper(6), r.below(10_000_000_000)),
            _ => format!("cus_{}", r.alnum(14)),
        },
        19 => match r.below(3) {
            0 => format!(
                "/var/lib/postgresql/{}/main/base/{}",
                12 + r.below(5),
                r.below(100_000)
            ),
            1 => format!(
                "https://shop.example.com/p/{}?ref={}",
                r.alnum(8),
                r.below(1000)
            ),
            _ => format!("s3://bucket-{}/{}/{}.parquet", r.below(100), y, r.hex(16)),
        },
        20 => (0..6).map(|_| r.hex(2)).collect::<Vec<_>>().join(":"),
        21 => match r.below(3) {
            0 => format!("{}.{}%", r.below(100), r.below(100)),
            1 => format!("{}.{}e{}", r.below(10), r.below(100_000), r.below(30)),
            _ => format!("{}", r.below(1_000_000_000) as f64 / 7.0),
        },
        22 => format!(
            "{},{:03},{:03},{:03}",
            1 + r.below(999),
            r.below(1000),
            r.below(1000),
            r.below(1000)
        ),
        _ => match r.below(3) {
            0 => format!("{}-{:02}-{y}", mo, d),
            1 => format!("Q{} {y}", 1 + r.below(4)),
            _ => format!("{} x {} cm", 10 + r.below(90), 10 + r.below(90)),
        },
    }
}

pub const KINDS: u64 = 24;
const PER_KIND: u64 = 500;

/// Largest accepted share of flagged values, per detector (a fraction).
const BOUNDS: &[(&str, f64)] = &[
    ("card", 0.001),
    ("ssn", 0.001),
    ("email", 0.001),
    ("phone", 0.005),
    ("iban", 0.001),
    ("ip", 0.005),
    ("jwt", 0.001),
    ("aws_key", 0.001),
    ("bearer", 0.001),
];

#[test]
fn false_positive_rates_are_bounded() {
    let m: Masker = all_builtins(StrategyName::Redact);
    let mut r = Rng(0x5eed_cafe);
    let mut flagged = vec![0u64; Masker::builtin_detectors().len()];
    let mut examples: Vec<Vec<String>> = vec![Vec::new(); flagged.len()];
    let mut total = 0u64;
    for kind in 0..KINDS {
        for _ in 0..PER_KIND {
            let v = value(&mut r, kind);
            total += 1;
            let mut seen = [false; 9];
            for s in m.scan(v.as_bytes()) {
                let d = usize::from(s.detector.0);
                if !seen[d] {
                    seen[d] = true;
                    flagged[d] += 1;
                    if examples[d].len() < 5 {
                        examples[d].push(v.clone());
                    }
                }
            }
        }
    }
    assert_eq!(total, KINDS * PER_KIND);
    let mut failures = Vec::new();
    println!("false positives over {total} PII-free values:");
    for (d, (name, bound)) in BOUNDS.iter().enumerate() {
        assert_eq!(Masker::builtin_detectors()[d], *name);
        let rate = flagged[d] as f64 / total as f64;
        println!(
            "  {name:8} {:5} ({:.3} %)  bound {:.1} %  e.g. {:?}",
            flagged[d],
            rate * 100.0,
            bound * 100.0,
            examples[d]
        );
        if rate > *bound {
            failures.push(format!("{name}: {rate} > {bound}: {:?}", examples[d]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn corpus_is_deterministic() {
    let mut a = Rng(1);
    let mut b = Rng(1);
    for kind in 0..KINDS {
        assert_eq!(value(&mut a, kind), value(&mut b, kind));
    }
}
