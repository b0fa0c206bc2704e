//! Arbitrary bytes through every masking entry point with a policy that
//! uses every built-in detector, every strategy, a custom regex and a word
//! list: nothing may panic, and UTF-8 in must give UTF-8 out.
#![no_main]

use std::sync::OnceLock;

use juris_mask::{
    ColumnRuleId, CopyFormat, CustomDetector, Findings, Masker, MaskingPolicy, Outcome,
    StrategyName, ValueRule, mask_row,
};
use libfuzzer_sys::fuzz_target;

fn masker() -> &'static Masker {
    static MASKER: OnceLock<Masker> = OnceLock::new();
    MASKER.get_or_init(|| {
        let strategies = [
            StrategyName::Redact,
            StrategyName::Partial,
            StrategyName::Hash,
            StrategyName::Null,
        ];
        let mut values: Vec<ValueRule> = Masker::builtin_detectors()
            .iter()
            .zip(strategies.iter().cycle())
            .map(|(d, s)| ValueRule {
                detector: (*d).into(),
                strategy: *s,
                keep_last: None,
            })
            .collect();
        for (detector, strategy) in [
            ("employee", StrategyName::Partial),
            ("codename", StrategyName::Hash),
        ] {
            values.push(ValueRule {
                detector: detector.into(),
                strategy,
                keep_last: None,
            });
        }
        let policy = MaskingPolicy {
            columns: vec![juris_mask::ColumnRule {
                name: None,
                pattern: Some("*".into()),
                strategy: StrategyName::Partial,
                keep_last: Some(2),
            }],
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
        };
        Masker::compile(&policy, Some(b"fuzz-key")).expect("fuzz policy compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let m = masker();
    let utf8 = std::str::from_utf8(data).is_ok();
    let mut findings = Findings::new();
    let mut out = Vec::new();

    if m.mask_value(data, &mut out, &mut findings) == Outcome::Rewritten && utf8 {
        assert!(std::str::from_utf8(&out).is_ok(), "mask_value broke UTF-8");
    }

    let text = String::from_utf8_lossy(data);
    let _ = m.mask_text(&text, &mut findings);

    let spans = m.scan(data);
    for s in &spans {
        assert!(s.start < s.end && s.end <= data.len());
    }
    for w in spans.windows(2) {
        assert!(w[0].end <= w[1].start, "spans overlap");
    }

    let columns = [None, Some(ColumnRuleId(0)), None];
    for format in [CopyFormat::text(), CopyFormat::csv()] {
        let mut row = Vec::new();
        if let Ok(true) = mask_row(m, &format, &columns, data, &mut row, &mut findings)
            && utf8
        {
            assert!(std::str::from_utf8(&row).is_ok(), "mask_row broke UTF-8");
        }
    }
});
