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
//! does the scan loop run (from the masks of the value's first block, which
//! the gate hands over), so results cannot differ; a test checks the gate
//! never says no where the unfiltered loop finds something.
//!
//! Values longer than 64 bytes (prose, mostly) first get a quick pass with
//! five classes only (capitals, `e`, `b`, `y`, and digits with `@+(:`),
//! which letter-only text rarely survives; the exact pass then classifies them in
//! 64-byte blocks that start every 48 bytes: every shape spans at most 15
//! bytes, so each occurrence lies wholly inside some block. The one shape
//! that can be longer, an uncompressed IPv6 address, is tested on the whole
//! value's colon count.
//!
//! The SSE2 compares are x86-64 only (one small `unsafe` call, see
//! `block_masks`); other targets classify eight bytes at a time in a `u64`
//! (SWAR), and a test holds both to a plain byte-at-a-time definition.

use super::{AWS_KEY, BEARER, CARD, EMAIL, IBAN, IP, JWT, PHONE, SSN, tail_at};

// Byte classes, by index into a mask array. The scan loop reads some of
// them too (`scan::worth_mask`).
pub(super) const DIGIT: usize = 0;
pub(super) const UPPER: usize = 1;
const DASH: usize = 2;
const DOT: usize = 3;
const SPACE: usize = 4;
pub(super) const COLON: usize = 5;
pub(super) const PLUS: usize = 6;
pub(super) const LPAREN: usize = 7;
pub(super) const AT: usize = 8;
pub(super) const CAP_J: usize = 9;
const LOWER_Y: usize = 10;
/// `e` or `E`.
pub(super) const E: usize = 11;
/// `b` or `B`.
pub(super) const B: usize = 12;
/// A digit, `@`, `+`, `(` or `:`: every finding but IBAN, AWS keys, JWTs
/// and bearer tokens has one.
const SPECIAL: usize = 13;
/// `a`–`z`.
pub(super) const LOWER: usize = 14;
/// Base64url: alphanumerics, `-` and `_` (JWT segments).
pub(super) const B64URL: usize = 15;
/// Bearer token characters: alphanumerics and `-._~+/=`.
pub(super) const TOKEN: usize = 16;
pub(super) const CLASSES: usize = 17;

/// A set of classes (bit `class`): which masks [`block_masks`] computes;
/// the others are left clear.
const fn set(classes: &[usize]) -> u32 {
    let mut s = 0;
    let mut k = 0;
    while k < classes.len() {
        s |= 1 << classes[k];
        k += 1;
    }
    s
}
/// The classes [`quick_hits`] needs: a first, cheaper pass over a block.
const QUICK: u32 = set(&[UPPER, E, B, SPECIAL, LOWER_Y]);
/// The classes [`hits`] needs, plus `LOWER`, so that the scan loop can
/// reuse the masks of a value's first block (see [`check`]). Three rarer
/// tests (a `0` after `+`, the `A`s of `A??A`, the `y` of `eyJ`) read the
/// bytes instead, only where the other classes leave a candidate: each
/// was a class computed for every block.
pub(super) const FULL: u32 = set(&[
    DIGIT, UPPER, DASH, DOT, SPACE, COLON, PLUS, LPAREN, AT, CAP_J, E, B, LOWER,
]);
/// The classes the scan loop needs (`scan::worth_mask`).
pub(super) const LOOP: u32 = set(&[DIGIT, UPPER, LOWER, CAP_J, E, B, PLUS, LPAREN, AT, COLON]);
const _: () = assert!(LOOP & FULL == LOOP);
/// For [`run_of`].
pub(super) const B64URL_SET: u32 = set(&[B64URL]);
pub(super) const TOKEN_SET: u32 = set(&[TOKEN]);

/// The class masks of a block: bit `i` of mask `c` = byte `i` is in class `c`.
pub(super) type Masks = [u64; CLASSES];

