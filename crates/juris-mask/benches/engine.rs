//! Throughput of `mask_value` with every built-in detector enabled, on a
//! PII-free corpus of typical text columns and on a PII-dense one (both
//! generated deterministically here), plus the cost of custom detectors
//! and of COPY rows.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use juris_mask::{
    CopyFormat, CustomDetector, Findings, Masker, MaskingPolicy, StrategyName, ValueRule, mask_row,
};

#[path = "../tests/common/mod.rs"]
mod common;

use common::Rng;

const FIRST: &[&str] = &[
    "Jane", "John", "Amélie", "Bob", "Chen", "Fatima", "Lars", "María", "Olu", "Priya",
];
const LAST: &[&str] = &[
    "Doe",
    "Smith",
    "Müller",
    "García",
    "Nakamura",
    "Okafor",
    "Johansson",
    "Kowalski",
];
const STREETS: &[&str] = &[
    "Maple Street",
    "Main St",
    "Oak Avenue",
    "Hauptstraße",
    "Rue de Rivoli",
];
const CITIES: &[&str] = &["Springfield, IL", "Berlin", "Paris", "Austin, TX", "Osaka"];
const WORDS: &[&str] = &[
    "the",
    "order",
    "was",
    "shipped",
    "from",
    "our",
    "warehouse",
    "and",
    "should",
    "arrive",
    "within",
    "three",
    "business",
    "days",
    "customer",
    "asked",
    "about",
    "a",
    "refund",
    "because",
    "package",
    "damaged",
    "please",
    "contact",
    "support",
    "if",
    "you",
    "have",
    "any",
    "questions",
    "Thanks",
    "Regards",
    "delivery",
    "tracking",
    "available",
    "online",
];

fn prose(r: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for k in 0..words {
        if k > 0 {
            s.push(' ');
        }
        s.push_str(r.pick(WORDS));
    }
    s.push('.');
    s
}

/// Typical text columns: names, addresses, prose, timestamps, UUIDs,
/// prices, statuses.
fn pii_free(r: &mut Rng) -> String {
    let shape = r.below(8);
    pii_free_shape(r, shape)
}

/// Names of the shapes of [`pii_free_shape`], by number.
const SHAPES: [&str; 8] = [
    "name",
    "address",
    "prose",
    "prose2",
    "timestamp",
    "uuid",
    "price",
    "status",
];

fn pii_free_shape(r: &mut Rng, shape: u64) -> String {
    match shape {
        0 => format!("{} {}", r.pick(FIRST), r.pick(LAST)),
        1 => format!(
            "{} {}, {} {:05}",
            1 + r.below(999),
            r.pick(STREETS),
            r.pick(CITIES),
            r.below(100_000)
        ),
        2 | 3 => {
            let n = 8 + r.below(40) as usize;
            prose(r, n)
        }
        4 => format!(
            "2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            1 + r.below(12),
            1 + r.below(28),
            r.below(24),
            r.below(60),
            r.below(60),
            r.below(1_000_000)
        ),
        5 => format!(
            "{}-{}-4{}-a{}-{}",
            r.hex(8),
            r.hex(4),
            r.hex(3),
            r.hex(3),
            r.hex(12)
        ),
        6 => format!("{}.{:02}", r.below(10_000), r.below(100)),
        _ => r
            .pick(&["shipped", "pending", "cancelled", "refunded", "delivered"])
            .to_string(),
    }
}

/// Values that each carry one or more findings.
fn pii_dense(r: &mut Rng) -> String {
    let pii = |r: &mut Rng| -> String {
        match r.below(9) {
            0 => r.pick(&["4111 1111 1111 1111", "5500000000000004", "3782 822463 10005"]).into(),
            1 => format!("{:03}-{:02}-{:04}", 100 + r.below(500), 10 + r.below(89), 1000 + r.below(8999)),
            2 => format!("{}.{}{}@example.com", r.pick(FIRST).to_lowercase(), r.pick(LAST).to_lowercase(), r.below(100)),
            3 => format!("({}) 555-{:04}", 200 + r.below(799), r.below(10_000)),
            4 => "DE89 3704 0044 0532 0130 00".into(),
            5 => format!("10.{}.{}.{}", r.below(256), r.below(256), r.below(256)),
            6 => "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U".into(),
            7 => "AKIAIOSFODNN7EXAMPLE".into(),
            _ => format!("Bearer {}", r.hex(32)),
        }
    };
    match r.below(3) {
        0 => pii(r),
        1 => format!("{} {}: {}", r.pick(FIRST), r.pick(LAST), pii(r)),
        _ => {
            let a = pii(r);
            let b = pii(r);
            let n = 4 + r.below(8) as usize;
            format!("{} {a}, {} {b}", prose(r, n), r.pick(WORDS))
        }
    }
}

fn corpus(mut make: impl FnMut(&mut Rng) -> String, bytes: usize) -> Vec<Vec<u8>> {
    let mut r = Rng(42);
    let mut out = Vec::new();
    let mut total = 0;
    while total < bytes {
        let v = make(&mut r).into_bytes();
        total += v.len();
        out.push(v);
    }
    out
}

