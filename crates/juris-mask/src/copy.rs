//! Masking of `COPY … TO STDOUT` rows in PostgreSQL's text and CSV formats.
//!
//! Each field is decoded (text: backslash escapes; CSV: quoting), masked
//! like a DataRow value, and re-encoded only if it changed: an unchanged
//! field keeps its exact original bytes, and an unchanged row is not copied
//! at all. The binary COPY format is not handled here (the proxy must not
//! pass it), nor is the header line of `HEADER` (the proxy knows which row
//! that is; masking it would only apply the value rules to column names).
//!
//! A payload normally holds one row; several rows in one payload are
//! handled too, each starting again at column 0.

use std::borrow::Cow;

use crate::{ColumnRuleId, Findings, Masker, Outcome};

/// The options of a `COPY … TO` in text or CSV format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// CSV rather than text.
    pub csv: bool,
    /// Field separator (text: tab; CSV: comma by default).
    pub delimiter: u8,
    /// CSV quote character.
    pub quote: u8,
    /// CSV escape character (defaults to the quote character).
    pub escape: u8,
    /// The null marker (text: `\N`; CSV: empty, unquoted).
    pub null: Vec<u8>,
}

impl CopyFormat {
    /// PostgreSQL's text format defaults: tab, `\N`.
    pub fn text() -> Self {
        CopyFormat {
            csv: false,
            delimiter: b'\t',
            quote: b'"',
            escape: b'"',
            null: b"\\N".to_vec(),
        }
    }

    /// PostgreSQL's CSV format defaults: comma, `"`, `"`, empty null.
    pub fn csv() -> Self {
        CopyFormat {
            csv: true,
            delimiter: b',',
            quote: b'"',
            escape: b'"',
            null: Vec::new(),
        }
    }
}

/// A row that does not follow its format. Carries positions only: never
/// the row's bytes, which are unmasked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    #[error("malformed COPY row: unterminated quoted field starting at byte {0}")]
    UnterminatedQuote(usize),
    #[error("malformed COPY row: data after a closing quote at byte {0}")]
    DataAfterQuote(usize),
    #[error("malformed COPY row: backslash at the end of the row")]
    TrailingBackslash,
}

/// Mask one COPY TO payload (trailing newline included).
///
/// `columns[i]` is the column rule of field `i` (`None`, or fields beyond
/// `columns.len()`: value rules only). Returns `Ok(false)` with `out`
/// untouched when nothing changed, `Ok(true)` with the whole re-encoded
/// payload in `out` otherwise. A `Null` outcome writes the null marker.
pub fn mask_row(
    masker: &Masker,
    format: &CopyFormat,
    columns: &[Option<ColumnRuleId>],
    row: &[u8],
    out: &mut Vec<u8>,
    findings: &mut Findings,
) -> Result<bool, CopyError> {
    let mut w = Writer {
        started: false,
        copied: 0,
        out,
        row,
    };
    // Scratch for one masked field; allocated on the first change only.
    let mut masked = Vec::new();
    let mut field = 0usize;
    let mut pos = 0usize;
    while pos < row.len() {
        let f = if format.csv {
            csv_field(format, row, pos)?
        } else {
            text_field(format, row, pos)?
        };
        if !f.null {
            let rule = columns.get(field).copied().flatten();
            let outcome = match rule {
                Some(id) => masker.mask_whole(id, &f.value, &mut masked),
                None => masker.mask_value(&f.value, &mut masked, findings),
            };
            match outcome {
                Outcome::Unchanged => {}
                Outcome::Null => w.replace(f.start..f.end, |o| o.extend_from_slice(&format.null)),
                Outcome::Rewritten => w.replace(f.start..f.end, |o| {
                    if format.csv {
                        csv_encode(format, &masked, o);
                    } else {
                        text_encode(format, &masked, o);
                    }
                }),
            }
        }
        pos = f.next;
        field = if f.row_end { 0 } else { field + 1 };
    }
    Ok(w.finish())
}

/// Copies the row into `out` lazily, from the first change on.
struct Writer<'a, 'b> {
    started: bool,
    copied: usize,
    out: &'a mut Vec<u8>,
    row: &'b [u8],
}

impl Writer<'_, '_> {
    fn replace(&mut self, range: std::ops::Range<usize>, write: impl FnOnce(&mut Vec<u8>)) {
        if !self.started {
            self.started = true;
            self.out.clear();
        }
        self.out
            .extend_from_slice(&self.row[self.copied..range.start]);
        write(self.out);
        self.copied = range.end;
    }

    fn finish(self) -> bool {
        if self.started {
            self.out.extend_from_slice(&self.row[self.copied..]);
        }
        self.started
    }
}

/// One parsed field.
struct Field<'a> {
    /// Raw extent in the row (quotes included).
    start: usize,
    end: usize,
    /// Decoded value.
    value: Cow<'a, [u8]>,
    null: bool,
    /// Where the next field starts.
    next: usize,
    /// The field ended its row.
    row_end: bool,
}