pub(super) const BLOCK: usize = 64;
/// Longest span (minus one) of any shape [`hits`] tests: a dotted quad.
const REACH: usize = 14;
/// Block starts: consecutive blocks overlap by more than [`REACH`].
const STRIDE: usize = 48;
const _: () = assert!(STRIDE + REACH < BLOCK);

/// Whether `v` may hold a finding of a detector in `enabled` (bit `id` per
/// detector): `None` means the scan loop would find nothing; otherwise the
/// triggers worth a look in the value's first block (its first [`BLOCK`]
/// bytes; `scan::worth_mask`), for the scan loop to start from.
///
/// The triggers are those of the block starting at the returned offset,
/// not always 0: for a value longer than a block, the first block in which
/// the quick pass sees a shape's first byte. No finding starts before it
/// (see [`quick_pass`]), and the scan loop starts there.
pub(super) fn check(v: &[u8], enabled: u16) -> Option<(usize, u64)> {
    // A value of one block is classified once: most values that short are
    // timestamps, ids or addresses, which the quick pass lets through.
    let start = if v.len() > BLOCK { quick_pass(v)? } else { 0 };
    // With every detector on (the usual policy), the switches fold away
    // and the shapes are one chain of ors: ~40 instructions a value less,
    // most of them spills of the shapes kept for the switches.
    if enabled == ALL {
        exact_from::<true>(v, enabled, start)
    } else {
        exact_from::<false>(v, enabled, start)
    }
}

/// Every built-in detector: what most policies enable.
const ALL: u16 = (1 << 9) - 1;

/// The exact pass of [`check`] from `start`.
#[inline(always)]
fn exact_from<const ALL_ON: bool>(v: &[u8], enabled: u16, start: usize) -> Option<(usize, u64)> {
    let end = v.len().min(start + BLOCK);
    let first = block_masks::<FULL>(&v[start..end]);
    let prev = if start > 0 { v[start - 1] } else { 0 };
    full_pass::<ALL_ON>(v, enabled, start, &first)
        .then(|| (start, super::worth_mask(&first, prev, super::at(v, end))))
}

#[cfg(test)]
pub(super) fn may_match(v: &[u8], enabled: u16) -> bool {
    check(v, enabled).is_some()
}

/// A first, cheaper pass over the whole value with the `QUICK` classes
/// only, in blocks that do not overlap (a shape crossing a block boundary
/// is seen through the next block's masks). Prose and other letter-only
/// text stops here (`None`).
///
/// Otherwise the start of the first block that holds a `SPECIAL` byte or
/// the start of a `quick_hits` shape. Every shape of [`hits`] begins with
/// one of those (a digit, `@`, `+`, `(` or `:`, or the first capital, `e`
/// or `b` of a `quick_hits` shape), so none begins before that block, and
/// no colon lies before it either.
fn quick_pass(v: &[u8]) -> Option<usize> {
    let mut blocks = v.chunks(BLOCK);
    let mut cur = block_masks::<QUICK>(blocks.next()?);
    let mut start = 0;
    loop {
        if cur[SPECIAL] != 0 {
            return Some(start);
        }
        let next = blocks.next().map(block_masks::<QUICK>);
        if quick_hits(&cur, next.as_ref().unwrap_or(&[0; CLASSES])) {
            return Some(start);
        }
        cur = next?;
        start += BLOCK;
    }
}

/// Whether [`hits`] can find a shape without a `SPECIAL` byte (IBANs have
/// digits, but they start with two capitals) starting in block `m`
/// (followed by block `next`), from the `QUICK` classes: each line is
/// implied by the matching line of `hits`.
#[inline(always)]
fn quick_hits(m: &[u64; CLASSES], next: &[u64; CLASSES]) -> bool {
    // Class `c` of byte `i + k` at bit `i`, across the block boundary.
    let shr = |c: usize, k: u32| (m[c] >> k) | (next[c] << (64 - k));
    // IBAN (`DE`), AWS (`AKIA`).
    m[UPPER] & shr(UPPER, 1) != 0
        // JWT (`eyJ`; `e` and a capital two bytes on are common in prose:
        // `the Thanks`), bearer.
        || m[E] & shr(LOWER_Y, 1) & shr(UPPER, 2) != 0
        || m[B] & shr(E, 1) & shr(E, 4) != 0
}

