//! Detectors that start with a digit, `+` or `(`: card, ssn, phone, IPv4.
//!
//! Each validator is anchored at a digit that starts a word and looks at the
//! shape of the first digit run before doing any real work, so the digit
//! runs of ordinary text (dates, prices, ids) cost a few comparisons.

use super::{CARD, IP, PHONE, SSN, State, at, digits_at, is_alnum, skip_word};

/// A digit can start a number here: not glued to a word, an address or
/// (through `-`/`.`) to a preceding number, as in `2024-123-45-6789`.
fn left_ok(v: &[u8], i: usize) -> bool {
    if i == 0 {
        return true;
    }
    let p = v[i - 1];
    if is_alnum(p) || p == b'_' || p == b'@' {
        return false;
    }
    !(matches!(p, b'-' | b'.') && i >= 2 && v[i - 2].is_ascii_digit())
}

/// A number may end here: not followed by a word character, an `@`, or a
/// `-`/`.` that continues the token (`415-555-0132-B`, `1.2.3.4.5`).
fn right_ok(v: &[u8], end: usize) -> bool {
    let b = at(v, end);
    if is_alnum(b) || b == b'_' || b == b'@' {
        return false;
    }
    !(matches!(b, b'-' | b'.') && is_alnum(at(v, end + 1)))
}

pub(super) fn on_digit(st: &mut State<'_, '_>, i: usize) -> usize {
    let v = st.v;
    if i > 0 && is_alnum(v[i - 1]) {
        return skip_word(v, i);
    }
    let d1 = digits_at(v, i);
    let j = i + d1;
    let next = at(v, j);
    if is_alnum(next) {
        // Every numeric finding ends before a non-word byte.
        return skip_word(v, j);
    }
    if !left_ok(v, i) {
        return skip_joined(v, j);
    }
    if st.on(CARD)
        && (d1 >= 13 || (d1 == 4 && matches!(next, b' ' | b'-')))
        && let Some(end) = card(v, i, d1)
    {
        return st.push(i, end, CARD);
    }
    if st.on(SSN)
        && ((d1 == 3 && next == b'-') || d1 == 9)
        && let Some(end) = ssn(v, i, d1)
    {
        return st.push(i, end, SSN);
    }
    if st.on(PHONE)
        && (d1 == 3 || (d1 == 1 && v[i] == b'1'))
        && matches!(next, b'-' | b'.' | b' ')
        && let Some(end) = nanp(v, i, d1)
    {
        return st.push(i, end, PHONE);
    }
    if st.on(IP)
        && d1 <= 3
        && next == b'.'
        && let Some(end) = ipv4(v, i)
    {
        return st.push(i, end, IP);
    }
    skip_joined(v, j)
}

/// Past the digit runs joined to the one ending at `j` by `-` or `.`
/// (`2024-01-15`, `1.2.3.4.5`): [`left_ok`] rejects each of them, so
/// skipping them here only saves their dispatch.
fn skip_joined(v: &[u8], mut j: usize) -> usize {
    while matches!(at(v, j), b'-' | b'.') && at(v, j + 1).is_ascii_digit() {
        j += 1 + digits_at(v, j + 1);
    }
    j
}

// ---- card -------------------------------------------------------------

/// A card number starting at `i` whose first digit run is `d1` long: one
/// run of 13–19 digits, or groups (first of 4, then 3–6 each) joined by the
/// same single space or dash. Returns the end.
fn card(v: &[u8], i: usize, d1: usize) -> Option<usize> {
    let mut digits = [0u8; 19];
    if d1 >= 13 {
        if d1 > 19 {
            return None;
        }
        digits[..d1].copy_from_slice(&v[i..i + d1]);
        let end = i + d1;
        return (right_ok(v, end) && card_valid(&digits[..d1])).then_some(end);
    }
    let sep = v[i + 4];
    digits[..4].copy_from_slice(&v[i..i + 4]);
    // (end offset, digits so far) after each group.
    let mut ends = [(0usize, 0usize); 6];
    ends[0] = (i + 4, 4);
    let mut groups = 1;
    let mut nd = 4;
    let mut p = i + 4;
    while groups < ends.len() && at(v, p) == sep {
        let g = digits_at(v, p + 1);
        if !(3..=6).contains(&g) || nd + g > 19 {
            break;
        }
        digits[nd..nd + g].copy_from_slice(&v[p + 1..p + 1 + g]);
        nd += g;
        p += 1 + g;
        ends[groups] = (p, nd);
        groups += 1;
    }
    // Longest candidate first; a shorter one only where a space (not a dash,
    // which makes one token) separates it from the following digits, as in
    // `4111 1111 1111 1111 2026`.
    for &(end, nd) in ends[1..groups].iter().rev() {
        if !(13..=19).contains(&nd) {
            continue;
        }
        let continues = at(v, end) == sep && at(v, end + 1).is_ascii_digit();
        if continues && sep != b' ' {
            continue;
        }
        if right_ok(v, end) && card_valid(&digits[..nd]) {
            return Some(end);
        }
    }
    None
}

