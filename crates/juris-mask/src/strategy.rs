//! Strategies: what replaces a detected span or a whole column value.
//!
//! Every replacement is valid UTF-8 on its own, so output stays valid UTF-8
//! whenever the input was and spans start and end on character boundaries.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The fixed replacement text of the redact strategy.
pub const REDACTED: &str = "[REDACTED]";

/// Hex digits of the MAC kept in a hash token: 80 bits, enough that distinct
/// values practically never collide within a table, short enough to read.
const TOKEN_HEX_LEN: usize = 20;

/// A compiled masking strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Replace with `[REDACTED]`.
    Redact,
    /// Keep the last `keep_last` alphanumerics, replace the others with `*`.
    Partial { keep_last: usize },
    /// `tok_` + 20 hex digits of HMAC-SHA-256 with the deployment's key.
    Hash,
    /// SQL NULL (in free text: `[REDACTED]`).
    Null,
}

impl Strategy {
    /// The strategy's config name.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Redact => "redact",
            Strategy::Partial { .. } => "partial",
            Strategy::Hash => "hash",
            Strategy::Null => "null",
        }
    }

    /// Ordering used when overlapping findings are merged into one span:
    /// the merged span gets the strongest strategy, so merging never
    /// reveals more than either finding alone would have.
    pub(crate) fn strength(self) -> u8 {
        match self {
            Strategy::Partial { .. } => 0,
            Strategy::Hash => 1,
            Strategy::Redact => 2,
            Strategy::Null => 3,
        }
    }
}

/// The keyed MAC, prepared once so each token only clones the keyed state.
pub(crate) type HashKey = Hmac<Sha256>;

/// `None` only if the MAC refuses the key; HMAC accepts keys of any length,
/// so compile reports it as a problem rather than assuming.
pub(crate) fn hash_key(key: &[u8]) -> Option<HashKey> {
    HashKey::new_from_slice(key).ok()
}

/// Append the replacement of `value` under `strategy` to `out`. `Null` is
/// written as `[REDACTED]` (callers that can produce SQL NULL handle it
/// before calling), and `Hash` without a key falls back to `[REDACTED]`
/// (compile refuses that combination, so this is defence in depth).
pub(crate) fn write_masked(
    strategy: Strategy,
    value: &[u8],
    key: Option<&HashKey>,
    out: &mut Vec<u8>,
) {
    match strategy {
        Strategy::Redact | Strategy::Null => out.extend_from_slice(REDACTED.as_bytes()),
        Strategy::Partial { keep_last } => write_partial(value, keep_last, out),
        Strategy::Hash => match key {
            Some(key) => write_token(key, value, out),
            None => out.extend_from_slice(REDACTED.as_bytes()),
        },
    }
}

/// `tok_` + the first 20 lowercase hex digits of HMAC-SHA-256(key, value).
pub(crate) fn write_token(key: &HashKey, value: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut mac = key.clone();
    mac.update(value);
    let tag = mac.finalize().into_bytes();
    out.extend_from_slice(b"tok_");
    for &b in tag.iter().take(TOKEN_HEX_LEN / 2) {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}

/// Keep the last `keep` alphanumerics, star the others, keep separators.
///
/// Non-ASCII characters count as alphanumerics (one `*` each); bytes that
/// are not valid UTF-8 count too but are always starred, never kept. When
/// the value has no more than `keep` alphanumerics, all are starred: a short
/// value must not be revealed entirely.
pub(crate) fn write_partial(value: &[u8], keep: usize, out: &mut Vec<u8>) {
    if value.is_ascii() {
        // The usual case (card numbers, SSNs, addresses): bytes, no decoding.
        let start = out.len();
        out.extend_from_slice(value);
        star_ascii(&mut out[start..], keep);
        return;
    }
    let total = count_alnum(value);
    let keep = if total <= keep { 0 } else { keep };
    let first_kept = total - keep;
    let mut seen = 0usize;
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii() && !c.is_ascii_alphanumeric() {
                out.push(c as u8);
                continue;
            }
            if seen >= first_kept {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            } else {
                out.push(b'*');
            }
            seen += 1;
        }
        for _ in chunk.invalid() {
            out.push(b'*');
            seen += 1;
        }
    }
}

/// `write_partial` of `span` in place, if it is ASCII (the result is as
/// long); `false`, with `span` untouched, if not.
pub(crate) fn star_partial_ascii(span: &mut [u8], keep: usize) -> bool {
    if !is_ascii(span) {
        return false;
    }
    star_ascii(span, keep);
    true
}

/// Star every alphanumeric of an ASCII `span` before the first kept one
/// in one branch-free pass (which the compiler vectorises) instead of
/// counting them all and starring with a branch per byte.
fn star_ascii(span: &mut [u8], keep: usize) {
    let cut = first_kept_ascii(span, keep);
    star_alnum(&mut span[..cut]);
}