/// The exact shapes of [`hits`] starting at or after `start`, in
/// overlapping blocks from there, the first of which (`first`) is
/// classified already.
fn full_pass<const ALL_ON: bool>(v: &[u8], enabled: u16, mut start: usize, first: &Masks) -> bool {
    if hits::<ALL_ON>(first, &v[start..v.len().min(start + BLOCK)], enabled) {
        return true;
    }
    let mut colons = first[COLON].count_ones();
    while start + BLOCK < v.len() {
        start += STRIDE;
        let block = &v[start..v.len().min(start + BLOCK)];
        let m = block_masks::<FULL>(block);
        if hits::<ALL_ON>(&m, block, enabled) {
            return true;
        }
        // Overlapping blocks count some colons twice: an over-estimate,
        // which only lets more values through.
        colons += m[COLON].count_ones();
    }
    // `is_ipv6` wants `::` (tested per block by `hits`) or six or seven
    // colons, which may be further apart than a block.
    enabled & (1 << IP) != 0 && colons >= 6
}

/// Whether the shortest necessary shape of a detector in `enabled` (bit
/// `id`) occurs in `block` (`m` its masks). Each line mirrors the checks
/// its validator makes before it can report anything; being looser than
/// the validator only costs a scan.
#[inline(always)]
fn hits<const ALL_ON: bool>(m: &Masks, block: &[u8], enabled: u16) -> bool {
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
    // `(ddd`, looser than the validator's `(ddd)`: one class fewer to
    // compute for every value, and text rarely has `(` before digits.
    let paren = m[LPAREN] & (d3 >> 1);
    let ipv4 = at_least_3(d & (dot >> 1) & (d >> 2));
    let ipv6 = m[COLON] & (m[COLON] >> 1);
    let iban = upper & (upper >> 1) & (d >> 2) & (d >> 3);
    // `bearer` and a space (`Berlin ` is not).
    let bearer = m[B] & (m[E] >> 1) & (m[E] >> 4) & (space >> 6);

    // A shape counts only if its detector is on: all ones, or zero.
    let on = |detector: u16| {
        if ALL_ON {
            u64::MAX
        } else {
            0u64.wrapping_sub(u64::from((enabled >> detector) & 1))
        }
    };
    let shapes = (card & on(CARD))
        | (ssn & on(SSN))
        | (m[AT] & on(EMAIL))
        | ((nanp | paren) & on(PHONE))
        | ((ipv6 | u64::from(ipv4)) & on(IP))
        | (iban & on(IBAN))
        | (bearer & on(BEARER));
    if shapes != 0 {
        return true;
    }
    // The rarer tests: candidates from the masks, then their bytes (which
    // lie in the block, as the masks have their neighbours' bits).
    let byte = |i: usize| block.get(i).copied().unwrap_or(0);
    // E.164: `+` and a digit other than `0` (`+00` ends every timestamp).
    let e164 = m[PLUS] & (d >> 1) & on(PHONE);
    // Every AWS prefix is `A??A`, all capitals.
    let aws = upper & (upper >> 1) & (upper >> 2) & (upper >> 3) & on(AWS_KEY);
    let jwt = m[E] & (m[CAP_J] >> 2) & on(JWT);
    any_bit(e164, |i| byte(i + 1) != b'0')
        || any_bit(aws, |i| byte(i) == b'A' && byte(i + 3) == b'A')
        || any_bit(jwt, |i| byte(i + 1) == b'y')
}

/// Whether `f` holds for the index of some set bit of `bits`.
#[inline(always)]
fn any_bit(mut bits: u64, f: impl Fn(usize) -> bool) -> bool {
    while bits != 0 {
        if f(bits.trailing_zeros() as usize) {
            return true;
        }
        bits &= bits - 1;
    }
    false
}