/// Issuer prefix, length for that issuer, and Luhn.
pub(crate) fn card_valid(digits: &[u8]) -> bool {
    let len = digits.len();
    if !(13..=19).contains(&len) {
        return false;
    }
    let d = |k: usize| u32::from(digits[k] - b'0');
    let p2 = d(0) * 10 + d(1);
    let p3 = p2 * 10 + d(2);
    let p4 = p3 * 10 + d(3);
    let issuer = match d(0) {
        // Visa.
        4 => matches!(len, 13 | 16 | 19),
        // Mastercard 2-series.
        2 => (2221..=2720).contains(&p4) && len == 16,
        // Amex, JCB, Diners.
        3 => match p2 {
            34 | 37 => len == 15,
            35 => (3528..=3589).contains(&p4) && len >= 16,
            30 => (300..=305).contains(&p3) && len >= 14,
            36 | 38 => len >= 14,
            _ => false,
        },
        // Mastercard 51–55; Maestro 50, 56–58.
        5 => match p2 {
            51..=55 => len == 16,
            50 | 56..=58 => true,
            _ => false,
        },
        // Discover, UnionPay, Maestro: the whole 6 range, 13–19 digits.
        6 => true,
        _ => false,
    };
    issuer && luhn(digits)
}

pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &b) in digits.iter().rev().enumerate() {
        let mut x = u32::from(b - b'0');
        if k % 2 == 1 {
            x *= 2;
            if x > 9 {
                x -= 9;
            }
        }
        sum += x;
    }
    sum.is_multiple_of(10)
}

// ---- ssn --------------------------------------------------------------

fn num(v: &[u8]) -> u32 {
    v.iter().fold(0, |a, &b| a * 10 + u32::from(b - b'0'))
}

fn all_digits(v: &[u8], range: std::ops::Range<usize>) -> bool {
    v.get(range)
        .is_some_and(|s| s.iter().all(|b| b.is_ascii_digit()))
}

fn ssn(v: &[u8], i: usize, d1: usize) -> Option<usize> {
    let (area, group, serial, end) = if d1 == 3 {
        // AAA-GG-SSSS
        if !(all_digits(v, i + 4..i + 6)
            && at(v, i + 6) == b'-'
            && all_digits(v, i + 7..i + 11)
            && right_ok(v, i + 11))
        {
            return None;
        }
        (
            num(&v[i..i + 3]),
            num(&v[i + 4..i + 6]),
            num(&v[i + 7..i + 11]),
            i + 11,
        )
    } else {
        // Nine bare digits are everywhere (ids, amounts): only when the
        // neighbours are plain separators, not id or number punctuation.
        let end = i + 9;
        let left = i == 0 || {
            let p = v[i - 1];
            let id_punct = b"-_/#:@$.+\\".contains(&p);
            let thousands = p == b',' && i >= 2 && v[i - 2].is_ascii_digit();
            !(id_punct || thousands)
        };
        let b = at(v, end);
        let decimal = matches!(b, b'.' | b',') && at(v, end + 1).is_ascii_digit();
        let right = !(is_alnum(b) || b"-_/#:@%".contains(&b) || decimal);
        if !(left && right) {
            return None;
        }
        (
            num(&v[i..i + 3]),
            num(&v[i + 3..i + 5]),
            num(&v[i + 5..i + 9]),
            end,
        )
    };
    ssn_valid(area, group, serial).then_some(end)
}