fn masker(custom: bool) -> Masker {
    let mut values: Vec<ValueRule> = Masker::builtin_detectors()
        .iter()
        .map(|d| ValueRule {
            detector: (*d).into(),
            strategy: StrategyName::Partial,
            keep_last: None,
        })
        .collect();
    let mut detectors = Vec::new();
    if custom {
        values.push(ValueRule {
            detector: "employee".into(),
            strategy: StrategyName::Redact,
            keep_last: None,
        });
        values.push(ValueRule {
            detector: "codenames".into(),
            strategy: StrategyName::Redact,
            keep_last: None,
        });
        detectors.push(CustomDetector {
            name: "employee".into(),
            regex: Some(r"\bEMP-[0-9]{6}\b".into()),
            words: None,
        });
        detectors.push(CustomDetector {
            name: "codenames".into(),
            regex: None,
            words: Some(vec![
                "bluebird".into(),
                "nightingale".into(),
                "red fox".into(),
            ]),
        });
    }
    Masker::compile(
        &MaskingPolicy {
            values,
            detectors,
            ..Default::default()
        },
        Some(b"bench-key"),
    )
    .expect("bench policy compiles")
}

fn bench_values(c: &mut Criterion, name: &str, m: &Masker, values: &[Vec<u8>]) {
    bench_group_values(c, "mask_value", name, m, values);
}

fn bench_group_values(c: &mut Criterion, group: &str, name: &str, m: &Masker, values: &[Vec<u8>]) {
    let bytes: usize = values.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(name, |b| {
        let mut out = Vec::with_capacity(256);
        let mut findings = Findings::new();
        b.iter(|| {
            for v in values {
                black_box(m.mask_value(black_box(v), &mut out, &mut findings));
            }
            findings.clear();
        });
    });
    group.finish();
}

fn engine(c: &mut Criterion) {
    const SIZE: usize = 1 << 20;
    let free = corpus(pii_free, SIZE);
    let dense = corpus(pii_dense, SIZE);
    let builtins = masker(false);
    let with_custom = masker(true);
    bench_values(c, "pii_free", &builtins, &free);
    bench_values(c, "pii_dense", &builtins, &dense);
    bench_values(c, "pii_free_with_custom", &with_custom, &free);

    // Each shape of the PII-free corpus alone (256 KiB each), to see which
    // columns cost what. `prose2` is the same shape as `prose`.
    for (shape, name) in SHAPES.iter().enumerate() {
        if *name == "prose2" {
            continue;
        }
        let values = corpus(|r| pii_free_shape(r, shape as u64), SIZE / 4);
        bench_group_values(c, "mask_shape", name, &builtins, &values);
    }

    // COPY text rows of four PII-free columns.
    let rows: Vec<Vec<u8>> = free
        .chunks(4)
        .map(|cols| {
            let mut row = cols.join(&b'\t');
            row.push(b'\n');
            row
        })
        .collect();
    let bytes: usize = rows.iter().map(Vec::len).sum();
    let format = CopyFormat::text();
    let mut group = c.benchmark_group("mask_row");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("text_pii_free", |b| {
        let mut out = Vec::new();
        let mut findings = Findings::new();
        b.iter(|| {
            for row in &rows {
                let _ = black_box(mask_row(
                    &builtins,
                    &format,
                    &[],
                    row,
                    &mut out,
                    &mut findings,
                ));
            }
        });
    });
    group.finish();
}

/// Column rules: the per-value cost of each strategy on short values (what
/// a masked column costs per row on the data path).
fn column_rules(c: &mut Criterion) {
    use juris_mask::{ColumnRule, SourceColumn};
    let strategies = [
        ("partial", StrategyName::Partial),
        ("hash", StrategyName::Hash),
        ("redact", StrategyName::Redact),
    ];
    let policy = MaskingPolicy {
        columns: strategies
            .iter()
            .map(|(name, strategy)| ColumnRule {
                name: Some(format!("public.t.{name}")),
                pattern: None,
                strategy: *strategy,
                keep_last: None,
            })
            .collect(),
        ..Default::default()
    };
    let m = Masker::compile(&policy, Some(b"bench-key")).expect("compiles");
    let values: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("{:03}-{:02}-{:04}", 100 + i % 600, 10 + i % 89, 1000 + i).into_bytes())
        .collect();
    let mut group = c.benchmark_group("mask_whole");
    group.throughput(Throughput::Elements(values.len() as u64));
    for (name, _) in strategies {
        let source = SourceColumn {
            schema: "public",
            table: "t",
            column: name,
        };
        let rule = m.column_rule(Some(source), name).expect("rule");
        group.bench_function(name, |b| {
            let mut out = Vec::with_capacity(64);
            b.iter(|| {
                for v in &values {
                    black_box(m.mask_whole(rule, black_box(v), &mut out));
                }
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = engine, column_rules
}
criterion_main!(benches);
