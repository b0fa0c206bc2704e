//! A whole-value gate in front of the scan loop: can this value hold a
//! finding of an enabled built-in detector at all?
//!
//! Most values of a PII-free column cannot, and the scan loop pays a
//! dispatch for every digit run or capital it meets (a timestamp has six).
//! The gate classifies the value sixteen bytes at a time into one bit mask
//! per byte class (64 bytes per `u64`, bit `i` = byte `i`), and tests each
//! detector's shortest necessary shape with shifts and ands: a card needs
//! 13 digits in a row or `dddd` + space/dash + `ddd`, an SSN `ddd-dd-dddd`
//! or nine digits, and so on (see [`hits`]). Only when a shape is present
//! does the scan loop run, unchanged, so results cannot differ; a test
//! checks the gate never says no where the unfiltered loop finds something.
//!
//! Values longer than 64 bytes (prose, mostly) first get a quick pass with
//! six classes only (digits, capitals, space, `e`, `b`, and `@+(:`), which
//! letter-only text rarely survives; the exact pass then classifies them in
//! 64-byte blocks that start every 48 bytes: every shape spans at most 15
//! bytes, so each occurrence lies wholly inside some block. The one shape
//! that can be longer, an uncompressed IPv6 address, is tested on the whole
//! value's colon count.
//!
//! The SSE2 compares are x86-64 only (one small `unsafe` call, see
//! `chunk_masks`); other targets use a portable byte loop, and a test holds
//! the two to the same result.

use super::{AWS_KEY, BEARER, CARD, EMAIL, IBAN, IP, JWT, PHONE, SSN, tail_at};

// Byte classes, by index into a mask array.
const DIGIT: usize = 0;
const ZERO: usize = 1;
const UPPER: usize = 2;
const DASH: usize = 3;
const DOT: usize = 4;
const SPACE: usize = 5;
const COLON: usize = 6;
const PLUS: usize = 7;
const LPAREN: usize = 8;
const RPAREN: usize = 9;
const AT: usize = 10;
const CAP_A: usize = 11;
const CAP_J: usize = 12;
const LOWER_Y: usize = 13;
/// `e` or `E`.
const E: usize = 14;
/// `b` or `B`.
const B: usize = 15;
/// `@`, `+`, `(` or `:`: the anchors of email, E.164, `(415)` and IPv6.
const SPECIAL: usize = 16;
const CLASSES: usize = 17;
/// The classes [`quick_hits`] needs: a first, cheaper pass over a block.
/// (The SSE2 code lists them itself; this list defines them for the
/// portable code and the tests.)
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
const QUICK: [usize; 6] = [DIGIT, UPPER, SPACE, E, B, SPECIAL];

const BLOCK: usize = 64;
/// Longest span (minus one) of any shape [`hits`] tests: a dotted quad.
const REACH: usize = 14;
/// Block starts: consecutive blocks overlap by more than [`REACH`].
const STRIDE: usize = 48;
const _: () = assert!(STRIDE + REACH < BLOCK);

/// Whether `v` may hold a finding of a detector in `enabled` (bit `id` per
/// detector). `false` means the scan loop would find nothing.
pub(super) fn may_match(v: &[u8], enabled: u16) -> bool {
    // A value of one block is classified once: most values that short are
    // timestamps, ids or addresses, which the quick pass lets through.
    (v.len() <= BLOCK || quick_pass(v)) && full_pass(v, enabled)
}