/// Replace every ASCII alphanumeric with `*`, in fixed-size pieces the
/// compiler vectorises: starring is idempotent, so the last piece may
/// overlap the one before instead of finishing byte by byte.
fn star_alnum(bytes: &mut [u8]) {
    fn star(bytes: &mut [u8]) {
        for b in bytes {
            *b = if is_alnum(*b) { b'*' } else { *b };
        }
    }
    fn pieces<const N: usize>(bytes: &mut [u8]) {
        let (whole, rest) = bytes.as_chunks_mut::<N>();
        let overlap = !rest.is_empty();
        for piece in whole {
            star(piece);
        }
        if overlap && let Some(last) = bytes.last_chunk_mut::<N>() {
            star(last);
        }
    }
    match bytes.len() {
        16.. => pieces::<16>(bytes),
        8.. => pieces::<8>(bytes),
        _ => star(bytes),
    }
}

/// `b.is_ascii_alphanumeric()`, as two range tests joined without a branch.
#[inline(always)]
fn is_alnum(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 10) | ((b | 0x20).wrapping_sub(b'a') < 26)
}

/// `<[u8]>::is_ascii` for the short slices findings are: whole words and
/// one overlapping last word, where `is_ascii` checks the bytes past the
/// last whole word one at a time (~40 instructions a finding).
fn is_ascii(b: &[u8]) -> bool {
    use crate::scan::{HI, tail_at};
    let Some(last) = b.last_chunk::<8>() else {
        return tail_at(b) & HI == 0;
    };
    let (words, _) = b.as_chunks::<8>();
    let any = words
        .iter()
        .fold(u64::from_le_bytes(*last), |a, w| a | u64::from_le_bytes(*w));
    any & HI == 0
}

/// Where the kept tail of an ASCII value starts: at its `keep`-th last
/// alphanumeric, or at its end (all starred) when it has no more than
/// `keep` of them.
///
/// Eight bytes at a time from the end, each word classified at once:
/// findings end in their kept characters (`-6789`, `.com`), so the last
/// word usually holds the cut, and a long value with few alphanumerics
/// (a blank-padded `char(n)` column) costs a word, not a byte, per step.
fn first_kept_ascii(value: &[u8], keep: usize) -> usize {
    use crate::scan::{LO, in_range, tail_at};
    if keep == 0 {
        return value.len();
    }
    let mut seen = 0;
    let mut end = value.len();
    while end > 0 {
        let start = end.saturating_sub(8);
        let x = match value[start..end].first_chunk::<8>() {
            Some(word) => u64::from_le_bytes(*word),
            None => tail_at(&value[start..end]),
        };
        // Bit 7 of each alphanumeric byte (the padding of a short word is not).
        let mut flags = in_range(x, b'0', b'9') | in_range(x | (LO * 0x20), b'a', b'z');
        let count = flags.count_ones() as usize;
        if seen + count >= keep {
            // Drop the word's last `keep - seen - 1`: the highest flag left
            // is the cut.
            for _ in 1..keep - seen {
                flags ^= 1 << (63 - flags.leading_zeros());
            }
            let top = 63 - flags.leading_zeros();
            let cut = start + (top / 8) as usize;
            let more_before =
                flags ^ (1 << top) != 0 || value[..start].iter().any(|&b| is_alnum(b));
            return if more_before { cut } else { value.len() };
        }
        seen += count;
        end = start;
    }
    value.len()
}

/// [`first_kept_ascii`] one byte at a time from the end: the definition
/// the word-at-a-time version is tested against.
#[cfg(test)]
fn first_kept_bytes(value: &[u8], keep: usize) -> usize {
    if keep == 0 {
        return value.len();
    }
    let mut seen = 0;
    for (k, &b) in value.iter().enumerate().rev() {
        seen += usize::from(is_alnum(b));
        if seen == keep {
            let more_before = value[..k].iter().any(|&b| is_alnum(b));
            return if more_before { k } else { value.len() };
        }
    }
    value.len()
}

