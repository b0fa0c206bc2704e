//! The detection engine: one left-to-right pass for all built-in detectors,
//! then the custom detectors, then span normalisation.
//!
//! The pass classifies the value 64 bytes at a time into byte-class bit
//! masks (`gate::block_masks`) and picks from them the bytes that can
//! start (or, for `@`, `:` and `J`, anchor) a finding (`worth_mask`);
//! a 256-entry trigger table built for the detectors the policy actually
//! uses has the final word on each. A trigger dispatches to an anchored
//! validator (no regex, no allocation); a validator that rejects tells the
//! loop how far it may skip, normally to the end of the word or digit run
//! it looked at. Findings are emitted in increasing order and never
//! overlap, because the loop resumes after each finding and the few
//! validators that look backwards (email's local part, JWT's `ey`, IPv6's
//! leading groups) stop at the previous finding's end.
//!
//! Values longer than 16 bytes first pass `gate`, which rules out, with
//! the same kind of masks over the whole value, those that cannot hold any
//! finding (most timestamps, ids, addresses and prose); the loop is not run
//! for them, and for the others starts from the gate's masks of the first
//! block, so a value of up to 64 bytes is classified once.

mod gate;
mod numeric;
mod text;

pub(crate) mod custom;

pub(crate) use gate::{HI, LO, in_range};

/// Built-in detector names; the index is the detector's id.
pub(crate) const BUILTIN_NAMES: [&str; 9] = [
    "card", "ssn", "email", "phone", "iban", "ip", "jwt", "aws_key", "bearer",
];

pub(crate) const CARD: u16 = 0;
pub(crate) const SSN: u16 = 1;
pub(crate) const EMAIL: u16 = 2;
pub(crate) const PHONE: u16 = 3;
pub(crate) const IBAN: u16 = 4;
pub(crate) const IP: u16 = 5;
pub(crate) const JWT: u16 = 6;
pub(crate) const AWS_KEY: u16 = 7;
pub(crate) const BEARER: u16 = 8;

/// A finding before it is exposed as [`crate::Span`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawSpan {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) detector: u16,
}

// Trigger kinds stored in the table (0 = not a trigger).
const K_DIGIT: u8 = 1;
const K_UPPER: u8 = 2;
const K_LOWER_B: u8 = 3;
const K_AT: u8 = 4;
const K_PLUS: u8 = 5;
const K_PAREN: u8 = 6;
const K_COLON: u8 = 7;

/// The built-in detectors a policy enables, with their trigger table.
#[derive(Clone)]
pub(crate) struct Builtins {
    enabled: u16,
    table: [u8; 256],
}

impl std::fmt::Debug for Builtins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtins")
            .field("enabled", &format_args!("{:#011b}", self.enabled))
            .finish_non_exhaustive()
    }
}

impl Builtins {
    /// `enabled`: bit `id` set for each built-in detector to run.
    pub(crate) fn new(enabled: u16) -> Self {
        let on = |d: u16| enabled & (1 << d) != 0;
        let mut table = [0u8; 256];
        // Only bytes that can start (or, for `@`, `:` and `J`, anchor) a
        // finding of an enabled detector are triggers: the fewer triggers,
        // the longer the untouched runs the skip loop races through.
        if on(CARD) || on(SSN) || on(PHONE) || on(IP) {
            for b in b'0'..=b'9' {
                table[usize::from(b)] = K_DIGIT;
            }
        }
        if on(IBAN) {
            for b in b'A'..=b'Z' {
                table[usize::from(b)] = K_UPPER;
            }
        }
        if on(AWS_KEY) {
            table[usize::from(b'A')] = K_UPPER;
        }
        if on(JWT) {
            table[usize::from(b'J')] = K_UPPER;
        }
        if on(BEARER) {
            table[usize::from(b'B')] = K_UPPER;
            table[usize::from(b'b')] = K_LOWER_B;
        }
        if on(EMAIL) {
            table[usize::from(b'@')] = K_AT;
        }
        if on(PHONE) {
            table[usize::from(b'+')] = K_PLUS;
            table[usize::from(b'(')] = K_PAREN;
        }
        if on(IP) {
            table[usize::from(b':')] = K_COLON;
        }
        Builtins { enabled, table }
    }

