//! Policies and a deterministic generator shared by the integration tests
//! and the benchmark.
#![allow(dead_code)]

use juris_mask::{CustomDetector, Masker, MaskingPolicy, StrategyName, ValueRule};

pub const KEY: &[u8] = b"integration-test-key";

pub fn rule(detector: &str, strategy: StrategyName) -> ValueRule {
    ValueRule {
        detector: detector.into(),
        strategy,
        keep_last: None,
    }
}

/// Every built-in with the given strategy.
pub fn all_builtins(strategy: StrategyName) -> Masker {
    let values = Masker::builtin_detectors()
        .iter()
        .map(|d| rule(d, strategy))
        .collect();
    Masker::compile(
        &MaskingPolicy {
            values,
            ..Default::default()
        },
        Some(KEY),
    )
    .expect("policy compiles")
}

/// Every built-in, each strategy in turn, plus a custom regex and words
/// detector: the fuzz target's policy.
pub fn mixed() -> Masker {
    let strategies = [
        StrategyName::Redact,
        StrategyName::Partial,
        StrategyName::Hash,
        StrategyName::Null,
    ];
    let mut values: Vec<ValueRule> = Masker::builtin_detectors()
        .iter()
        .zip(strategies.iter().cycle())
        .map(|(d, s)| rule(d, *s))
        .collect();
    values.push(rule("employee", StrategyName::Partial));
    values.push(rule("codename", StrategyName::Hash));
    Masker::compile(
        &MaskingPolicy {
            values,
            detectors: vec![
                CustomDetector {
                    name: "employee".into(),
                    regex: Some(r"EMP-[0-9]{4,8}|(?-u:\xC3)".into()),
                    words: None,
                },
                CustomDetector {
                    name: "codename".into(),
                    regex: None,
                    words: Some(vec!["bluebird".into(), "red fox".into(), "fox".into()]),
                },
            ],
            ..Default::default()
        },
        Some(KEY),
    )
    .expect("policy compiles")
}

/// SplitMix64: tiny, deterministic, good enough to vary test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    pub fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
    pub fn upper(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'A' + self.below(26) as u8))
            .collect()
    }
    pub fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| char::from(A[self.below(A.len() as u64) as usize]))
            .collect()
    }
}