/// A first, cheaper pass over the whole value with the `QUICK` classes
/// only, in blocks that do not overlap (a shape crossing a block boundary
/// is seen through the next block's masks). Prose and other letter-only
/// text stops here.
fn quick_pass(v: &[u8]) -> bool {
    let mut blocks = v.chunks(BLOCK).map(block_masks::<false>);
    let Some(mut cur) = blocks.next() else {
        return false;
    };
    let mut digits = 0;
    loop {
        let next = blocks.next();
        digits += cur[DIGIT].count_ones();
        // Every card, SSN, North-American phone and dotted quad has at
        // least four digits.
        if digits >= 4 || quick_hits(&cur, next.as_ref().unwrap_or(&[0; CLASSES])) {
            return true;
        }
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
}

/// Whether [`hits`] can find anything other than a digit shape starting
/// in block `m` (followed by block `next`), from the `QUICK` classes:
/// each line is implied by the matching line of `hits`.
#[inline(always)]
fn quick_hits(m: &[u64; CLASSES], next: &[u64; CLASSES]) -> bool {
    // Class `c` of byte `i + k` at bit `i`, across the block boundary.
    let shr = |c: usize, k: u32| (m[c] >> k) | (next[c] << (64 - k));
    let uu = m[UPPER] & shr(UPPER, 1);
    // `(415)`, E.164, email and IPv6 need a `SPECIAL` byte.
    m[SPECIAL] != 0
        // IBAN (`DE89`), AWS (`AKIA`).
        || uu & (shr(DIGIT, 2) | (shr(UPPER, 2) & shr(UPPER, 3))) != 0
        // JWT (`eyJ`), bearer.
        || m[E] & shr(UPPER, 2) != 0
        || m[B] & shr(E, 1) & shr(E, 4) & shr(SPACE, 6) != 0
}

/// The exact shapes of [`hits`], in overlapping blocks.
fn full_pass(v: &[u8], enabled: u16) -> bool {
    let mut colons = 0;
    let mut start = 0;
    loop {
        let end = v.len().min(start + BLOCK);
        let m = block_masks::<true>(&v[start..end]);
        if hits(&m) & enabled != 0 {
            return true;
        }
        // Overlapping blocks count some colons twice: an over-estimate,
        // which only lets more values through.
        colons += m[COLON].count_ones();
        if end == v.len() {
            break;
        }
        start += STRIDE;
    }
    // `is_ipv6` wants `::` (tested per block by `hits`) or six or seven
    // colons, which may be further apart than a block.
    enabled & (1 << IP) != 0 && colons >= 6
}

/// Detectors (bit `id`) whose shortest necessary shape occurs in a block.
/// Each line mirrors the checks its validator makes before it can report
/// anything; being looser than the validator only costs a scan.
#[inline(always)]
fn hits(m: &[u64; CLASSES]) -> u16 {
    // `x >> k` puts the class of byte `i + k` at bit `i`.
    let d = m[DIGIT];
    let d2 = d & (d >> 1);
    let d3 = d2 & (d >> 2);
    let d4 = d2 & (d2 >> 2);
    let d8 = d4 & (d4 >> 4);
    let d9 = d8 & (d >> 8);
    let d13 = d9 & (d4 >> 9);
    let (dash, dot, space) = (m[DASH], m[DOT], m[SPACE]);
    let sep = dash | dot | space;
    let upper = m[UPPER];

    let card = d13 | (d4 & ((dash | space) >> 4) & (d3 >> 5));
    let ssn = d9 | (d3 & (dash >> 3) & (d2 >> 4) & (dash >> 6) & (d4 >> 7));
    let nanp = d3 & (sep >> 3) & (d3 >> 4) & (sep >> 7) & (d4 >> 8);
    let paren = m[LPAREN] & (d3 >> 1) & (m[RPAREN] >> 4);
    let e164 = m[PLUS] & ((d & !m[ZERO]) >> 1);
    let ipv4 = at_least_3(d & (dot >> 1) & (d >> 2));
    let ipv6 = m[COLON] & (m[COLON] >> 1);
    let iban = upper & (upper >> 1) & (d >> 2) & (d >> 3);
    // Every AWS prefix is `A??A`.
    let aws = m[CAP_A] & (upper >> 1) & (upper >> 2) & (m[CAP_A] >> 3);
    let jwt = m[E] & (m[LOWER_Y] >> 1) & (m[CAP_J] >> 2);
    // `bearer` and a space (`Berlin ` is not).
    let bearer = m[B] & (m[E] >> 1) & (m[E] >> 4) & (space >> 6);

    let bit = |detector: u16, hit: bool| u16::from(hit) << detector;
    bit(CARD, card != 0)
        | bit(SSN, ssn != 0)
        | bit(EMAIL, m[AT] != 0)
        | bit(PHONE, (nanp | paren | e164) != 0)
        | bit(IBAN, iban != 0)
        | bit(IP, ipv4 || ipv6 != 0)
        | bit(JWT, jwt != 0)
        | bit(AWS_KEY, aws != 0)
        | bit(BEARER, bearer != 0)
}

/// Up to sixteen bytes as two zero-padded little-endian words. The last
/// piece of a value is padded from overlapping loads: a copy into a buffer
/// would cost a `memcpy` call and stall the 16-byte load that follows it.
#[inline(always)]
fn padded_chunk(piece: &[u8]) -> (u64, u64) {
    debug_assert!(piece.len() <= 16);
    match piece.split_at_checked(8) {
        Some((lo, hi)) => (word(lo), word(hi)),
        None => (tail_at(piece), 0),
    }
}

/// Up to eight bytes as a zero-padded little-endian word.
#[inline(always)]
fn word(b: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(b) {
        Ok(w) => u64::from_le_bytes(w),
        Err(_) => tail_at(b),
    }
}

/// Three bits or more set (`count_ones` is a dozen instructions without
/// `popcnt`, which the x86-64 baseline lacks).
#[inline(always)]
fn at_least_3(x: u64) -> bool {
    // Clearing the lowest set bit twice leaves some bit only if there were three.
    let x = x & x.wrapping_sub(1);
    x & x.wrapping_sub(1) != 0
}

/// The class masks of up to 64 bytes; bits past the end are clear (a zero
/// byte is in no class).
/// Only the `QUICK` classes unless `FULL` (the others are left clear).
#[inline(always)]
fn block_masks<const FULL: bool>(block: &[u8]) -> [u64; CLASSES] {
    debug_assert!(block.len() <= BLOCK);
    let mut m = [0u64; CLASSES];
    for (k, piece) in block.chunks(16).enumerate() {
        let (lo, hi) = padded_chunk(piece);
        let c = chunk_masks::<FULL>(lo, hi);
        for (acc, bits) in m.iter_mut().zip(c) {
            *acc |= u64::from(bits) << (16 * k);
        }
    }
    m
}

/// Class masks of sixteen bytes: SSE2 compares, three instructions a class
/// for all sixteen bytes, where the portable definition takes a branch-free
/// but byte-at-a-time loop.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn chunk_masks<const FULL: bool>(lo: u64, hi: u64) -> [u16; CLASSES] {
    // SAFETY: the only requirement of a `#[target_feature]` function is that
    // the CPU has the feature; this code is compiled only when SSE2 is
    // statically enabled (it is part of the x86-64 baseline), so every CPU
    // that runs it has SSE2. The function takes no pointers.
    #[allow(unsafe_code)]
    unsafe {
        chunk_masks_sse2::<FULL>(lo, hi)
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn chunk_masks_sse2<const FULL: bool>(lo: u64, hi: u64) -> [u16; CLASSES] {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set_epi64x, _mm_set1_epi8,
    };
    let x = _mm_set_epi64x(hi as i64, lo as i64);
    let splat = |b: u8| _mm_set1_epi8(b as i8);
    // Bit 7 of each lane to bit `lane`; the mask fits in 16 bits.
    let bits = |y: __m128i| _mm_movemask_epi8(y) as u16;
    let eq = |b: u8| bits(_mm_cmpeq_epi8(x, splat(b)));
    // `lo..=hi` moved to the bottom of the signed range: one compare.
    let range = |lo: u8, hi: u8| {
        let shifted = _mm_add_epi8(x, splat(0x80u8.wrapping_sub(lo)));
        bits(_mm_cmplt_epi8(shifted, splat(0x80 + (hi - lo) + 1)))
    };
    let folded = _mm_or_si128(x, splat(0x20));
    let eq_folded = |b: u8| bits(_mm_cmpeq_epi8(folded, splat(b)));
    let mut m = [0u16; CLASSES];
    m[DIGIT] = range(b'0', b'9');
    m[UPPER] = range(b'A', b'Z');
    m[SPACE] = eq(b' ');
    m[E] = eq_folded(b'e');
    m[B] = eq_folded(b'b');
    let hit = |b: u8| _mm_cmpeq_epi8(x, splat(b));
    let pair = |a: u8, b: u8| _mm_or_si128(hit(a), hit(b));
    m[SPECIAL] = bits(_mm_or_si128(pair(b'@', b'+'), pair(b'(', b':')));
    if FULL {
        m[ZERO] = eq(b'0');
        m[DASH] = eq(b'-');
        m[DOT] = eq(b'.');
        m[COLON] = eq(b':');
        m[PLUS] = eq(b'+');
        m[LPAREN] = eq(b'(');
        m[RPAREN] = eq(b')');
        m[AT] = eq(b'@');
        m[CAP_A] = eq(b'A');
        m[CAP_J] = eq(b'J');
        m[LOWER_Y] = eq(b'y');
    }
    m
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn chunk_masks<const FULL: bool>(lo: u64, hi: u64) -> [u16; CLASSES] {
    let mut m = chunk_masks_scalar(lo, hi);
    if !FULL {
        for (class, bits) in m.iter_mut().enumerate() {
            if !QUICK.contains(&class) {
                *bits = 0;
            }
        }
    }
    m
}

/// The plain definition of the classes, one byte at a time.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn chunk_masks_scalar(lo: u64, hi: u64) -> [u16; CLASSES] {
    let mut m = [0u16; CLASSES];
    let bytes = (u128::from(hi) << 64 | u128::from(lo)).to_le_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let classes = [
            (DIGIT, b.is_ascii_digit()),
            (ZERO, b == b'0'),
            (UPPER, b.is_ascii_uppercase()),
            (DASH, b == b'-'),
            (DOT, b == b'.'),
            (SPACE, b == b' '),
            (COLON, b == b':'),
            (PLUS, b == b'+'),
            (LPAREN, b == b'('),
            (RPAREN, b == b')'),
            (AT, b == b'@'),
            (CAP_A, b == b'A'),
            (CAP_J, b == b'J'),
            (LOWER_Y, b == b'y'),
            (E, b.eq_ignore_ascii_case(&b'e')),
            (B, b.eq_ignore_ascii_case(&b'b')),
            (SPECIAL, b"@+(:".contains(&b)),
        ];
        for (class, on) in classes {
            m[class] |= u16::from(on) << i;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_masks_match_the_plain_definition() {
        let mut chunk = [0u8; 16];
        for start in 0..=255u8 {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = start.wrapping_add((i as u8).wrapping_mul(17));
            }
            let lo = u64::from_le_bytes(chunk[..8].try_into().unwrap());
            let hi = u64::from_le_bytes(chunk[8..].try_into().unwrap());
            let want = chunk_masks_scalar(lo, hi);
            assert_eq!(chunk_masks::<true>(lo, hi), want, "{chunk:?}");
            let quick = chunk_masks::<false>(lo, hi);
            for (class, (got, want)) in quick.iter().zip(want).enumerate() {
                let want = if QUICK.contains(&class) { want } else { 0 };
                assert_eq!(*got, want, "class {class} of {chunk:?}");
            }
        }
    }

    #[test]
    fn block_masks_pad_with_nothing() {
        let v: Vec<u8> = (0..64u8)
            .map(|i| b"09 -.:+()@AJyeEbBz"[usize::from(i) % 18])
            .collect();
        for len in 0..=64 {
            let m = block_masks::<true>(&v[..len]);
            let mut want = [0u64; CLASSES];
            for (k, piece) in v[..len].chunks(16).enumerate() {
                let mut bytes = [0u8; 16];
                bytes[..piece.len()].copy_from_slice(piece);
                let lo = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                let hi = u64::from_le_bytes(bytes[8..].try_into().unwrap());
                for (w, bits) in want.iter_mut().zip(chunk_masks_scalar(lo, hi)) {
                    *w |= u64::from(bits) << (16 * k);
                }
            }
            assert_eq!(m, want, "len {len}");
        }
    }

    #[test]
    fn at_least_3_counts() {
        for x in [
            0u64,
            1,
            3,
            5,
            7,
            0x8000_0000_0000_0001,
            u64::MAX,
            0x0101_0000,
        ] {
            assert_eq!(at_least_3(x), x.count_ones() >= 3, "{x:#x}");
        }
    }

    #[test]
    fn blocks_overlap_enough() {
        // A shape at the very end of a long value, in the last block only.
        let mut v = "x".repeat(200);
        v.push_str(" 1.2.3.4");
        assert!(may_match(v.as_bytes(), 1 << IP));
        assert!(!may_match("x".repeat(200).as_bytes(), 0x1ff));
        // Straddling the first two blocks' boundary.
        for pad in 40..70 {
            let v = format!("{} 123-45-6789 {}", "y".repeat(pad), "z".repeat(100));
            assert!(may_match(v.as_bytes(), 1 << SSN), "{pad}");
            assert!(!may_match(v.as_bytes(), 1 << CARD), "{pad}");
        }
    }
}
