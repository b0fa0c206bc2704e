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

fn aws_key(v: &[u8], i: usize) -> Option<usize> {
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
fn iban(v: &[u8], i: usize) -> Option<usize> {
    if !(at(v, i + 1).is_ascii_uppercase()
        && at(v, i + 2).is_ascii_digit()
        && at(v, i + 3).is_ascii_digit())
    {
        return None;
    }
    let len = iban_len([v[i], v[i + 1]])?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut p = i;
    let is_iban_char = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    while n < len {
        let b = at(v, p);
        if is_iban_char(b) {
            chars[n] = b;
            n += 1;
        } else if !(b == b' ' && n % 4 == 0 && is_iban_char(at(v, p + 1))) {
            return None;
        }
        p += 1;
    }
    if is_alnum(at(v, p)) {
        return None;
    }
    let check = (chars[2] - b'0') * 10 + (chars[3] - b'0');
    ((2..=98).contains(&check) && mod97(&chars[..len]) == 1).then_some(p)
}

/// ISO 7064 mod 97-10 over the rearranged IBAN, letters as 10–35.
pub(crate) fn mod97(iban: &[u8]) -> u32 {
    // Reducing only when the accumulator nears overflow (rather than after
    // every character) spares most divisions; the remainder is the same.
    const LIMIT: u64 = 1 << 56;
    let (head, rest) = iban.split_at(4.min(iban.len()));
    let step = |r: u64, &b: &u8| {
        let r = if r >= LIMIT { r % 97 } else { r };
        if b.is_ascii_digit() {
            r * 10 + u64::from(b - b'0')
        } else {
            r * 100 + u64::from(b.to_ascii_uppercase().wrapping_sub(b'A')) + 10
        }
    };
    // Two folds: a chained iterator checked which half it was in at
    // every character.
    let r = head.iter().fold(rest.iter().fold(0, step), step);
    (r % 97) as u32
}

// ---- email ------------------------------------------------------------------

fn is_local(b: u8) -> bool {
    is_alnum(b) || b"._%+-".contains(&b)
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
        while is_alnum(at(v, p)) || at(v, p) == b'-' {
            p += 1;
        }
        if p == l || v[l] == b'-' || v[p - 1] == b'-' || p - l > MAX_LABEL || p - d > MAX_DOMAIN {
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
    if !(is_v6(at(v, c + 1)) || (c > st.last_end && is_v6(v[c - 1]))) {
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
        assert_eq!(mod97(b"GB82WEST12345698765432"), 1);
        // Against the textbook definition (reduce after every character).
        let plain = |iban: &[u8]| {
            let (head, rest) = iban.split_at(4.min(iban.len()));
            rest.iter().chain(head).fold(0u32, |r, &b| {
                if b.is_ascii_digit() {
                    (r * 10 + u32::from(b - b'0')) % 97
                } else {
                    (r * 100 + u32::from(b.to_ascii_uppercase() - b'A') + 10) % 97
                }
            })
        };
        let mut seed = 3u64;
        for len in 0..=34 {
            for _ in 0..200 {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(seed >> 58) as usize % 36]
                    })
                    .collect();
                assert_eq!(mod97(&v), plain(&v), "{v:?}");
            }
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
