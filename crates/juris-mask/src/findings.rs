//! Counts of what was masked, per detector and strategy, for audit events.

use crate::{DetectorId, Strategy};

/// Findings of one detector masked with one strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// What found it.
    pub detector: DetectorId,
    /// How it was masked.
    pub strategy: Strategy,
    /// How many spans.
    pub count: u64,
}

/// Counts per (detector, strategy). A policy has few value rules, so a small
/// vector searched linearly beats a map, and an empty one never allocates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    entries: Vec<Finding>,
}

impl Findings {
    /// No findings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one finding.
    pub fn record(&mut self, detector: DetectorId, strategy: Strategy) {
        self.add(detector, strategy, 1);
    }

    /// Add another set of counts to this one.
    pub fn merge(&mut self, other: &Findings) {
        for f in &other.entries {
            self.add(f.detector, f.strategy, f.count);
        }
    }

    /// Forget all counts (keeps the allocation for reuse).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of findings.
    pub fn total(&self) -> u64 {
        self.entries.iter().map(|f| f.count).sum()
    }

    /// The counts, in order of first occurrence.
    pub fn iter(&self) -> impl Iterator<Item = Finding> + '_ {
        self.entries.iter().copied()
    }

    fn add(&mut self, detector: DetectorId, strategy: Strategy, count: u64) {
        match self
            .entries
            .iter_mut()
            .find(|f| f.detector == detector && f.strategy == strategy)
        {
            Some(f) => f.count = f.count.saturating_add(count),
            None => self.entries.push(Finding {
                detector,
                strategy,
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_merge_clear() {
        let mut a = Findings::new();
        assert!(a.is_empty());
        a.record(DetectorId(0), Strategy::Redact);
        a.record(DetectorId(0), Strategy::Redact);
        a.record(DetectorId(1), Strategy::Hash);
        let mut b = Findings::new();
        b.record(DetectorId(1), Strategy::Hash);
        b.record(DetectorId(0), Strategy::Partial { keep_last: 4 });
        a.merge(&b);
        let got: Vec<_> = a
            .iter()
            .map(|f| (f.detector.0, f.strategy, f.count))
            .collect();
        assert_eq!(
            got,
            [
                (0, Strategy::Redact, 2),
                (1, Strategy::Hash, 2),
                (0, Strategy::Partial { keep_last: 4 }, 1)
            ]
        );
        assert_eq!(a.total(), 5);
        a.clear();
        assert!(a.is_empty());
    }
}