/// Length of the run of bytes of `class` (in `SET`) from `i`: a block of
/// up to 64 bytes classified at a time (JWT segments and bearer tokens
/// are tens of bytes long).
pub(super) fn run_of<const SET: u32>(v: &[u8], class: usize, i: usize) -> usize {
    let mut p = i;
    while let Some(rest) = v.get(p..).filter(|r| !r.is_empty()) {
        let block = &rest[..rest.len().min(BLOCK)];
        // Bits past the block are clear, so the run stops within it or at its end.
        let n = (!block_masks::<SET>(block)[class]).trailing_zeros() as usize;
        p += n;
        if n < BLOCK {
            break;
        }
    }
    p - i
}

/// Up to sixteen bytes as two zero-padded little-endian words. The last
/// piece of a value is padded from overlapping loads: a copy into a buffer
/// would cost a `memcpy` call and stall the 16-byte load that follows it.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
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

/// The masks of the classes in `SET` over up to 64 bytes; bits past the
/// end, and the masks of classes not in `SET`, are clear (a zero byte is
/// in no class).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
pub(super) fn block_masks<const SET: u32>(block: &[u8]) -> Masks {
    debug_assert!(block.len() <= BLOCK);
    // SAFETY: the only requirement of a `#[target_feature]` function is that
    // the CPU has the feature; this code is compiled only when SSE2 is
    // statically enabled (it is part of the x86-64 baseline), so every CPU
    // that runs it has SSE2. The function takes no pointers.
    #[allow(unsafe_code)]
    unsafe {
        // As many 16-byte chunks as the block has, each count unrolled.
        match block.len() {
            0..=16 => block_masks_sse2::<SET, 1>(block),
            17..=32 => block_masks_sse2::<SET, 2>(block),
            33..=48 => block_masks_sse2::<SET, 3>(block),
            _ => block_masks_sse2::<SET, 4>(block),
        }
    }
}

/// Sixteen bytes a compare: three instructions a class for sixteen bytes,
/// and one `movemask` each, shifted into place in the block's mask.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn block_masks_sse2<const SET: u32, const N: usize>(block: &[u8]) -> Masks {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set_epi64x, _mm_set1_epi8, _mm_setzero_si128,
    };
    let mut x = [_mm_setzero_si128(); N];
    for (k, chunk) in x.iter_mut().enumerate() {
        let piece = block.get(16 * k..).unwrap_or_default();
        let (lo, hi) = padded_chunk(&piece[..piece.len().min(16)]);
        *chunk = _mm_set_epi64x(hi as i64, lo as i64);
    }
    let splat = |b: u8| _mm_set1_epi8(b as i8);
    let eq = |y: __m128i, b: u8| _mm_cmpeq_epi8(y, splat(b));
    // `lo..=hi` moved to the bottom of the signed range: one compare.
    let range = |y: __m128i, lo: u8, hi: u8| {
        let shifted = _mm_add_epi8(y, splat(0x80u8.wrapping_sub(lo)));
        _mm_cmplt_epi8(shifted, splat(0x80 + (hi - lo) + 1))
    };
    let folded = |y: __m128i| _mm_or_si128(y, splat(0x20));
    let mut m = [0u64; CLASSES];
    // Class `$c` (when in `SET`): bit 7 of each lane of `$e` (`$y` being
    // each chunk in turn) to bit `lane` of the chunk's 16 bits.
    macro_rules! class {
        ($c:expr, |$y:ident| $e:expr) => {
            if SET & (1 << $c) != 0 {
                let mut bits = 0u64;
                for (k, &$y) in x.iter().enumerate() {
                    bits |= u64::from(_mm_movemask_epi8($e) as u16) << (16 * k);
                }
                m[$c] = bits;
            }
        };
    }
    class!(DIGIT, |y| range(y, b'0', b'9'));
    class!(UPPER, |y| range(y, b'A', b'Z'));
    class!(LOWER, |y| range(y, b'a', b'z'));
    class!(SPACE, |y| eq(y, b' '));
    class!(E, |y| eq(folded(y), b'e'));
    class!(B, |y| eq(folded(y), b'b'));
    class!(SPECIAL, |y| _mm_or_si128(
        _mm_or_si128(range(y, b'0', b':'), eq(y, b'@')),
        _mm_or_si128(eq(y, b'('), eq(y, b'+'))
    ));
    class!(DASH, |y| eq(y, b'-'));
    class!(DOT, |y| eq(y, b'.'));
    class!(COLON, |y| eq(y, b':'));
    class!(PLUS, |y| eq(y, b'+'));
    class!(LPAREN, |y| eq(y, b'('));
    class!(AT, |y| eq(y, b'@'));
    class!(CAP_J, |y| eq(y, b'J'));
    class!(LOWER_Y, |y| eq(y, b'y'));
    let alnum = |y: __m128i| _mm_or_si128(range(y, b'0', b'9'), range(folded(y), b'a', b'z'));
    class!(B64URL, |y| _mm_or_si128(
        alnum(y),
        _mm_or_si128(eq(y, b'-'), eq(y, b'_'))
    ));
    class!(TOKEN, |y| _mm_or_si128(
        _mm_or_si128(alnum(y), range(y, b'-', b'/')),
        _mm_or_si128(
            _mm_or_si128(eq(y, b'_'), eq(y, b'~')),
            _mm_or_si128(eq(y, b'+'), eq(y, b'='))
        )
    ));
    m
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
pub(super) fn block_masks<const SET: u32>(block: &[u8]) -> Masks {
    block_masks_swar::<SET>(block)
}

