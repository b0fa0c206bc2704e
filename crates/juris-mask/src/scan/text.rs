//! Detectors anchored on letters or punctuation: email (`@`), IBAN, AWS
//! keys, bearer tokens, JWTs (`J` of `eyJ`), IPv6 (`:`).

use std::net::Ipv6Addr;

use super::{AWS_KEY, BEARER, EMAIL, IBAN, IP, JWT, State, at, gate, is_alnum, skip_word};

pub(super) fn on_upper(st: &mut State<'_, '_>, i: usize) -> usize {
    let v = st.v;
    let c = v[i];
    // JWTs start with `eyJ` (base64 of `{"`): triggering on the capital J
    // rather than on every `e` keeps prose cheap.
    if c == b'J'
        && st.on(JWT)
        && i >= 2
        && i - 2 >= st.last_end
        && &v[i - 2..i] == b"ey"
        && (i == 2 || !(is_b64url(v[i - 3]) || v[i - 3] == b'.'))
        && let Some(end) = jwt(v, i - 2)
    {
        return st.push(i - 2, end, JWT);
    }
    if i > 0 && is_alnum(v[i - 1]) {
        return skip_word(v, i);
    }
    if c == b'A'
        && st.on(AWS_KEY)
        && let Some(end) = aws_key(v, i)
    {
        return st.push(i, end, AWS_KEY);
    }
    if c == b'B'
        && st.on(BEARER)
        && let Some((start, end)) = bearer(v, i)
    {
        return st.push(start, end, BEARER);
    }
    if st.on(IBAN)
        && let Some(end) = iban(v, i)
    {
        return st.push(i, end, IBAN);
    }
    skip_word(v, i)
}

pub(super) fn on_lower_b(st: &mut State<'_, '_>, i: usize) -> usize {
    let v = st.v;
    if i > 0 && is_alnum(v[i - 1]) {
        return skip_word(v, i);
    }
    match bearer(v, i) {
        Some((start, end)) => st.push(start, end, BEARER),
        None => skip_word(v, i),
    }
}

// ---- JWT ----------------------------------------------------------------

fn is_b64url(b: u8) -> bool {
    is_alnum(b) || b == b'-' || b == b'_'
}

fn b64url_run(v: &[u8], i: usize) -> usize {
    gate::run_of::<{ gate::B64URL_SET }>(v, gate::B64URL, i)
}

/// `eyJ…` `.` `eyJ…` `.` signature (possibly empty, as in `alg: none`).
fn jwt(v: &[u8], s: usize) -> Option<usize> {
    const MIN_SEGMENT: usize = 8;
    // The first 64 bytes from `s` are classified once: most tokens'
    // first two segments, and often the third, lie within them.
    let block = SegmentBlock::new(v, s);
    let h = block.run(v, s);
    let p = s + h;
    if h < MIN_SEGMENT || at(v, p) != b'.' || v.get(p + 1..p + 4) != Some(b"eyJ") {
        return None;
    }
    let b = block.run(v, p + 1);
    let q = p + 1 + b;
    if b < MIN_SEGMENT || at(v, q) != b'.' {
        return None;
    }
    Some(q + 1 + block.run(v, q + 1))
}

/// The base64url bytes of up to 64 bytes of a value from `base`.
struct SegmentBlock {
    base: usize,
    len: usize,
    mask: u64,
}

impl SegmentBlock {
    fn new(v: &[u8], base: usize) -> Self {
        let block = v.get(base..).unwrap_or_default();
        let block = &block[..block.len().min(gate::BLOCK)];
        let mask = gate::block_masks::<{ gate::B64URL_SET }>(block)[gate::B64URL];
        SegmentBlock {
            base,
            len: block.len(),
            mask,
        }
    }

    /// `b64url_run(v, i)` for `i >= base`, from the mask while the run
    /// stays within the block.
    fn run(&self, v: &[u8], i: usize) -> usize {
        let off = i - self.base;
        if off >= self.len {
            return b64url_run(v, i);
        }
        // Bits past the block are clear, as are those shifted in.
        let n = (!(self.mask >> off)).trailing_zeros() as usize;
        if off + n == gate::BLOCK {
            // The run reaches the end of a whole block: it may go on.
            n + b64url_run(v, self.base + gate::BLOCK)
        } else {
            n
        }
    }
}

