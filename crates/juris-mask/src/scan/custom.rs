//! Custom detectors: a size-limited regular expression, or a word list
//! matched with Aho-Corasick (ASCII case-insensitive, whole words only).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use super::{RawSpan, is_alnum};

/// Compiled-program and lazy-DFA cache limits: a pathological pattern from a
/// config fails at compile time instead of eating memory on the data path.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_DFA_LIMIT: usize = 2 << 20;

#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Regex(Regex),
    Words(AhoCorasick),
}

impl Matcher {
    pub(crate) fn regex(pattern: &str) -> Result<Matcher, String> {
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_LIMIT)
            .build()
            .map(Matcher::Regex)
            // The regex error spans several lines (pattern, caret, message);
            // a config report wants one.
            .map_err(|e| {
                e.to_string()
                    .replace('\n', " ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
    }

    pub(crate) fn words(words: &[String]) -> Result<Matcher, String> {
        // Standard semantics so that overlapping iteration reports every
        // candidate: `john smith` failing the word check must not hide
        // `john` at the same position.
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(words)
            .map(Matcher::Words)
            .map_err(|e| e.to_string())
    }

    /// Append every match in `v` as a span of `detector` (possibly
    /// overlapping: the caller normalises).
    pub(crate) fn find(&self, v: &[u8], detector: u16, spans: &mut Vec<RawSpan>) {
        match self {
            Matcher::Regex(re) => {
                for m in re.find_iter(v) {
                    if !m.is_empty() {
                        spans.push(RawSpan {
                            start: m.start(),
                            end: m.end(),
                            detector,
                        });
                    }
                }
            }
            Matcher::Words(ac) => {
                let word = |b: Option<&u8>| b.is_some_and(|&b| is_alnum(b) || b == b'_');
                for m in ac.find_overlapping_iter(v) {
                    let (s, e) = (m.start(), m.end());
                    let whole = !word(s.checked_sub(1).and_then(|p| v.get(p))) && !word(v.get(e));
                    if whole && e > s {
                        spans.push(RawSpan {
                            start: s,
                            end: e,
                            detector,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(m: &Matcher, v: &str) -> Vec<String> {
        let mut spans = Vec::new();
        m.find(v.as_bytes(), 9, &mut spans);
        spans
            .iter()
            .map(|s| v[s.start..s.end].to_string())
            .collect()
    }

    #[test]
    fn words_are_whole_and_case_insensitive() {
        let m = Matcher::words(&["john smith".into(), "john".into(), "Acme".into()]).unwrap();
        assert_eq!(texts(&m, "JOHN SMITHERS of ACME"), ["JOHN", "ACME"]);
        assert_eq!(texts(&m, "john smith"), ["john", "john smith"]);
        assert_eq!(texts(&m, "johnny acmes"), Vec::<String>::new());
    }

    #[test]
    fn regex_skips_empty_matches_and_limits_size() {
        let m = Matcher::regex(r"EMP-\d*").unwrap();
        assert_eq!(texts(&m, "x EMP-123 EMP-"), ["EMP-123", "EMP-"]);
        let m = Matcher::regex(r"x*").unwrap();
        assert!(texts(&m, "abc").is_empty());
        let err = Matcher::regex(r"\w{1000}{1000}").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(Matcher::regex("(").is_err());
    }
}