/// The portable classification: eight bytes at a time in a `u64` (SWAR),
/// each class's per-byte flags (bit 7 of each byte) gathered into eight
/// bits by one multiplication.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline(always)]
fn block_masks_swar<const SET: u32>(block: &[u8]) -> Masks {
    debug_assert!(block.len() <= BLOCK);
    /// Bit 7 of byte `j` to bit `j`: the products of distinct bits land on
    /// distinct bits (no carries), and byte `j`'s on bit `56 + j`.
    fn gather(flags: u64) -> u64 {
        (flags & HI).wrapping_mul(0x0002_0408_1020_4081) >> 56
    }
    let mut m = [0u64; CLASSES];
    for (k, piece) in block.chunks(8).enumerate() {
        let x = word(piece);
        let folded = x | (LO * 0x20);
        macro_rules! class {
            ($c:expr, $flags:expr) => {
                if SET & (1 << $c) != 0 {
                    m[$c] |= gather($flags) << (8 * k);
                }
            };
        }
        class!(DIGIT, in_range(x, b'0', b'9'));
        class!(UPPER, in_range(x, b'A', b'Z'));
        class!(LOWER, in_range(x, b'a', b'z'));
        class!(SPACE, eq(x, b' '));
        class!(E, eq(folded, b'e'));
        class!(B, eq(folded, b'b'));
        class!(
            SPECIAL,
            in_range(x, b'0', b':') | eq(x, b'@') | eq(x, b'+') | eq(x, b'(')
        );
        class!(DASH, eq(x, b'-'));
        class!(DOT, eq(x, b'.'));
        class!(COLON, eq(x, b':'));
        class!(PLUS, eq(x, b'+'));
        class!(LPAREN, eq(x, b'('));
        class!(AT, eq(x, b'@'));
        class!(CAP_J, eq(x, b'J'));
        class!(LOWER_Y, eq(x, b'y'));
        let alnum = in_range(x, b'0', b'9') | in_range(folded, b'a', b'z');
        class!(B64URL, alnum | eq(x, b'-') | eq(x, b'_'));
        class!(
            TOKEN,
            alnum | in_range(x, b'-', b'/') | eq(x, b'_') | eq(x, b'~') | eq(x, b'+') | eq(x, b'=')
        );
    }
    m
}