// ---- AWS access key id --------------------------------------------------

/// A prefix, then sixteen capitals or digits 2–7 (base32), as two words
/// of eight bytes tested at once (a byte loop was ~170 instructions a key).
fn aws_key(v: &[u8], i: usize) -> Option<usize> {
    use super::{HI, in_range};
    const PREFIXES: [&[u8; 4]; 8] = [
        b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"ANPA", b"ANVA", b"AIPA",
    ];
    let (prefix, rest) = v.get(i..i + 20)?.split_first_chunk::<4>()?;
    let base32 = |w: &[u8]| {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        in_range(w, b'A', b'Z') | in_range(w, b'2', b'7') == HI
    };
    let ok = PREFIXES.contains(&prefix)
        && base32(&rest[..8])
        && base32(&rest[8..])
        && !is_alnum(at(v, i + 20));
    ok.then_some(i + 20)
}

// ---- bearer ---------------------------------------------------------------

/// `Bearer` (any case), spaces, then a token of at least 16 characters; the
/// span is the token alone.
fn bearer(v: &[u8], i: usize) -> Option<(usize, usize)> {
    const MIN_TOKEN: usize = 16;
    if !v.get(i..i + 6)?.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let spaces = v[i + 6..].iter().take_while(|&&b| b == b' ').count();
    if spaces == 0 {
        return None;
    }
    let t = i + 6 + spaces;
    let len = gate::run_of::<{ gate::TOKEN_SET }>(v, gate::TOKEN, t);
    (len >= MIN_TOKEN).then_some((t, t + len))
}

// ---- IBAN -----------------------------------------------------------------

/// IBAN length by country (SEPA and other common registrations).
fn iban_len(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        _ => return None,
    })
}

/// Country code, check digits, BBAN of the country's length, optionally in
/// groups of four separated by single spaces; mod-97 must be 1.
///
/// The checksum is reduced group by group as the groups are read (a
/// group of four digits as one number), not gathered first and then
/// reduced a character at a time: that was ~900 instructions an IBAN.
fn iban(v: &[u8], i: usize) -> Option<usize> {
    if !(at(v, i + 1).is_ascii_uppercase()
        && at(v, i + 2).is_ascii_digit()
        && at(v, i + 3).is_ascii_digit())
    {
        return None;
    }
    let len = iban_len([v[i], v[i + 1]])?;
    let check = u32::from(v[i + 2] - b'0') * 10 + u32::from(v[i + 3] - b'0');
    // The country code and check digits count last, as six digits.
    let letter = |b: u8| u32::from(b - b'A') + 10;
    let head = (letter(v[i]) * 100 + letter(v[i + 1])) * 100 + check;
    let mut r = 0;
    let mut n = 4;
    let mut p = i + 4;
    while n < len {
        // A group may follow a single space (`n` is a multiple of 4 here).
        if at(v, p) == b' ' && is_iban_char(at(v, p + 1)) {
            p += 1;
        }
        let g = (len - n).min(4);
        r = mod97_group(r, v.get(p..p + g)?)?;
        n += g;
        p += g;
    }
    if is_alnum(at(v, p)) {
        return None;
    }
    ((2..=98).contains(&check) && (r * 1_000_000 + head) % 97 == 1).then_some(p)
}

fn is_iban_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

/// ISO 7064 mod 97-10: the remainder `r` (below 97) extended by `group`
/// (letters count as 10–35); `None` if a byte is not an IBAN character.
fn mod97_group(r: u32, group: &[u8]) -> Option<u32> {
    if let Ok(&four) = <&[u8; 4]>::try_from(group) {
        let x = u32::from_le_bytes(four);
        // Four ASCII digits: every high nibble 3, no low nibble above 9.
        const THREES: u32 = 0x3030_3030;
        if x & 0xf0f0_f0f0 == THREES && (x + 0x0606_0606) & 0xf0f0_f0f0 == THREES {
            // Pairs of digits, then the pairs: the first digit is the
            // lowest byte.
            let d = x - THREES;
            let pairs = (d * 10 + (d >> 8)) & 0x00ff_00ff;
            let n = (pairs * 100 + (pairs >> 16)) & 0xffff;
            return Some((r * 10_000 + n) % 97);
        }
    }
    group.iter().try_fold(r, |r, &b| match b {
        b'0'..=b'9' => Some((r * 10 + u32::from(b - b'0')) % 97),
        b'A'..=b'Z' => Some((r * 100 + u32::from(b - b'A') + 10) % 97),
        _ => None,
    })
}