fn text_field<'a>(
    format: &CopyFormat,
    row: &'a [u8],
    start: usize,
) -> Result<Field<'a>, CopyError> {
    let mut p = start;
    let mut has_escape = false;
    while p < row.len() {
        let b = row[p];
        if b == b'\\' {
            if p + 1 >= row.len() || (row[p + 1] == b'\n' && p + 2 == row.len()) {
                return Err(CopyError::TrailingBackslash);
            }
            has_escape = true;
            p += 2;
            continue;
        }
        if b == format.delimiter || b == b'\n' {
            break;
        }
        p += 1;
    }
    let end = p.min(row.len());
    let raw = &row[start..end];
    let row_end = end >= row.len() || row[end] == b'\n';
    let null = raw == format.null.as_slice();
    let value = if has_escape && !null {
        Cow::Owned(text_decode(raw))
    } else {
        Cow::Borrowed(raw)
    };
    Ok(Field {
        start,
        end,
        value,
        null,
        next: end + 1,
        row_end,
    })
}

/// Undo COPY text escaping (`\n`, `\t`, octal `\101`, hex `\x41`, and
/// `\c` for any other `c`).
fn text_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 >= raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| char::from(*d).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            other => out.push(other),
        }
    }
    out
}

/// COPY text escaping, as the server's `CopyAttributeOutText` does it, plus
/// octal escapes for bytes that are not UTF-8 (a decoded `\200` stays
/// `\200`), so a row that was UTF-8 on the wire stays UTF-8.
fn text_encode(format: &CopyFormat, value: &[u8], out: &mut Vec<u8>) {
    for chunk in value.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            let esc = match b {
                0x08 => Some(b'b'),
                0x0c => Some(b'f'),
                b'\n' => Some(b'n'),
                b'\r' => Some(b'r'),
                b'\t' => Some(b't'),
                0x0b => Some(b'v'),
                b'\\' => Some(b'\\'),
                _ if b == format.delimiter => Some(b),
                _ => None,
            };
            match esc {
                Some(e) => out.extend_from_slice(&[b'\\', e]),
                None => out.push(b),
            }
        }
        for &b in chunk.invalid() {
            out.extend_from_slice(&[
                b'\\',
                b'0' + (b >> 6),
                b'0' + ((b >> 3) & 7),
                b'0' + (b & 7),
            ]);
        }
    }
}

fn csv_field<'a>(format: &CopyFormat, row: &'a [u8], start: usize) -> Result<Field<'a>, CopyError> {
    let (q, esc, delim) = (format.quote, format.escape, format.delimiter);
    let finish = |end: usize, value: Cow<'a, [u8]>, null: bool| {
        let row_end = end >= row.len() || row[end] == b'\n';
        Field {
            start,
            end,
            value,
            null,
            next: end + 1,
            row_end,
        }
    };
    if row.get(start) != Some(&q) {
        let len = row[start..]
            .iter()
            .position(|&b| b == delim || b == b'\n')
            .unwrap_or(row.len() - start);
        let raw = &row[start..start + len];
        // Only an unquoted field can be null: `""` is the empty string.
        let null = raw == format.null.as_slice();
        return Ok(finish(start + len, Cow::Borrowed(raw), null));
    }
    let mut value: Option<Vec<u8>> = None;
    let body = start + 1;
    let mut p = body;
    loop {
        let Some(&b) = row.get(p) else {
            return Err(CopyError::UnterminatedQuote(start));
        };
        if b == esc && esc != q && matches!(row.get(p + 1), Some(&n) if n == q || n == esc) {
            value
                .get_or_insert_with(|| row[body..p].to_vec())
                .push(row[p + 1]);
            p += 2;
        } else if b == q {
            if esc == q && row.get(p + 1) == Some(&q) {
                value.get_or_insert_with(|| row[body..p].to_vec()).push(q);
                p += 2;
            } else {
                let end = p + 1;
                match row.get(end) {
                    None => {}
                    Some(&n) if n == delim || n == b'\n' => {}
                    Some(_) => return Err(CopyError::DataAfterQuote(end)),
                }
                let value = match value {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(&row[body..p]),
                };
                return Ok(finish(end, value, false));
            }
        } else {
            if let Some(v) = value.as_mut() {
                v.push(b);
            }
            p += 1;
        }
    }
}

/// Always quoted: a masked value can then never read as the null marker
/// and needs no analysis of which characters would force quoting.
fn csv_encode(format: &CopyFormat, value: &[u8], out: &mut Vec<u8>) {
    let (q, esc) = (format.quote, format.escape);
    out.push(q);
    for &b in value {
        if b == q || b == esc {
            out.push(esc);
        }
        out.push(b);
    }
    out.push(q);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_decode_escapes() {
        assert_eq!(
            text_decode(br"a\tb\\c\nd\101\x41\x4g\q\0"),
            b"a\tb\\c\nd\x41\x41\x04gq\0"
        );
    }

    #[test]
    fn text_encode_round_trips() {
        let f = CopyFormat::text();
        let v = b"a\tb\\c\nd\re\x08\x0b\x0c|\x80\xff\xc3\xa9".to_vec();
        let mut enc = Vec::new();
        text_encode(&f, &v, &mut enc);
        assert_eq!(text_decode(&enc), v);
        assert!(!enc.contains(&b'\n') && !enc.contains(&b'\t'));
        assert!(std::str::from_utf8(&enc).is_ok());
    }
}