/// Numbers the SSA never issues.
pub(crate) fn ssn_valid(area: u32, group: u32, serial: u32) -> bool {
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

// ---- phone ------------------------------------------------------------

/// North-American `415-555-0132`, `415.555.0132`, `415 555 0132`, with an
/// optional leading `1` + separator, or `1 (415) 555-0132`.
fn nanp(v: &[u8], i: usize, d1: usize) -> Option<usize> {
    let mut k = i;
    if d1 == 1 {
        k = i + 2;
        if at(v, k) == b'(' {
            return paren_phone(v, k);
        }
        if digits_at(v, k) != 3 || !matches!(at(v, k + 3), b'-' | b'.' | b' ') {
            return None;
        }
    }
    let sep = at(v, k + 3);
    let ok = (b'2'..=b'9').contains(&v[k])
        && (b'2'..=b'9').contains(&at(v, k + 4))
        && digits_at(v, k + 4) == 3
        && at(v, k + 7) == sep
        && digits_at(v, k + 8) == 4
        && right_ok(v, k + 12);
    ok.then_some(k + 12)
}

pub(super) fn on_paren(st: &mut State<'_, '_>, p: usize) -> usize {
    let v = st.v;
    if p > 0 && (is_alnum(v[p - 1]) || v[p - 1] == b'_') {
        return p + 1;
    }
    match paren_phone(v, p) {
        Some(end) => st.push(p, end, PHONE),
        None => p + 1,
    }
}

/// `(415) 555-0132`, `(415)555.0132`, `(415) 555 0132` at `p` (the `(`).
///
/// Each group is tested byte by byte where it must be, not measured as a
/// run and compared: the byte after it (`)`, a separator, or the end that
/// `right_ok` checks) is no digit, so the lengths are the same.
fn paren_phone(v: &[u8], p: usize) -> Option<usize> {
    let digit = |i: usize| at(v, i).is_ascii_digit();
    let lead = |i: usize| (b'2'..=b'9').contains(&at(v, i));
    if !(lead(p + 1) && digit(p + 2) && digit(p + 3) && at(v, p + 4) == b')') {
        return None;
    }
    let q = if at(v, p + 5) == b' ' { p + 6 } else { p + 5 };
    let ok = lead(q)
        && digit(q + 1)
        && digit(q + 2)
        && matches!(at(v, q + 3), b'-' | b'.' | b' ')
        && all_digits(v, q + 4..q + 8)
        && right_ok(v, q + 8);
    ok.then_some(q + 8)
}

/// E.164: `+`, a country code not starting with 0, 8–15 digits in all,
/// with at most two separator characters (space, `-`, `.`, parentheses)
/// between digits.
pub(super) fn on_plus(st: &mut State<'_, '_>, i: usize) -> usize {
    let v = st.v;
    if i > 0 && (is_alnum(v[i - 1]) || matches!(v[i - 1], b'+' | b'_')) {
        return i + 1;
    }
    if !(b'1'..=b'9').contains(&at(v, i + 1)) {
        return i + 1;
    }
    let mut p = i + 1;
    let mut digits = 0;
    let mut end = p;
    let mut seps = 0;
    while p < v.len() {
        let b = v[p];
        if b.is_ascii_digit() {
            digits += 1;
            if digits > 15 {
                // Too long for a phone; the digits may still be a card, so
                // let the digit handler look at them.
                return i + 1;
            }
            p += 1;
            end = p;
            seps = 0;
        } else if matches!(b, b' ' | b'-' | b'.' | b'(' | b')') && seps < 2 {
            seps += 1;
            p += 1;
        } else {
            break;
        }
    }
    if digits >= 8 && right_ok(v, end) {
        st.push(i, end, PHONE)
    } else {
        i + 1
    }
}

// ---- IPv4 ---------------------------------------------------------------

/// A dotted quad, octets ≤ 255 without leading zeros, not part of a longer
/// dotted run (the left side is covered by [`left_ok`]).
fn ipv4(v: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    for octet in 0..4 {
        p = octet_end(v, p)?;
        if octet < 3 {
            if at(v, p) != b'.' {
                return None;
            }
            p += 1;
        }
    }
    right_ok(v, p).then_some(p)
}

/// The end of an octet at `p`: one to three digits, no leading zero, at
/// most 255. Its bytes are read where they must be (a run of digits
/// measured, then parsed, was ~40 instructions an octet).
fn octet_end(v: &[u8], p: usize) -> Option<usize> {
    let digit = |i: usize| at(v, i).wrapping_sub(b'0');
    let (a, b, c) = (digit(p), digit(p + 1), digit(p + 2));
    if a > 9 {
        return None;
    }
    if b > 9 {
        return Some(p + 1);
    }
    if a == 0 {
        return None;
    }
    if c > 9 {
        return Some(p + 2);
    }
    let n = u32::from(a) * 100 + u32::from(b) * 10 + u32::from(c);
    (n <= 255 && digit(p + 3) > 9).then_some(p + 3)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check;
    use super::super::{CARD, IP, PHONE, SSN};
    use super::*;

    #[test]
    fn card_true_positives() {
        for (v, want) in [
            ("4111111111111111", "4111111111111111"),
            ("pay 4111 1111 1111 1111 now", "4111 1111 1111 1111"),
            ("x:4111-1111-1111-1111.", "4111-1111-1111-1111"),
            ("5500000000000004", "5500000000000004"),
            ("2221000000000009", "2221000000000009"),
            ("amex 3782 822463 10005", "3782 822463 10005"),
            ("378282246310005", "378282246310005"),
            ("6011111111111117", "6011111111111117"),
            ("(3530111333300000)", "3530111333300000"),
            ("diners 30569309025904", "30569309025904"),
            ("6200000000000005", "6200000000000005"),
            ("visa13 4222222222222", "4222222222222"),
            ("\"4111111111111111\"", "4111111111111111"),
            ("4111 1111 1111 1111 2026", "4111 1111 1111 1111"),
            ("371449635398431 0", "371449635398431"),
        ] {
            check(CARD, v, &[want]);
        }
        check(
            CARD,
            "4111111111111111,5500000000000004",
            &["4111111111111111", "5500000000000004"],
        );
    }

    #[test]
    fn card_near_misses() {
        for v in [
            "4111111111111112",         // Luhn
            "1234567812345670",         // no issuer starts with 1
            "41111111111111111111",     // 20 digits
            "a4111111111111111",        // glued to a word
            "4111111111111111b",        // glued to a word
            "4111-1111-1111-1111-2222", // one dashed token, too long
            "4111 1111 1111 1111x",     // glued at the end
            "5500 0000 0000 04",        // last group too short (2)
            "order 2024-4111111111111111",
            "34343434343434", // Amex prefix with 14 digits
        ] {
            check(CARD, v, &[]);
        }
    }

    #[test]
    fn ssn_positives_and_near_misses() {
        check(SSN, "ssn 123-45-6789.", &["123-45-6789"]);
        check(SSN, "123-45-6789", &["123-45-6789"]);
        check(SSN, "(123456789)", &["123456789"]);
        check(SSN, "ssn=123456789, dob", &["123456789"]);
        for v in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123-45-67890",
            "1123-45-6789",
            "a123-45-6789",
            "123-45-6789-1",
            "ORD-123456789",
            "#123456789",
            "123456789.50",
            "1234567890",
            "x123456789",
            "12345678",
            "123 45 6789",
        ] {
            check(SSN, v, &[]);
        }
    }

    #[test]
    fn phone_positives_and_near_misses() {
        for (v, want) in [
            ("call (415) 555-0132 now", "(415) 555-0132"),
            ("(415)555-0132", "(415)555-0132"),
            ("415-555-0132", "415-555-0132"),
            ("415.555.0132", "415.555.0132"),
            ("tel 415 555 0132", "415 555 0132"),
            ("1-800-555-0199", "1-800-555-0199"),
            ("1 (800) 555-0199", "1 (800) 555-0199"),
            ("+14155550132", "+14155550132"),
            ("+1 (415) 555-0132", "+1 (415) 555-0132"),
            ("+44 20 7946 0958", "+44 20 7946 0958"),
            ("+49-30-901820", "+49-30-901820"),
            ("tel:+33.1.42.68.53.00", "+33.1.42.68.53.00"),
        ] {
            check(PHONE, v, &[want]);
        }
        for v in [
            "4155550132",
            "015-555-0132",
            "415-155-0132",
            "415-555.0132",
            "415-555-01323",
            "PN-415-555-0132-B",
            "+0 123 456 789",
            "+1234567",
            "UTC+05:30",
            "2024-01-15T10:30:00+05:30",
            "1+2345678901",
            "(015) 555-0132",
            "f(415) 555-0132",
            "+1234567890123456",
        ] {
            check(PHONE, v, &[]);
        }
    }

    #[test]
    fn ipv4_positives_and_near_misses() {
        check(IP, "from 192.168.0.1:5432", &["192.168.0.1"]);
        check(IP, "10.0.0.255.", &["10.0.0.255"]);
        check(IP, "0.0.0.0", &["0.0.0.0"]);
        // `x.` is not a number, so the quad stands alone.
        check(IP, "x.1.2.3.4", &["1.2.3.4"]);
        for v in [
            "1.2.3.4.5",
            "v1.2.3.4",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4a",
            "1.2.3.4.x",
            "37.7749,-122.4194",
        ] {
            check(IP, v, &[]);
        }
    }

    /// `paren_phone` and `ipv4` against the run-measuring versions they
    /// replaced, at every start of random values of digits and
    /// punctuation.
    #[test]
    fn phone_and_ipv4_match_the_run_measuring_versions() {
        let plain_paren = |v: &[u8], p: usize| {
            if !((b'2'..=b'9').contains(&at(v, p + 1))
                && digits_at(v, p + 1) == 3
                && at(v, p + 4) == b')')
            {
                return None;
            }
            let mut q = p + 5;
            if at(v, q) == b' ' {
                q += 1;
            }
            let ok = (b'2'..=b'9').contains(&at(v, q))
                && digits_at(v, q) == 3
                && matches!(at(v, q + 3), b'-' | b'.' | b' ')
                && digits_at(v, q + 4) == 4
                && right_ok(v, q + 8);
            ok.then_some(q + 8)
        };
        let plain_ipv4 = |v: &[u8], i: usize| {
            let mut p = i;
            for octet in 0..4 {
                let d = digits_at(v, p);
                if d == 0 || d > 3 || (d > 1 && v[p] == b'0') || num(&v[p..p + d]) > 255 {
                    return None;
                }
                p += d;
                if octet < 3 {
                    if at(v, p) != b'.' {
                        return None;
                    }
                    p += 1;
                }
            }
            right_ok(v, p).then_some(p)
        };
        let mut next = crate::scan::tests::splitmix(0x9e0_0415_u64);
        let (mut phones, mut ips) = (0, 0);
        for round in 0..100_000 {
            let mut v = Vec::new();
            if round % 2 == 0 {
                v.extend_from_slice(
                    [&b"(415) 555-0132"[..], b"(29)", b"10.0.0.1", b"255.25.2.0"]
                        [(next() % 4) as usize],
                );
            }
            for _ in 0..(next() % 16) {
                v.push(match next() % 32 {
                    0 => next() as u8,
                    1..=3 => b'.',
                    4 => b'(',
                    5 => b')',
                    6 => b' ',
                    7 => b'-',
                    8 => b"a_@Z"[(next() % 4) as usize],
                    _ => b'0' + (next() % 10) as u8,
                });
            }
            if next().is_multiple_of(2) {
                let k = (next() % (v.len() as u64 + 1)) as usize;
                v.rotate_left(k);
            }
            for i in 0..v.len() {
                let want = plain_paren(&v, i);
                phones += usize::from(want.is_some());
                assert_eq!(
                    paren_phone(&v, i),
                    want,
                    "{:?} at {i}",
                    String::from_utf8_lossy(&v)
                );
                let want = plain_ipv4(&v, i);
                ips += usize::from(want.is_some());
                assert_eq!(
                    ipv4(&v, i),
                    want,
                    "{:?} at {i}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(
            phones > 1_000 && ips > 5_000,
            "only {phones} phones, {ips} addresses"
        );
    }

    #[test]
    fn luhn_and_ssn_rules() {
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
        assert!(ssn_valid(1, 1, 1));
        assert!(!ssn_valid(666, 1, 1));
        assert!(!ssn_valid(901, 1, 1));
    }
}