fn count_alnum(value: &[u8]) -> usize {
    let mut n = 0;
    for chunk in value.utf8_chunks() {
        n += chunk
            .valid()
            .chars()
            .filter(|c| !c.is_ascii() || c.is_ascii_alphanumeric())
            .count();
        n += chunk.invalid().len();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(v: &str, keep: usize) -> String {
        let mut out = Vec::new();
        write_partial(v.as_bytes(), keep, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn partial_keeps_separators_and_last_n() {
        assert_eq!(partial("123-45-6789", 4), "***-**-6789");
        assert_eq!(partial("4242424242424242", 4), "************4242");
        assert_eq!(partial("4111 1111 1111 1111", 4), "**** **** **** 1111");
        assert_eq!(partial("jane@example.com", 3), "****@*******.com");
    }

    /// The ASCII fast path against the general (UTF-8) path.
    #[test]
    fn partial_ascii_matches_general_path() {
        let general = |v: &[u8], keep: usize| {
            // A trailing invalid byte forces the general path; it is
            // always starred, so drop it and its star afterwards.
            let mut padded = v.to_vec();
            padded.push(0xff);
            let mut out = Vec::new();
            write_partial(&padded, keep + 1, &mut out);
            assert_eq!(out.pop(), Some(b'*'));
            out
        };
        let mut seed = 7u64;
        for _ in 0..5_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            let v: Vec<u8> = (0..len)
                .map(|i| b"a1-. Z9_@"[((seed >> (i % 50)) % 9) as usize])
                .collect();
            for keep in 0..6 {
                let mut fast = Vec::new();
                write_partial(&v, keep, &mut fast);
                assert_eq!(fast, general(&v, keep), "{v:?} keep {keep}");
            }
        }
    }

    /// The word-at-a-time cut and ASCII check against the byte loops, at
    /// every length up to 40 and every `keep` up to 10, and on long
    /// blank-padded values.
    #[test]
    fn cut_and_ascii_match_the_byte_loops() {
        let mut next = crate::scan::tests::splitmix(0xc070_f5a4_u64);
        for round in 0..100_000 {
            let len = round % 41;
            let v: Vec<u8> = (0..len)
                .map(|_| match next() % 16 {
                    0 => next() as u8,
                    1..=4 => b"-. @_/:Z`{[0"[(next() % 12) as usize],
                    _ => b"0123456789azAZ"[(next() % 14) as usize],
                })
                .collect();
            assert_eq!(is_ascii(&v), v.is_ascii(), "{v:?}");
            if v.is_ascii() {
                for keep in 0..=10 {
                    let want = first_kept_bytes(&v, keep);
                    assert_eq!(first_kept_ascii(&v, keep), want, "{v:?} keep {keep}");
                }
            }
        }
        // Long values, mostly blanks (`char(n)` padding), a few alphanumerics.
        for round in 0..20_000 {
            let len = 40 + round % 90;
            let v: Vec<u8> = (0..len)
                .map(|_| match next() % 32 {
                    0 => b"0123456789azAZ"[(next() % 14) as usize],
                    1 => b"-.@"[(next() % 3) as usize],
                    _ => b' ',
                })
                .collect();
            for keep in 0..=6 {
                let want = first_kept_bytes(&v, keep);
                assert_eq!(first_kept_ascii(&v, keep), want, "{v:?} keep {keep}");
            }
        }
    }

    /// The pieces of `star_alnum` against a byte loop, at every length.
    #[test]
    fn star_alnum_stars_every_alphanumeric() {
        let all: Vec<u8> = (0..=255u8).collect();
        for start in 0..64 {
            for len in 0..=all.len() - start.max(1) {
                let mut v = all[start..start + len].to_vec();
                let want: Vec<u8> = v
                    .iter()
                    .map(|&b| if b.is_ascii_alphanumeric() { b'*' } else { b })
                    .collect();
                star_alnum(&mut v);
                assert_eq!(v, want, "{start}+{len}");
            }
        }
    }

    #[test]
    fn partial_never_reveals_short_values() {
        assert_eq!(partial("1234", 4), "****");
        assert_eq!(partial("12", 4), "**");
        assert_eq!(partial("", 4), "");
        assert_eq!(partial("12345", 0), "*****");
    }

    #[test]
    fn partial_non_ascii_and_invalid_utf8() {
        assert_eq!(partial("Zoë-Åström", 2), "***-****öm");
        let mut out = Vec::new();
        write_partial(b"ab\xffcd", 1, &mut out);
        assert_eq!(out, b"****d");
        let mut out = Vec::new();
        write_partial(b"abc\xff", 1, &mut out);
        assert_eq!(out, b"****", "an invalid byte is never kept");
    }

    #[test]
    fn token_is_stable_and_keyed() {
        let a = hash_key(b"key-a").unwrap();
        let b = hash_key(b"key-b").unwrap();
        let tok = |k: &HashKey, v: &[u8]| {
            let mut out = Vec::new();
            write_token(k, v, &mut out);
            String::from_utf8(out).unwrap()
        };
        let t = tok(&a, b"123-45-6789");
        assert_eq!(t.len(), 4 + TOKEN_HEX_LEN);
        assert!(t.starts_with("tok_"));
        assert!(
            t[4..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(t, tok(&a, b"123-45-6789"));
        assert_ne!(t, tok(&b, b"123-45-6789"));
        assert_ne!(t, tok(&a, b"123-45-6780"));
    }
}