    /// Append the findings in `v` to `spans` (sorted, non-overlapping).
    pub(crate) fn scan(&self, v: &[u8], spans: &mut Vec<RawSpan>) {
        if self.enabled == 0 {
            return;
        }
        // Values of one or two words are cheaper to scan than to gate.
        let mut first = None;
        let mut i = 0;
        if v.len() > 16 {
            let (start, worth) = match gate::check(v, self.enabled) {
                Some(found) => found,
                None => return,
            };
            // Nothing can be found before `start` (see `gate::check`).
            i = start;
            first = Some(worth);
        }
        let mut st = State {
            v,
            enabled: self.enabled,
            last_end: 0,
            spans,
        };
        let table = &self.table;
        if v.len() < 8 {
            // A word or a number: cheaper to look up than to classify.
            let rest = |i: usize| v.get(i..).unwrap_or_default();
            while let Some(k) = rest(i).iter().position(|&b| table[usize::from(b)] != 0) {
                let k = i + k;
                i = dispatch(&mut st, table[usize::from(v[k])], k).max(k + 1);
            }
            return;
        }
        // Block by block: the triggers worth a look (see `worth_mask`) from
        // the block's class masks, each dispatched in turn. A block starts
        // where the scan resumes, and its first one is the gate's.
        while i < v.len() {
            let end = v.len().min(i + gate::BLOCK);
            let mut worth = match first.take() {
                Some(worth) => worth,
                None => {
                    let masks = gate::block_masks::<{ gate::LOOP }>(&v[i..end]);
                    let prev = if i > 0 { v[i - 1] } else { 0 };
                    worth_mask(&masks, prev, at(v, end))
                }
            };
            let base = i;
            i = end;
            while worth != 0 {
                let k = base + worth.trailing_zeros() as usize;
                worth &= worth - 1;
                let kind = table[usize::from(v[k])];
                if kind == 0 {
                    continue;
                }
                let resume = dispatch(&mut st, kind, k).max(k + 1);
                if resume >= end {
                    i = resume;
                    break;
                }
                // Drop the candidates the validator skipped.
                worth &= u64::MAX << (resume - base);
            }
        }
    }
}

/// Hand the trigger byte at `k` (of byte class `kind`) to its detectors;
/// returns where scanning resumes.
fn dispatch(st: &mut State<'_, '_>, kind: u8, k: usize) -> usize {
    match kind {
        K_DIGIT => numeric::on_digit(st, k),
        K_UPPER => text::on_upper(st, k),
        K_LOWER_B => text::on_lower_b(st, k),
        K_AT => text::on_at(st, k),
        K_PLUS => numeric::on_plus(st, k),
        K_PAREN => numeric::on_paren(st, k),
        K_COLON => text::on_colon(st, k),
        _ => k + 1,
    }
}

/// The triggers of a block worth dispatching, from its class masks (bit
/// `i` = byte `i`), given the bytes just before (`prev`) and after
/// (`next`) the block (0 outside the value).
///
/// Every validator anchored on a digit, a capital, `b`, `+` or `(` gives up
/// at once when the byte before is alphanumeric (it only skips the rest of
/// that word, whose other candidates are in the same position), except the
/// `J` of `eyJ`. A capital at a word start needs a capital after it (IBAN
/// country codes, AWS prefixes, `BEARER`) unless it is the `B` of `Bearer`,
/// which, like `b`, needs an `e` after it. Dropping the others changes no
/// result; it only spares their dispatch. (A superset of the trigger table
/// of every policy; the table has the final word.)
#[inline(always)]
pub(super) fn worth_mask(m: &gate::Masks, prev: u8, next: u8) -> u64 {
    use gate::{AT, B, CAP_J, COLON, DIGIT, E, LOWER, LPAREN, PLUS, UPPER};
    const TOP: u64 = 1 << 63;
    let digit = m[DIGIT];
    let upper = m[UPPER];
    let alnum = digit | upper | m[LOWER];
    let prev_alnum = (alnum << 1) | u64::from(is_alnum(prev));
    let start = !prev_alnum;
    // Past the end of a short block every mask is clear, as `next` is.
    let upper_next = (upper >> 1) | if next.is_ascii_uppercase() { TOP } else { 0 };
    let e_next = (m[E] >> 1) | if next | 0x20 == b'e' { TOP } else { 0 };
    let words = digit | (upper & upper_next) | (m[B] & e_next);
    let anchored = m[PLUS] | m[LPAREN];
    ((words | anchored) & start) | (m[CAP_J] & prev_alnum) | m[AT] | m[COLON]
}