pub(crate) const LO: u64 = 0x0101_0101_0101_0101;
pub(crate) const HI: u64 = 0x8080_8080_8080_8080;

/// Bit 7 set in each byte of `x` that is ASCII and within `lo..=hi`
/// (exact per byte: a 7-bit value plus at most 0x80 cannot carry).
#[inline(always)]
pub(crate) fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
    let a = x & !HI;
    let ge_lo = a + LO * u64::from(0x80 - lo);
    let gt_hi = a + LO * u64::from(0x7f - hi);
    ge_lo & !gt_hi & !x & HI
}

/// Bit 7 set in each byte of `x` equal to `b` (exact per byte).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline(always)]
fn eq(x: u64, b: u8) -> u64 {
    let y = x ^ (LO * u64::from(b));
    !(((y & !HI) + !HI) | y) & HI
}

/// The plain definition of the classes, one byte at a time.
#[cfg(test)]
fn block_masks_scalar(block: &[u8]) -> Masks {
    let mut m = [0u64; CLASSES];
    for (i, &b) in block.iter().enumerate() {
        let classes = [
            (DIGIT, b.is_ascii_digit()),
            (UPPER, b.is_ascii_uppercase()),
            (DASH, b == b'-'),
            (DOT, b == b'.'),
            (SPACE, b == b' '),
            (COLON, b == b':'),
            (PLUS, b == b'+'),
            (LPAREN, b == b'('),
            (AT, b == b'@'),
            (CAP_J, b == b'J'),
            (LOWER_Y, b == b'y'),
            (E, b.eq_ignore_ascii_case(&b'e')),
            (B, b.eq_ignore_ascii_case(&b'b')),
            (SPECIAL, b.is_ascii_digit() || b"@+(:".contains(&b)),
            (LOWER, b.is_ascii_lowercase()),
            (B64URL, b.is_ascii_alphanumeric() || b"-_".contains(&b)),
            (TOKEN, b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)),
        ];
        for (class, on) in classes {
            m[class] |= u64::from(on) << i;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the classes of `set`.
    fn only(set: u32, mut m: Masks) -> Masks {
        for (class, bits) in m.iter_mut().enumerate() {
            if set & (1 << class) == 0 {
                *bits = 0;
            }
        }
        m
    }

    /// Every byte value at every position of every block length, for
    /// each class set, against the plain definition.
    #[test]
    fn block_masks_match_the_plain_definition() {
        let mut next = crate::scan::tests::splitmix(0x5eed_b10c_u64);
        let mut block = [0u8; BLOCK];
        for round in 0..600 {
            for (i, b) in block.iter_mut().enumerate() {
                *b = if round < 256 {
                    (round as u8).wrapping_add((i as u8).wrapping_mul(17))
                } else {
                    next() as u8
                };
            }
            for len in 0..=BLOCK {
                let v = &block[..len];
                let want = block_masks_scalar(v);
                for set in [QUICK, FULL, LOOP, B64URL_SET, TOKEN_SET] {
                    let want = only(set, want);
                    assert_eq!(block_masks_any(set, v), want, "set {set:#x} of {v:?}");
                    assert_eq!(swar_any(set, v), want, "SWAR set {set:#x} of {v:?}");
                }
            }
        }
    }

    fn block_masks_any(set: u32, v: &[u8]) -> Masks {
        match set {
            QUICK => block_masks::<QUICK>(v),
            FULL => block_masks::<FULL>(v),
            LOOP => block_masks::<LOOP>(v),
            B64URL_SET => block_masks::<B64URL_SET>(v),
            _ => block_masks::<TOKEN_SET>(v),
        }
    }

    fn swar_any(set: u32, v: &[u8]) -> Masks {
        match set {
            QUICK => block_masks_swar::<QUICK>(v),
            FULL => block_masks_swar::<FULL>(v),
            LOOP => block_masks_swar::<LOOP>(v),
            B64URL_SET => block_masks_swar::<B64URL_SET>(v),
            _ => block_masks_swar::<TOKEN_SET>(v),
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
