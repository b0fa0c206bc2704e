//! Policies shared by the integration tests.
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