// ---- email ------------------------------------------------------------------

/// Byte classes of addresses, by table (the tests of `is_local` were a
/// range check and five compares a byte).
const LOCAL: u8 = 1;
/// A label's byte: alphanumeric or `-`.
const LABEL: u8 = 2;
const ALPHA: u8 = 4;
const EMAIL_CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alpha = c.is_ascii_alphabetic();
        let alnum = c.is_ascii_alphanumeric();
        let local = alnum || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
        t[b] = (local as u8 * LOCAL) | ((alnum || c == b'-') as u8 * LABEL) | (alpha as u8 * ALPHA);
        b += 1;
    }
    t
};

#[inline(always)]
fn email_class(b: u8) -> u8 {
    EMAIL_CLASSES[usize::from(b)]
}

fn is_local(b: u8) -> bool {
    email_class(b) & LOCAL != 0
}

/// Triggered by `@`: the local part is found backwards (never before the
/// previous finding), the domain forwards: labels of letters, digits and
/// inner hyphens, at least two, the last one 2+ letters.
pub(super) fn on_at(st: &mut State<'_, '_>, a: usize) -> usize {
    const MAX_LOCAL: usize = 64;
    let v = st.v;
    let floor = st.last_end.max(a.saturating_sub(MAX_LOCAL));
    let mut s = a;
    while s > floor && is_local(v[s - 1]) {
        s -= 1;
    }
    if s == floor && s > st.last_end && is_local(v[s - 1]) {
        // Longer than any address: a fragment of something else.
        return a + 1;
    }
    while s < a && v[s] == b'.' {
        s += 1;
    }
    if s == a || v[a - 1] == b'.' {
        return a + 1;
    }
    match domain(v, a + 1) {
        Some(end) => st.push(s, end, EMAIL),
        None => a + 1,
    }
}

fn domain(v: &[u8], d: usize) -> Option<usize> {
    const MAX_LABEL: usize = 63;
    const MAX_DOMAIN: usize = 253;
    let mut p = d;
    let mut labels = 0;
    let mut best = None;
    loop {
        let l = p;
        // The label, and whether all of it is letters (a TLD's shape).
        let mut all = ALPHA;
        while let Some(&b) = v.get(p) {
            let class = email_class(b);
            if class & LABEL == 0 {
                break;
            }
            all &= class;
            p += 1;
        }
        if p == l || v[l] == b'-' || v[p - 1] == b'-' || p - l > MAX_LABEL || p - d > MAX_DOMAIN {
            break;
        }
        labels += 1;
        if labels >= 2 && p - l >= 2 && all != 0 {
            best = Some(p);
        }
        if at(v, p) == b'.' && is_alnum(at(v, p + 1)) {
            p += 1;
        } else {
            break;
        }
    }
    best.filter(|&end| at(v, end) != b'_')
}

// ---- IPv6 -------------------------------------------------------------------