/// `rest` (shorter than eight bytes) as a zero-padded little-endian word,
/// from two overlapping loads instead of a variable-length copy.
#[inline(always)]
pub(crate) fn tail_at(rest: &[u8]) -> u64 {
    let n = rest.len();
    if n >= 4 {
        let lo = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let hi = u32::from_le_bytes([rest[n - 4], rest[n - 3], rest[n - 2], rest[n - 1]]);
        u64::from(lo) | (u64::from(hi) << (8 * (n - 4)))
    } else if n >= 2 {
        let lo = u16::from_le_bytes([rest[0], rest[1]]);
        let hi = u16::from_le_bytes([rest[n - 2], rest[n - 1]]);
        u64::from(lo) | (u64::from(hi) << (8 * (n - 2)))
    } else {
        rest.first().map_or(0, |&b| u64::from(b))
    }
}

/// Scan state shared by the validators.
pub(crate) struct State<'a, 'b> {
    pub(crate) v: &'a [u8],
    enabled: u16,
    /// End of the last finding: nothing may start before it.
    pub(crate) last_end: usize,
    spans: &'b mut Vec<RawSpan>,
}

impl State<'_, '_> {
    pub(crate) fn on(&self, detector: u16) -> bool {
        self.enabled & (1 << detector) != 0
    }

    /// Record a finding and return where scanning resumes. Inlined: as a
    /// call it cost ~16 instructions a finding more (the span's fields
    /// passed, the spans' vector reloaded).
    #[inline(always)]
    pub(crate) fn push(&mut self, start: usize, end: usize, detector: u16) -> usize {
        debug_assert!(start >= self.last_end && end > start);
        self.spans.push(RawSpan {
            start,
            end,
            detector,
        });
        self.last_end = end;
        end
    }
}

/// The byte at `i`, or 0 past the end (0 is no detector's character).
#[inline]
pub(crate) fn at(v: &[u8], i: usize) -> u8 {
    v.get(i).copied().unwrap_or(0)
}

#[inline]
pub(crate) fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Number of ASCII digits starting at `i`.
#[inline]
pub(crate) fn digits_at(v: &[u8], i: usize) -> usize {
    // Digit runs are short: bytes beat words here.
    v.get(i..)
        .map_or(0, |s| s.iter().take_while(|b| b.is_ascii_digit()).count())
}

/// End of the alphanumeric run starting at `i`.
#[inline]
pub(crate) fn skip_word(v: &[u8], i: usize) -> usize {
    i + v
        .get(i..)
        .map_or(0, |s| s.iter().take_while(|b| is_alnum(**b)).count())
}

