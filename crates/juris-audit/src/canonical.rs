//! Canonical JSON: the single byte form of a JSON value that is hashed and
//! signed, so that an auditor can recompute every hash with any JSON
//! library.
//!
//! The rules (a subset of RFC 8785, JCS, sufficient because Juris writes no
//! floating-point numbers and only ASCII object keys):
//! * no whitespace outside strings;
//! * object members sorted by key, comparing the keys' UTF-8 bytes;
//! * strings escaped minimally: `"` → `\"`, `\` → `\\`, U+0008 → `\b`,
//!   U+000C → `\f`, U+000A → `\n`, U+000D → `\r`, U+0009 → `\t`, any other
//!   character below U+0020 → `\u00xx` (lower-case hex); everything else,
//!   including non-ASCII, as raw UTF-8;
//! * integers in plain decimal; `true`, `false`, `null`.
//!
//! Sorting is done here rather than relying on `serde_json::Map` order,
//! because a workspace-wide `preserve_order` feature would silently change
//! that order and with it every hash.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical serialisation of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value);
    out
}

fn write(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write(out, &map[key]);
            }
            out.push('}');
        }
    }
}

/// Append `s` as a canonical JSON string.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Statement texts are long and rarely need escaping: copy the runs
    // between escapes whole. Every escaped character is ASCII, so a run
    // always ends on a character boundary.
    let mut run_start = 0;
    for (at, byte) in s.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            byte if byte < 0x20 => {
                out.push_str(&s[run_start..at]);
                out.push_str(&format!("\\u{byte:04x}"));
                run_start = at + 1;
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[run_start..at]);
        out.push_str(escaped);
        run_start = at + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` is 64 lower-case hex digits (how every hash is written).
pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"d": [true, null], "c": "x"}});
        assert_eq!(to_string(&v), r#"{"a":{"c":"x","d":[true,null]},"b":1}"#);
    }

    #[test]
    fn escapes_minimally() {
        let v = json!("q\"b\\\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é€");
        assert_eq!(
            to_string(&v),
            "\"q\\\"b\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é€\""
        );
    }

    #[test]
    fn agrees_with_serde_json_on_strings() {
        // serde_json's compact writer follows the same escaping rules; if a
        // future version changed them, canonical lines would stop
        // round-tripping, so pin the agreement.
        for s in ["plain", "a\u{0}b", "\u{2028}", "tab\there", "😀"] {
            assert_eq!(to_string(&json!(s)), serde_json::to_string(s).unwrap());
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(s in "\\PC*|[\\x00-\\x7f]{0,40}") {
            proptest::prop_assert_eq!(to_string(&json!(s)), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn known_hash() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_hash(&sha256_hex(b"")));
        assert!(!is_hash(&"A".repeat(64)));
    }
}