fn is_v6(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// Triggered by `:`: the candidate token (hex digits, colons, dots) around
/// it is checked for shape cheaply, then parsed by `Ipv6Addr`.
pub(super) fn on_colon(st: &mut State<'_, '_>, c: usize) -> usize {
    const MAX_LEN: usize = 45;
    let v = st.v;
    // Most colons in text are `key: value` or times: reject those first.
    // A colon not followed by an address byte ends the token, and an
    // address ends in a group or in `::`, so only `::` goes on (`Doe: `
    // went on to measure the token `e:`: ~90 instructions a name).
    if !(is_v6(at(v, c + 1)) || (c > st.last_end && v[c - 1] == b':')) {
        return c + 1;
    }
    let floor = st.last_end.max(c.saturating_sub(MAX_LEN));
    let mut s = c;
    while s > floor && is_v6(v[s - 1]) {
        s -= 1;
    }
    let mut token_end = c + 1;
    while token_end < v.len() && is_v6(v[token_end]) && token_end - s <= MAX_LEN {
        token_end += 1;
    }
    let mut e = token_end;
    while e > c + 1 && v[e - 1] == b'.' {
        e -= 1;
    }
    let glued = |b: u8| is_alnum(b) || b == b'_';
    let bounded = !(s > 0 && (glued(v[s - 1]) || (s == floor && s > st.last_end)))
        && !(e < v.len() && glued(v[e]))
        && token_end - s <= MAX_LEN;
    if bounded && is_ipv6(&v[s..e]) {
        return st.push(s, e, IP);
    }
    // Not an address. Resume after the token's last colon when the groups
    // in between are too short to hold any finding (times, MACs);
    // otherwise right after this colon (`card:4111…`).
    const MIN_FINDING: usize = 7;
    let last = c + v[c..token_end]
        .iter()
        .rposition(|&b| b == b':')
        .unwrap_or(0);
    let short = v[c..last]
        .split(|&b| b == b':')
        .all(|g| g.len() < MIN_FINDING);
    if short { last + 1 } else { c + 1 }
}

/// Cheap shape checks first (compressed, or 8 groups, or 7 with a dotted
/// tail; at least two non-empty groups, so `::` and `::1` are not
/// reported), then the standard library's parser.
fn is_ipv6(token: &[u8]) -> bool {
    // Each check only runs when the cheaper ones before it passed (times
    // like `10:30:00.123` fail on the colon count).
    let colons = token.iter().filter(|&&b| b == b':').count();
    if colons < 2 {
        return false;
    }
    let compressed = token.windows(2).any(|w| w == b"::");
    let dotted = || token.contains(&b'.');
    let groups = || {
        token
            .split(|&b| b == b':')
            .filter(|g| !g.is_empty())
            .count()
    };
    (compressed || colons == 7 || (colons == 6 && dotted()))
        && groups() >= 2
        && std::str::from_utf8(token)
            .ok()
            .and_then(|t| t.parse::<Ipv6Addr>().ok())
            .is_some()
}

#[cfg(test)]
mod tests {
    use super::super::tests::check;
    use super::super::{AWS_KEY, BEARER, EMAIL, IBAN, IP, JWT};
    use super::*;

    #[test]
    fn email() {
        for (v, want) in [
            ("jane.doe@example.com", "jane.doe@example.com"),
            (
                "Mail: <j.o+tag@mail.example.co.uk>.",
                "j.o+tag@mail.example.co.uk",
            ),
            (
                "to:bob_99@sub-domain.example.org, x",
                "bob_99@sub-domain.example.org",
            ),
            ("x@example.com.", "x@example.com"),
            ("a@b.io", "a@b.io"),
            ("..lead@example.com", "lead@example.com"),
        ] {
            check(EMAIL, v, &[want]);
        }
        for v in [
            "@example.com",
            "user@localhost",
            "user@example.c",
            "user@example.123",
            "user@-example.com",
            "trailing.@example.com",
            "user@",
            "a @ b.com",
            "git@github.com_x",
        ] {
            check(EMAIL, v, &[]);
        }
    }

    #[test]
    fn iban() {
        for (v, want) in [
            ("DE89370400440532013000", "DE89370400440532013000"),
            (
                "iban DE89 3704 0044 0532 0130 00.",
                "DE89 3704 0044 0532 0130 00",
            ),
            ("GB82WEST12345698765432", "GB82WEST12345698765432"),
            ("FR1420041010050500013M02606", "FR1420041010050500013M02606"),
            ("NO9386011117947", "NO9386011117947"),
            ("(BE68539007547034)", "BE68539007547034"),
        ] {
            check(IBAN, v, &[want]);
        }
        for v in [
            "DE89370400440532013001",  // checksum
            "DE8937040044053201300",   // short
            "DE893704004405320130000", // long
            "XX89370400440532013000",  // no such country
            "de89370400440532013000",  // lower case
            "aDE89370400440532013000",
            "DE89  3704 0044 0532 0130 00",
            "DE 89 3704",
        ] {
            check(IBAN, v, &[]);
        }
    }

    /// The textbook IBAN check: gather the characters (single spaces
    /// between groups of four), move the first four to the end, and reduce
    /// after every character.
    fn plain_iban(v: &[u8], i: usize) -> Option<usize> {
        let len = iban_len([*v.get(i)?, *v.get(i + 1)?])?;
        if !(at(v, i + 1).is_ascii_uppercase()
            && at(v, i + 2).is_ascii_digit()
            && at(v, i + 3).is_ascii_digit())
        {
            return None;
        }
        let mut chars = Vec::new();
        let mut p = i;
        while chars.len() < len {
            let b = at(v, p);
            if is_iban_char(b) {
                chars.push(b);
            } else if !(b == b' ' && chars.len() % 4 == 0 && is_iban_char(at(v, p + 1))) {
                return None;
            }
            p += 1;
        }
        if is_alnum(at(v, p)) {
            return None;
        }
        let check = (chars[2] - b'0') * 10 + (chars[3] - b'0');
        let r = chars[4..].iter().chain(&chars[..4]).fold(0u32, |r, &b| {
            if b.is_ascii_digit() {
                (r * 10 + u32::from(b - b'0')) % 97
            } else {
                (r * 100 + u32::from(b - b'A') + 10) % 97
            }
        });
        ((2..=98).contains(&check) && r == 1).then_some(p)
    }

    /// `iban` against the textbook check from every start of random
    /// values: valid IBANs of random countries, plain or grouped, with
    /// single characters changed, cut, grown, or spaced wrongly.
    #[test]
    fn iban_matches_the_plain_check() {
        const COUNTRIES: &[&[u8; 2]] = &[
            b"NO", b"BE", b"NL", b"SI", b"AT", b"CH", b"DE", b"GB", b"IL", b"ES", b"PT", b"TR",
            b"FR", b"PL", b"BR", b"JO", b"MT", b"LC", b"XX",
        ];
        let mut next = crate::scan::tests::splitmix(0x1ba4_97c0_ffee_0001u64);
        let mut valid = 0;
        for round in 0..20_000 {
            let cc = COUNTRIES[(next() % COUNTRIES.len() as u64) as usize];
            let len = iban_len(*cc).unwrap_or(22);
            // A BBAN of digits, sometimes with capitals, then the check
            // digits that make it valid.
            let mut chars: Vec<u8> = cc.to_vec();
            chars.extend_from_slice(b"00");
            for _ in 4..len {
                chars.push(if next().is_multiple_of(5) {
                    b'A' + (next() % 26) as u8
                } else {
                    b'0' + (next() % 10) as u8
                });
            }
            let r = chars[4..].iter().chain(&chars[..4]).fold(0u64, |r, &b| {
                if b.is_ascii_digit() {
                    (r * 10 + u64::from(b - b'0')) % 97
                } else {
                    (r * 100 + u64::from(b - b'A') + 10) % 97
                }
            });
            let check = 98 - r;
            chars[2] = b'0' + (check / 10) as u8;
            chars[3] = b'0' + (check % 10) as u8;
            let mut v: Vec<u8> = Vec::new();
            if round % 3 == 0 {
                v.extend_from_slice(b"iban ");
            }
            let grouped = next().is_multiple_of(2);
            for (k, &b) in chars.iter().enumerate() {
                if grouped && k > 0 && k % 4 == 0 {
                    v.push(b' ');
                }
                v.push(b);
            }
            match next() % 8 {
                0 => {
                    let k = (next() % v.len() as u64) as usize;
                    v[k] = b"0123456789AZ -x."[(next() % 16) as usize];
                }
                1 => {
                    v.truncate((next() % v.len() as u64) as usize);
                }
                2 => v.push(b"0A .x"[(next() % 5) as usize]),
                3 => {
                    let k = (next() % v.len() as u64) as usize;
                    v.insert(k, b' ');
                }
                _ => {}
            }
            for i in 0..v.len() {
                let want = plain_iban(&v, i);
                valid += usize::from(want.is_some());
                let got = if v[i].is_ascii_uppercase() {
                    super::iban(&v, i)
                } else {
                    None
                };
                assert_eq!(got, want, "{:?} at {i}", String::from_utf8_lossy(&v));
            }
        }
        assert!(valid > 5_000, "only {valid} valid IBANs");
    }

    /// Every four bytes (a digit-heavy alphabet, and any byte) against
    /// one character at a time.
    #[test]
    fn mod97_groups_match_one_character_at_a_time() {
        let plain = |r: u32, g: &[u8]| {
            g.iter().try_fold(r, |r, &b| {
                if b.is_ascii_digit() {
                    Some((r * 10 + u32::from(b - b'0')) % 97)
                } else if b.is_ascii_uppercase() {
                    Some((r * 100 + u32::from(b - b'A') + 10) % 97)
                } else {
                    None
                }
            })
        };
        let mut next = crate::scan::tests::splitmix(0x97_97_97u64);
        for round in 0..200_000 {
            let g: Vec<u8> = (0..(round % 5))
                .map(|_| match next() % 4 {
                    0 => next() as u8,
                    1 => b"/:@[`9AZ0"[(next() % 9) as usize],
                    _ => b'0' + (next() % 10) as u8,
                })
                .collect();
            let r = (next() % 97) as u32;
            assert_eq!(mod97_group(r, &g), plain(r, &g), "{r} {g:?}");
        }
    }

    #[test]
    fn jwt() {
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        check(JWT, t, &[t]);
        check(JWT, &format!("token={t}&x=1"), &[t]);
        check(JWT, &format!("\"{t}\""), &[t]);
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
        check(JWT, unsigned, &[unsigned]);
        for v in [
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJhbGciOiJIUzI1NiJ9.abcdefghijkl.sig",
            "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig",
            "eyJ.eyJ.x",
            "Jey",
        ] {
            check(JWT, v, &[]);
        }
    }

    /// The runs of a `SegmentBlock` against `b64url_run` (the plain
    /// runs, one `run_of` call each), from every start in random values of
    /// base64url bytes, dots and other bytes, across and past the block.
    #[test]
    fn segment_block_runs_match_b64url_run() {
        let mut next = crate::scan::tests::splitmix(0x7e57_0001_5e90_b10cu64);
        for round in 0..3_000 {
            let len = (next() % if round % 2 == 0 { 200 } else { 70 }) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| match next() % 32 {
                    0 => b'.',
                    1 => next() as u8,
                    2 => b' ',
                    _ => b"aZ09-_eyJ"[(next() % 9) as usize],
                })
                .collect();
            let base = (next() % (len as u64 + 3)) as usize;
            let block = SegmentBlock::new(&v, base);
            for i in base..len + 3 {
                assert_eq!(block.run(&v, i), b64url_run(&v, i), "{v:?} {base} {i}");
            }
        }
    }

    #[test]
    fn aws_key() {
        check(AWS_KEY, "AKIAIOSFODNN7EXAMPLE", &["AKIAIOSFODNN7EXAMPLE"]);
        check(
            AWS_KEY,
            "id=ASIAY34FZKBOKMUTVV7A;",
            &["ASIAY34FZKBOKMUTVV7A"],
        );
        for v in [
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLEX",
            "XAKIAIOSFODNN7EXAMPLE",
            "AKIAIOSFODNN1EXAMPLE",
            "ABCDIOSFODNN7EXAMPLE",
            "akiaiosfodnn7example",
        ] {
            check(AWS_KEY, v, &[]);
        }
    }

    #[test]
    fn bearer() {
        check(
            BEARER,
            "Authorization: Bearer abc.DEF-123_456~xyz+/=",
            &["abc.DEF-123_456~xyz+/="],
        );
        check(BEARER, "bearer  0123456789abcdef", &["0123456789abcdef"]);
        check(BEARER, "BEARER 0123456789abcdef!", &["0123456789abcdef"]);
        for v in [
            "Bearer short",
            "Bearer: 0123456789abcdef",
            "Bearer0123456789abcdef",
            "xbearer 0123456789abcdef",
            "bearers 0123456789abcdef",
        ] {
            check(BEARER, v, &[]);
        }
    }

    /// `on_at` as it was before its byte classes came from a table: the
    /// reference for the one in use.
    fn plain_on_at(st: &mut State<'_, '_>, a: usize) -> usize {
        let is_local = |b: u8| is_alnum(b) || b"._%+-".contains(&b);
        let v = st.v;
        let floor = st.last_end.max(a.saturating_sub(64));
        let mut s = a;
        while s > floor && is_local(v[s - 1]) {
            s -= 1;
        }
        if s == floor && s > st.last_end && is_local(v[s - 1]) {
            return a + 1;
        }
        while s < a && v[s] == b'.' {
            s += 1;
        }
        if s == a || v[a - 1] == b'.' {
            return a + 1;
        }
        let d = a + 1;
        let mut p = d;
        let mut labels = 0;
        let mut best = None;
        loop {
            let l = p;
            while is_alnum(at(v, p)) || at(v, p) == b'-' {
                p += 1;
            }
            if p == l || v[l] == b'-' || v[p - 1] == b'-' || p - l > 63 || p - d > 253 {
                break;
            }
            labels += 1;
            if labels >= 2 && p - l >= 2 && v[l..p].iter().all(u8::is_ascii_alphabetic) {
                best = Some(p);
            }
            if at(v, p) == b'.' && is_alnum(at(v, p + 1)) {
                p += 1;
            } else {
                break;
            }
        }
        match best.filter(|&end| at(v, end) != b'_') {
            Some(end) => st.push(s, end, EMAIL),
            None => a + 1,
        }
    }

    /// `on_at` against the plain one at every `@` of random values of
    /// address bytes and others (long labels and local parts included),
    /// from random ends of a previous finding.
    /// A trigger handler: from the trigger at a position, where the scan
    /// resumes.
    type OnTrigger = fn(&mut State<'_, '_>, usize) -> usize;

    /// Assert that `fast` and `plain`, each from the trigger at `at` with
    /// the same state, resume at the same place with the same spans; the
    /// number of spans.
    fn same_as_plain(
        v: &[u8],
        enabled: u16,
        last_end: usize,
        at: usize,
        fast: OnTrigger,
        plain: OnTrigger,
    ) -> usize {
        let run = |handler: OnTrigger| {
            let mut spans = Vec::new();
            let mut st = State {
                v,
                enabled,
                last_end,
                spans: &mut spans,
            };
            (handler(&mut st, at), spans)
        };
        let want = run(plain);
        assert_eq!(run(fast), want, "{:?} at {at}", String::from_utf8_lossy(v));
        want.1.len()
    }

    #[test]
    fn on_at_matches_the_plain_one() {
        let mut next = crate::scan::tests::splitmix(0xe3a1_1000_u64);
        let mut found = 0;
        for round in 0..40_000 {
            let len = 1 + (next() % if round % 4 == 0 { 300 } else { 40 }) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| match next() % 24 {
                    0..=1 => b'@',
                    2..=4 => b'.',
                    5 => b'-',
                    6 => next() as u8,
                    7 => b"_%+ 9Z"[(next() % 6) as usize],
                    _ => b"abcdexyz019"[(next() % 11) as usize],
                })
                .collect();
            for a in (0..len).filter(|&a| v[a] == b'@') {
                let last_end = (next() % (a as u64 + 1)) as usize;
                found += same_as_plain(&v, 1 << EMAIL, last_end, a, on_at, plain_on_at);
            }
        }
        assert!(found > 3_000, "only {found} addresses");
    }

    /// `aws_key` against the byte loop it replaced, at every start of
    /// random values of key bytes and others.
    #[test]
    fn aws_key_matches_the_byte_loop() {
        let plain = |v: &[u8], i: usize| {
            const PREFIXES: [&[u8; 4]; 8] = [
                b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"ANPA", b"ANVA", b"AIPA",
            ];
            let key = v.get(i..i + 20)?;
            let ok = PREFIXES.iter().any(|p| key.starts_with(*p))
                && key[4..]
                    .iter()
                    .all(|&b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
                && !is_alnum(at(v, i + 20));
            ok.then_some(i + 20)
        };
        let mut next = crate::scan::tests::splitmix(0xa115_0001_u64);
        let mut found = 0;
        for _ in 0..100_000 {
            let mut v = Vec::new();
            if next().is_multiple_of(2) {
                v.extend_from_slice([b"AKIA", b"ASIA", b"AIPA", b"ANVB"][(next() % 4) as usize]);
            }
            for _ in 0..(12 + next() % 12) {
                v.push(match next() % 64 {
                    0 => next() as u8,
                    1 => b"0189@[`{a\x80"[(next() % 10) as usize],
                    _ => b"ABCXYZ234567"[(next() % 12) as usize],
                });
            }
            for i in 0..v.len() {
                let want = plain(&v, i);
                found += usize::from(want.is_some());
                assert_eq!(
                    super::aws_key(&v, i),
                    want,
                    "{:?} at {i}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(found > 1_000, "only {found} keys");
    }

    /// `on_colon` as it was before its early rejection of a colon that
    /// ends its token: the reference for the one in use.
    fn plain_on_colon(st: &mut State<'_, '_>, c: usize) -> usize {
        const MAX_LEN: usize = 45;
        let v = st.v;
        let floor = st.last_end.max(c.saturating_sub(MAX_LEN));
        let mut s = c;
        while s > floor && is_v6(v[s - 1]) {
            s -= 1;
        }
        let mut token_end = c + 1;
        while token_end < v.len() && is_v6(v[token_end]) && token_end - s <= MAX_LEN {
            token_end += 1;
        }
        let mut e = token_end;
        while e > c + 1 && v[e - 1] == b'.' {
            e -= 1;
        }
        let glued = |b: u8| is_alnum(b) || b == b'_';
        let bounded = !(s > 0 && (glued(v[s - 1]) || (s == floor && s > st.last_end)))
            && !(e < v.len() && glued(v[e]))
            && token_end - s <= MAX_LEN;
        if bounded && is_ipv6(&v[s..e]) {
            return st.push(s, e, IP);
        }
        let last = c + v[c..token_end]
            .iter()
            .rposition(|&b| b == b':')
            .unwrap_or(0);
        let short = v[c..last].split(|&b| b == b':').all(|g| g.len() < 7);
        if short { last + 1 } else { c + 1 }
    }

    /// `on_colon` against the plain one at every colon of random values
    /// of hex digits, colons, dots and other bytes, from random ends of a
    /// previous finding: the same spans and the same resume points.
    #[test]
    fn on_colon_matches_the_plain_one() {
        let mut next = crate::scan::tests::splitmix(0xc0_10_4e_u64);
        let mut found = 0;
        for round in 0..40_000 {
            let len = 1 + (next() % if round % 2 == 0 { 60 } else { 20 }) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| match next() % 16 {
                    0..=4 => b':',
                    5 => b'.',
                    6 => b' ',
                    7 => next() as u8,
                    8 => b"gxZ_-"[(next() % 5) as usize],
                    _ => b"0123456789abcdefABCDEF"[(next() % 22) as usize],
                })
                .collect();
            for c in (0..len).filter(|&c| v[c] == b':') {
                let last_end = (next() % (c as u64 + 1)) as usize;
                found += same_as_plain(&v, 1 << IP, last_end, c, on_colon, plain_on_colon);
            }
        }
        assert!(found > 1_000, "only {found} addresses");
    }

    #[test]
    fn ipv6() {
        for (v, want) in [
            ("2001:db8::1", "2001:db8::1"),
            (
                "from fe80::1ff:fe23:4567:890a%eth0",
                "fe80::1ff:fe23:4567:890a",
            ),
            (
                "[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443",
                "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            ),
            ("::ffff:192.0.2.128.", "::ffff:192.0.2.128"),
            ("dead:beef::1", "dead:beef::1"),
        ] {
            check(IP, v, &[want]);
        }
        for v in [
            "10:30:00",
            "2024-01-15T10:30:00Z",
            "00:1a:2b:3c:4d:5e",
            "::1",
            "::",
            "std::net",
            "key: value",
            "a:b:c",
            "1:2:3:4:5:6:7:8:9",
        ] {
            check(IP, v, &[]);
        }
    }
}