/// Sort, align to character boundaries and merge overlapping spans; an
/// overlap becomes one span with the strongest of the strategies involved
/// (`strength` maps a detector to its strategy's strength).
pub(crate) fn normalize(v: &[u8], spans: &mut Vec<RawSpan>, strength: impl Fn(u16) -> u8) {
    let is_cont = |b: u8| b & 0xC0 == 0x80;
    for s in spans.iter_mut() {
        // A custom byte regex may cut a multi-byte character; widening to
        // the whole character keeps the output valid UTF-8. Three steps is
        // the most a valid character needs.
        for _ in 0..3 {
            if s.start > 0 && s.start < v.len() && is_cont(v[s.start]) {
                s.start -= 1;
            }
            if s.end < v.len() && is_cont(v[s.end]) {
                s.end += 1;
            }
        }
    }
    spans.sort_unstable_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut merged: Vec<RawSpan> = Vec::with_capacity(spans.len());
    for s in spans.drain(..) {
        match merged.last_mut() {
            Some(last) if s.start < last.end => {
                last.end = last.end.max(s.end);
                if strength(s.detector) > strength(last.detector) {
                    last.detector = s.detector;
                }
            }
            _ => merged.push(s),
        }
    }
    *spans = merged;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The texts of the findings of one detector in `v`.
    pub(crate) fn find(detector: u16, v: &str) -> Vec<String> {
        let mut spans = Vec::new();
        Builtins::new(1 << detector).scan(v.as_bytes(), &mut spans);
        spans
            .iter()
            .map(|s| {
                assert_eq!(s.detector, detector);
                v[s.start..s.end].to_string()
            })
            .collect()
    }

    /// Assert that `detector`, enabled alone, finds exactly `want` in `v`.
    pub(crate) fn check(detector: u16, v: &str, want: &[&str]) {
        assert_eq!(find(detector, v), want, "detector {detector} in {v:?}");
    }

    #[test]
    fn all_detectors_together_are_ordered_and_disjoint() {
        let v = "card 4111 1111 1111 1111, ssn 123-45-6789, mail jane.doe@example.com, \
                 phone (415) 555-0132, iban DE89 3704 0044 0532 0130 00, ip 192.168.0.1 \
                 and 2001:db8::1, jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_nat-ure, \
                 key AKIAIOSFODNN7EXAMPLE, Authorization: Bearer abcdefghijklmnop1234";
        let mut spans = Vec::new();
        Builtins::new(0x1ff).scan(v.as_bytes(), &mut spans);
        let got: Vec<_> = spans
            .iter()
            .map(|s| (BUILTIN_NAMES[usize::from(s.detector)], &v[s.start..s.end]))
            .collect();
        assert_eq!(
            got,
            [
                ("card", "4111 1111 1111 1111"),
                ("ssn", "123-45-6789"),
                ("email", "jane.doe@example.com"),
                ("phone", "(415) 555-0132"),
                ("iban", "DE89 3704 0044 0532 0130 00"),
                ("ip", "192.168.0.1"),
                ("ip", "2001:db8::1"),
                (
                    "jwt",
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_nat-ure"
                ),
                ("aws_key", "AKIAIOSFODNN7EXAMPLE"),
                ("bearer", "abcdefghijklmnop1234"),
            ]
        );
    }

    /// The scan loop without the SWAR skip and the word filter: every
    /// trigger byte is dispatched. The real loop must find the same spans.
    fn reference_scan(b: &Builtins, v: &[u8]) -> Vec<RawSpan> {
        let mut spans = Vec::new();
        let mut st = State {
            v,
            enabled: b.enabled,
            last_end: 0,
            spans: &mut spans,
        };
        let mut i = 0;
        while let Some(k) = (i..v.len()).find(|&k| b.table[usize::from(v[k])] != 0) {
            i = dispatch(&mut st, b.table[usize::from(v[k])], k).max(k + 1);
        }
        spans
    }

    #[test]
    fn filtered_scan_matches_reference() {
        const PIECES: &[&str] = &[
            "4111 1111 1111 1111",
            "4111111111111111",
            "123-45-6789",
            "123456789",
            "(415) 555-0132",
            "415-555-0132",
            "+14155550132",
            "1-800-555-0199",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "192.168.0.1",
            "2001:db8::1",
            "::ffff:192.0.2.128",
            "10:30:00.123456+00",
            "2024-01-15",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
            "ey",
            "eyJ",
            "AKIAIOSFODNN7EXAMPLE",
            "Bearer abcdefghijklmnop1234",
            "bearer",
            "b",
            "B",
            "jane.doe@example.com",
            "@",
            "x",
            "Jane",
            "IL",
            "a1",
            "1a",
            "-",
            ".",
            " ",
            "_",
            ":",
            "+",
            "(",
            ")",
            ",",
            "=",
            "é",
            "\t",
            "9",
            "0",
            "12",
            "3f2a-4b7d",
        ];
        let mut next = splitmix(0x1234_5678_9abc_def0u64);
        let all = Builtins::new(0x1ff);
        let singles: Vec<Builtins> = (0..9).map(|d| Builtins::new(1 << d)).collect();
        for _ in 0..20_000 {
            let mut v = String::new();
            for _ in 0..next() % 12 {
                v.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            for b in std::iter::once(&all).chain(&singles) {
                let mut got = Vec::new();
                b.scan(v.as_bytes(), &mut got);
                assert_eq!(got, reference_scan(b, v.as_bytes()), "in {v:?}");
            }
        }
    }

    /// The plain definition of `worth_mask`, one byte at a time.
    fn worth_at(v: &[u8], k: usize) -> bool {
        let b = v[k];
        let start = k == 0 || !is_alnum(v[k - 1]);
        let next = at(v, k + 1);
        let word = b.is_ascii_digit()
            || (b.is_ascii_uppercase() && next.is_ascii_uppercase())
            || (b.eq_ignore_ascii_case(&b'b') && next.eq_ignore_ascii_case(&b'e'));
        ((word || b == b'+' || b == b'(') && start)
            || (b == b'J' && !start)
            || b == b'@'
            || b == b':'
    }

    /// Random bytes, mostly those the detectors care about.
    fn random_value(next: &mut impl FnMut() -> u64, max_len: u64) -> Vec<u8> {
        const ALPHABET: &[u8] = b"0123456789000111------....    ::::++((()@AAJJKIey                                  beBErRSDGxz_,=\t\xc3\xa9\xff";
        const WORDS: &[&str] = &[
            "4111",
            "1111",
            "123",
            "45",
            "6789",
            "555",
            "415",
            "eyJ",
            "AKIA",
            "Bearer ",
            "bearer   ",
            "DE89",
            "3704",
            "::",
            "192.",
            "10.",
            "+1",
            "+44 ",
            "(415)",
            "@example.com",
            "jane",
        ];
        let len = (next() % max_len) as usize;
        let mut v = Vec::with_capacity(len + 16);
        while v.len() < len {
            if next().is_multiple_of(4) {
                v.extend_from_slice(WORDS[(next() % WORDS.len() as u64) as usize].as_bytes());
            } else {
                v.push(ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
            }
        }
        v
    }

    /// The runs (bytes and block masks) against `take_while` over
    /// every start of random values (any byte; runs across words and
    /// blocks, and to the end).
    #[test]
    fn runs_match_the_plain_definition() {
        let plain = |v: &[u8], i: usize, f: &dyn Fn(u8) -> bool| {
            v.get(i..)
                .map_or(0, |s| s.iter().take_while(|&&b| f(b)).count())
        };
        let mut next = splitmix(0x0123_4567_89ab_cdefu64);
        for round in 0..3_000 {
            let pool: &[u8] = if next().is_multiple_of(2) {
                b"0123456789abcXYZ-_.~+/=@ \x00\x7f\x80\xc3\xff`{[:"
            } else {
                b"0123456789aZ-_"
            };
            let len = (next() % if round % 3 == 0 { 200 } else { 40 }) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| match next() % 16 {
                    0 => next() as u8,
                    _ => pool[(next() % pool.len() as u64) as usize],
                })
                .collect();
            for i in 0..=len + 9 {
                assert_eq!(digits_at(&v, i), plain(&v, i, &|b| b.is_ascii_digit()));
                assert_eq!(
                    skip_word(&v, i),
                    i + plain(&v, i, &|b| is_alnum(b)),
                    "{v:?} {i}"
                );
                let b64 = |b: u8| is_alnum(b) || b"-_".contains(&b);
                let token = |b: u8| is_alnum(b) || b"._~+/=-".contains(&b);
                let got = gate::run_of::<{ gate::B64URL_SET }>(&v, gate::B64URL, i);
                assert_eq!(got, plain(&v, i, &b64), "{v:?} {i}");
                let got = gate::run_of::<{ gate::TOKEN_SET }>(&v, gate::TOKEN, i);
                assert_eq!(got, plain(&v, i, &token), "{v:?} {i}");
            }
        }
    }

    /// The block masks give `worth_mask` the same candidates as the plain
    /// definition, wherever a block starts and however long it is.
    #[test]
    fn worth_mask_matches_the_plain_definition() {
        let mut next = splitmix(0x7e57_3a5c_0ffe_e000u64);
        for round in 0..20_000 {
            let v = if round % 4 == 0 {
                // Any byte at all.
                (0..next() % 100).map(|_| next() as u8).collect()
            } else {
                random_value(&mut next, 100)
            };
            let start = if v.is_empty() {
                0
            } else {
                (next() % v.len() as u64) as usize
            };
            let end = v.len().min(start + gate::BLOCK);
            let masks = if next().is_multiple_of(2) {
                gate::block_masks::<{ gate::LOOP }>(&v[start..end])
            } else {
                gate::block_masks::<{ gate::FULL }>(&v[start..end])
            };
            let prev = if start > 0 { v[start - 1] } else { 0 };
            let got = worth_mask(&masks, prev, at(&v, end));
            let want = (start..end)
                .filter(|&k| worth_at(&v, k))
                .fold(0u64, |m, k| m | 1 << (k - start));
            assert_eq!(got, want, "from {start} in {v:?}");
        }
    }

    /// Long values of findings and near misses at every offset, so that
    /// findings, rejected candidates and resume points fall on and across
    /// block boundaries: the block loop finds what the unfiltered loop does.
    #[test]
    fn block_scan_matches_reference_on_long_values() {
        let mut next = splitmix(0xb10c_5ca1_1234_abcdu64);
        let all = Builtins::new(0x1ff);
        let singles: Vec<Builtins> = (0..9).map(|d| Builtins::new(1 << d)).collect();
        let mut found = 0;
        for round in 0..30_000 {
            let v = random_value(&mut next, if round % 2 == 0 { 300 } else { 80 });
            found += scans_match_reference(&all, &singles, &v);
        }
        assert!(found > 10_000, "only {found} findings");
    }

    /// Assert that `v` scans as the unfiltered loop does with every
    /// detector on and with each alone; the findings of the reference.
    fn scans_match_reference(all: &Builtins, singles: &[Builtins], v: &[u8]) -> usize {
        let mut found = 0;
        for b in std::iter::once(all).chain(singles) {
            let mut got = Vec::new();
            b.scan(v, &mut got);
            let want = reference_scan(b, v);
            found += want.len();
            assert_eq!(got, want, "in {:?}", String::from_utf8_lossy(v));
        }
        found
    }

    /// Long values whose first blocks hold only letters and punctuation
    /// (words with a `J` inside, `be…` words, lone capitals, `ey`), so the
    /// gate's quick pass starts the scan at a later block, followed by
    /// findings and near misses: the scan finds what the unfiltered loop
    /// does from the value's start, whatever block it starts at and
    /// wherever the words and shapes cross the block boundary.
    #[test]
    fn scan_from_a_later_block_matches_reference() {
        const LETTERS: &[&str] = &[
            "the", "Jane", "xJy", "ey", "be", "Be", "bee", "beer", "A", "I", "B", "Thanks",
            "order", "-", ".", ",", "_", "=", "é", "\t", "e", "y", "J", "b", "aJ", "Xe", "Ab",
        ];
        // Rarely: the start of a shape the quick pass stops at.
        const SHAPES: &[&str] = &["eyJ", "Bearer", "bearerx", "DE", "AK"];
        let mut next = splitmix(0x1a7e_b10c_5ca1_0001u64);
        let all = Builtins::new(0x1ff);
        let singles: Vec<Builtins> = (0..9).map(|d| Builtins::new(1 << d)).collect();
        let (mut later, mut found) = (0, 0);
        for round in 0..20_000 {
            // 40 to 250 bytes of letters, then, half the time with no
            // separator, random findings and near misses.
            let mut v = Vec::new();
            let len = 40 + (next() % 210) as usize;
            while v.len() < len {
                let piece = if next().is_multiple_of(40) {
                    SHAPES[(next() % SHAPES.len() as u64) as usize]
                } else {
                    LETTERS[(next() % LETTERS.len() as u64) as usize]
                };
                v.extend_from_slice(piece.as_bytes());
                if next().is_multiple_of(2) {
                    v.push(b' ');
                }
            }
            if round % 3 == 0 {
                // Up to a block boundary exactly.
                v.truncate(v.len() / gate::BLOCK * gate::BLOCK);
            }
            v.extend(random_value(&mut next, 120));
            if gate::check(&v, 0x1ff).is_some_and(|(start, _)| start > 0) {
                later += 1;
            }
            found += scans_match_reference(&all, &singles, &v);
        }
        assert!(later > 1_000, "only {later} scans from a later block");
        assert!(found > 5_000, "only {found} findings");
    }

    /// A small deterministic generator (SplitMix64) for the randomised tests.
    pub(crate) fn splitmix(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    /// Values of bytes that detectors care about, in random orders and
    /// lengths: whenever the unfiltered loop finds something, the gate
    /// must have let the value through.
    #[test]
    fn gate_never_hides_a_finding() {
        let mut next = splitmix(0x0bad_5eed_1234_5678u64);
        let all = Builtins::new(0x1ff);
        let singles: Vec<Builtins> = (0..9).map(|d| Builtins::new(1 << d)).collect();
        let mut found = 0;
        for _ in 0..60_000 {
            let v = random_value(&mut next, 160);
            for b in std::iter::once(&all).chain(&singles) {
                let want = reference_scan(b, &v);
                if !want.is_empty() {
                    found += 1;
                    assert!(
                        gate::may_match(&v, b.enabled),
                        "gate hides {want:?} in {:?}",
                        String::from_utf8_lossy(&v)
                    );
                }
            }
        }
        // The generator must actually produce findings for this to mean much.
        assert!(found > 1_000, "only {found} values with findings");
    }

    /// Each detector's shortest finding is found and let through.
    #[test]
    fn shortest_findings_pass_the_gate() {
        for (detector, v) in [
            (IP, "1::2"),
            (IP, "0.0.0.0"),
            (EMAIL, "a@b.io"),
            (SSN, "123456789"),
            (PHONE, "+12345678"),
            (CARD, "4222222222222"),
            (IBAN, "NO9386011117947"),
            (JWT, "eyJabcde.eyJabcde."),
            (AWS_KEY, "AKIAIOSFODNN7EXAMPLE"),
            (BEARER, "Bearer abcdefghijklmnop"),
        ] {
            let b = Builtins::new(1 << detector);
            assert_eq!(reference_scan(&b, v.as_bytes()).len(), 1, "{v}");
            assert!(gate::may_match(v.as_bytes(), b.enabled), "{v}");
            let shorter = &v.as_bytes()[1..];
            assert!(reference_scan(&b, shorter).is_empty(), "{v}");
        }
    }

    #[test]
    fn normalize_merges_and_aligns() {
        let v = "ab€cd".as_bytes(); // € is 3 bytes at 2..5
        let mut spans = vec![
            RawSpan {
                start: 3,
                end: 4,
                detector: 1,
            },
            RawSpan {
                start: 0,
                end: 1,
                detector: 0,
            },
            RawSpan {
                start: 0,
                end: 2,
                detector: 2,
            },
        ];
        normalize(v, &mut spans, |d| d as u8);
        assert_eq!(
            spans,
            [
                RawSpan {
                    start: 0,
                    end: 2,
                    detector: 2
                },
                RawSpan {
                    start: 2,
                    end: 5,
                    detector: 1
                },
            ]
        );
    }
}
