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

use std::fmt::Write as _;

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

/// The canonical serialisation of any `Serialize` value, written straight
/// from it: the same bytes as [`to_string`] of `serde_json::to_value`, but
/// with no `Value` tree in between (building one, a map node and a string
/// per member, was half of the audit writer's time per record). Objects
/// are gathered member by member and written sorted when they end; a key
/// given twice keeps its last value, as a `Value` object does.
pub fn to_string_of<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    write_of(&mut out, value)?;
    Ok(out)
}

/// [`to_string_of`], appended to `out`.
pub fn write_of<T: serde::Serialize + ?Sized>(
    out: &mut String,
    value: &T,
) -> Result<(), serde_json::Error> {
    value.serialize(Canonical { out })
}

mod direct {
    //! The serializer behind [`super::to_string_of`].

    use std::fmt::Write;

    use serde::ser::{self, Impossible, Serialize};
    use serde_json::Error;

    use super::write_str;

    pub(super) struct Canonical<'a> {
        pub(super) out: &'a mut String,
    }

    /// Members of an object being written, sorted and written at its end:
    /// their values are written one after the other into `values`, and
    /// each member is its key and its value's range there.
    pub(super) struct Members<'a> {
        out: &'a mut String,
        /// An externally tagged variant's name: the object is wrapped in
        /// `{"name":...}`.
        variant: Option<&'static str>,
        values: String,
        members: Vec<(Key, std::ops::Range<usize>)>,
        key: Option<String>,
    }

    /// A member's name: a struct's field names are static.
    enum Key {
        Static(&'static str),
        Owned(String),
    }

    impl Key {
        fn as_str(&self) -> &str {
            match self {
                Key::Static(key) => key,
                Key::Owned(key) => key,
            }
        }
    }

    /// Items of an array, written as they come.
    pub(super) struct Items<'a> {
        out: &'a mut String,
        variant: Option<&'static str>,
        first: bool,
    }

    impl<'a> Members<'a> {
        fn new(out: &'a mut String, variant: Option<&'static str>, len: Option<usize>) -> Self {
            Members {
                out,
                variant,
                // Room for short members without growing (an audit
                // record's event has ten or so).
                values: String::with_capacity(len.unwrap_or(0) * 32),
                members: Vec::with_capacity(len.unwrap_or(0)),
                key: None,
            }
        }

        fn member<T: Serialize + ?Sized>(&mut self, key: Key, value: &T) -> Result<(), Error> {
            let start = self.values.len();
            value.serialize(Canonical {
                out: &mut self.values,
            })?;
            self.members.push((key, start..self.values.len()));
            Ok(())
        }

        fn finish(mut self) -> Result<(), Error> {
            // Stable: of equal keys, the last one given is last.
            self.members
                .sort_by(|a, b| a.0.as_str().as_bytes().cmp(b.0.as_str().as_bytes()));
            if let Some(variant) = self.variant {
                self.out.push('{');
                write_str(self.out, variant);
                self.out.push(':');
            }
            self.out.push('{');
            let mut first = true;
            for (i, (key, value)) in self.members.iter().enumerate() {
                let key = key.as_str();
                if self
                    .members
                    .get(i + 1)
                    .is_some_and(|next| next.0.as_str() == key)
                {
                    continue;
                }
                if !first {
                    self.out.push(',');
                }
                first = false;
                write_str(self.out, key);
                self.out.push(':');
                self.out.push_str(&self.values[value.clone()]);
            }
            self.out.push('}');
            if self.variant.is_some() {
                self.out.push('}');
            }
            Ok(())
        }
    }

    impl<'a> Items<'a> {
        fn new(out: &'a mut String, variant: Option<&'static str>) -> Self {
            if let Some(variant) = variant {
                out.push('{');
                write_str(out, variant);
                out.push(':');
            }
            out.push('[');
            Items {
                out,
                variant,
                first: true,
            }
        }

        fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
            if !self.first {
                self.out.push(',');
            }
            self.first = false;
            value.serialize(Canonical {
                out: &mut *self.out,
            })
        }

        fn finish(self) -> Result<(), Error> {
            self.out.push(']');
            if self.variant.is_some() {
                self.out.push('}');
            }
            Ok(())
        }
    }

    impl<'a> ser::Serializer for Canonical<'a> {
        type Ok = ();
        type Error = Error;
        type SerializeSeq = Items<'a>;
        type SerializeTuple = Items<'a>;
        type SerializeTupleStruct = Items<'a>;
        type SerializeTupleVariant = Items<'a>;
        type SerializeMap = Members<'a>;
        type SerializeStruct = Members<'a>;
        type SerializeStructVariant = Members<'a>;

        fn serialize_bool(self, v: bool) -> Result<(), Error> {
            self.out.push_str(if v { "true" } else { "false" });
            Ok(())
        }
        fn serialize_i8(self, v: i8) -> Result<(), Error> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_i16(self, v: i16) -> Result<(), Error> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_i32(self, v: i32) -> Result<(), Error> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_i64(self, v: i64) -> Result<(), Error> {
            let _ = write!(self.out, "{v}");
            Ok(())
        }
        fn serialize_i128(self, v: i128) -> Result<(), Error> {
            // As `Value` takes it: only what fits an i64 or a u64.
            match (i64::try_from(v), u64::try_from(v)) {
                (Ok(v), _) => self.serialize_i64(v),
                (_, Ok(v)) => self.serialize_u64(v),
                _ => Err(<Error as ser::Error>::custom("number out of range")),
            }
        }
        fn serialize_u8(self, v: u8) -> Result<(), Error> {
            self.serialize_u64(u64::from(v))
        }
        fn serialize_u16(self, v: u16) -> Result<(), Error> {
            self.serialize_u64(u64::from(v))
        }
        fn serialize_u32(self, v: u32) -> Result<(), Error> {
            self.serialize_u64(u64::from(v))
        }
        fn serialize_u64(self, v: u64) -> Result<(), Error> {
            let _ = write!(self.out, "{v}");
            Ok(())
        }
        fn serialize_u128(self, v: u128) -> Result<(), Error> {
            match u64::try_from(v) {
                Ok(v) => self.serialize_u64(v),
                Err(_) => Err(<Error as ser::Error>::custom("number out of range")),
            }
        }
        fn serialize_f32(self, v: f32) -> Result<(), Error> {
            self.serialize_f64(f64::from(v))
        }
        fn serialize_f64(self, v: f64) -> Result<(), Error> {
            // As `Value` holds it: a number, or null if it is not finite.
            match serde_json::Number::from_f64(v) {
                Some(n) => self.out.push_str(&n.to_string()),
                None => self.out.push_str("null"),
            }
            Ok(())
        }
        fn serialize_char(self, v: char) -> Result<(), Error> {
            write_str(self.out, v.encode_utf8(&mut [0; 4]));
            Ok(())
        }
        fn serialize_str(self, v: &str) -> Result<(), Error> {
            write_str(self.out, v);
            Ok(())
        }
        fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
            let mut items = Items::new(self.out, None);
            for byte in v {
                items.item(byte)?;
            }
            items.finish()
        }
        fn serialize_none(self) -> Result<(), Error> {
            self.serialize_unit()
        }
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
            value.serialize(self)
        }
        fn serialize_unit(self) -> Result<(), Error> {
            self.out.push_str("null");
            Ok(())
        }
        fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
            self.serialize_unit()
        }
        fn serialize_unit_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
        ) -> Result<(), Error> {
            self.serialize_str(variant)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            value: &T,
        ) -> Result<(), Error> {
            value.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            value: &T,
        ) -> Result<(), Error> {
            self.out.push('{');
            write_str(self.out, variant);
            self.out.push(':');
            value.serialize(Canonical { out: self.out })?;
            self.out.push('}');
            Ok(())
        }
        fn serialize_seq(self, _len: Option<usize>) -> Result<Items<'a>, Error> {
            Ok(Items::new(self.out, None))
        }
        fn serialize_tuple(self, _len: usize) -> Result<Items<'a>, Error> {
            Ok(Items::new(self.out, None))
        }
        fn serialize_tuple_struct(
            self,
            _name: &'static str,
            _len: usize,
        ) -> Result<Items<'a>, Error> {
            Ok(Items::new(self.out, None))
        }
        fn serialize_tuple_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            _len: usize,
        ) -> Result<Items<'a>, Error> {
            Ok(Items::new(self.out, Some(variant)))
        }
        fn serialize_map(self, len: Option<usize>) -> Result<Members<'a>, Error> {
            Ok(Members::new(self.out, None, len))
        }
        fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Members<'a>, Error> {
            Ok(Members::new(self.out, None, Some(len)))
        }
        fn serialize_struct_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            len: usize,
        ) -> Result<Members<'a>, Error> {
            Ok(Members::new(self.out, Some(variant), Some(len)))
        }
    }

    macro_rules! items {
        ($trait:ident, $method:ident) => {
            impl ser::$trait for Items<'_> {
                type Ok = ();
                type Error = Error;
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                    self.item(value)
                }
                fn end(self) -> Result<(), Error> {
                    self.finish()
                }
            }
        };
    }
    items!(SerializeSeq, serialize_element);
    items!(SerializeTuple, serialize_element);
    items!(SerializeTupleStruct, serialize_field);
    items!(SerializeTupleVariant, serialize_field);

    impl ser::SerializeMap for Members<'_> {
        type Ok = ();
        type Error = Error;
        fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
            self.key = Some(key.serialize(KeyName)?);
            Ok(())
        }
        fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
            let key = self
                .key
                .take()
                .ok_or_else(|| <Error as ser::Error>::custom("a map value without a key"))?;
            self.member(Key::Owned(key), value)
        }
        fn end(self) -> Result<(), Error> {
            self.finish()
        }
    }

    macro_rules! fields {
        ($trait:ident) => {
            impl ser::$trait for Members<'_> {
                type Ok = ();
                type Error = Error;
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    value: &T,
                ) -> Result<(), Error> {
                    self.member(Key::Static(key), value)
                }
                fn end(self) -> Result<(), Error> {
                    self.finish()
                }
            }
        };
    }
    fields!(SerializeStruct);
    fields!(SerializeStructVariant);

    /// A map key as `serde_json` turns it into an object member name:
    /// strings, characters, integers and unit variants.
    struct KeyName;

    fn not_a_key() -> Error {
        <Error as ser::Error>::custom("key must be a string")
    }

    impl ser::Serializer for KeyName {
        type Ok = String;
        type Error = Error;
        type SerializeSeq = Impossible<String, Error>;
        type SerializeTuple = Impossible<String, Error>;
        type SerializeTupleStruct = Impossible<String, Error>;
        type SerializeTupleVariant = Impossible<String, Error>;
        type SerializeMap = Impossible<String, Error>;
        type SerializeStruct = Impossible<String, Error>;
        type SerializeStructVariant = Impossible<String, Error>;

        fn serialize_str(self, v: &str) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_char(self, v: char) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_i8(self, v: i8) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_i16(self, v: i16) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_i32(self, v: i32) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_i64(self, v: i64) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_u8(self, v: u8) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_u16(self, v: u16) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_u32(self, v: u32) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_u64(self, v: u64) -> Result<String, Error> {
            Ok(v.to_string())
        }
        fn serialize_unit_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
        ) -> Result<String, Error> {
            Ok(variant.to_string())
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            value: &T,
        ) -> Result<String, Error> {
            value.serialize(self)
        }
        fn serialize_bool(self, _v: bool) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_f32(self, _v: f32) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_f64(self, _v: f64) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_bytes(self, _v: &[u8]) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_none(self) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_unit(self) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_unit_struct(self, _name: &'static str) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _value: &T,
        ) -> Result<String, Error> {
            Err(not_a_key())
        }
        fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
            Err(not_a_key())
        }
        fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
            Err(not_a_key())
        }
        fn serialize_tuple_struct(
            self,
            _name: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeTupleStruct, Error> {
            Err(not_a_key())
        }
        fn serialize_tuple_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeTupleVariant, Error> {
            Err(not_a_key())
        }
        fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
            Err(not_a_key())
        }
        fn serialize_struct(
            self,
            _name: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeStruct, Error> {
            Err(not_a_key())
        }
        fn serialize_struct_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeStructVariant, Error> {
            Err(not_a_key())
        }
    }
}

use direct::Canonical;

/// Append `s` as a canonical JSON string.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Statement texts are long and rarely need escaping: copy the runs
    // between escapes whole, and look for escapes eight bytes at a time.
    // Every escaped character is ASCII, so a run always ends on a
    // character boundary.
    let bytes = s.as_bytes();
    let mut run_start = 0;
    let mut at = 0;
    while at < bytes.len() {
        if let Some(word) = bytes.get(at..at + 8)
            && let Ok(word) = <[u8; 8]>::try_from(word)
            && !word_needs_escape(u64::from_le_bytes(word))
        {
            at += 8;
            continue;
        }
        let end = (at + 8).min(bytes.len());
        for (offset, &byte) in bytes[at..end].iter().enumerate() {
            let escaped = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                0x08 => "\\b",
                0x0c => "\\f",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                byte if byte < 0x20 => {
                    out.push_str(&s[run_start..at + offset]);
                    let _ = write!(out, "\\u{byte:04x}");
                    run_start = at + offset + 1;
                    continue;
                }
                _ => continue,
            };
            out.push_str(&s[run_start..at + offset]);
            out.push_str(escaped);
            run_start = at + offset + 1;
        }
        at = end;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

/// Whether any of the eight bytes of `word` is `"`, `\` or below 0x20.
/// Exact: the borrow of the zero-byte test can only mark bytes above one
/// that really matches.
fn word_needs_escape(word: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let below_space = word.wrapping_sub(LO * 0x20) & !word & HI;
    (below_space
        | has_zero(word ^ (LO * u64::from(b'"')))
        | has_zero(word ^ (LO * u64::from(b'\\'))))
        != 0
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

        /// Escapes anywhere in or between the eight-byte words that are
        /// checked at once, after runs of plain text.
        #[test]
        fn escapes_after_plain_runs_are_found(s in "([a-zé €]{0,17}[\"\\\\\\x00-\\x1f]){0,6}[a-z]{0,9}") {
            proptest::prop_assert_eq!(to_string(&json!(s)), serde_json::to_string(&s).unwrap());
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,12}|[\\x00-\\x7f]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-zA-Z_]{0,6}|\\PC{0,4}", inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn writing_directly_equals_writing_the_value(value in any_json()) {
            proptest::prop_assert_eq!(to_string_of(&value).unwrap(), to_string(&value));
        }
    }

    /// The shapes serde derives (tagged enums, variants, options, maps
    /// with integer keys, skipped fields) written directly and through
    /// `Value`.
    #[test]
    fn derived_shapes_are_written_as_their_value() {
        use serde::Serialize;
        use std::collections::BTreeMap;
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Tagged {
            Zebra {
                zulu: u8,
                alpha: Option<String>,
                mid: Vec<Plain>,
            },
            Unit,
        }
        #[derive(Serialize)]
        enum External {
            Newtype(u32),
            Tuple(i8, String),
            Struct { b: bool, a: () },
            Unit,
        }
        #[derive(Serialize)]
        struct Plain {
            z: char,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            y: BTreeMap<u16, &'static str>,
            x: (u8, &'static str),
            w: External,
            v: Vec<External>,
            #[serde(with = "serde_bytes_as_seq")]
            u: Vec<u8>,
            t: i128,
            s: u128,
        }
        mod serde_bytes_as_seq {
            pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }
        }
        let plain = || Plain {
            z: 'é',
            skipped: None,
            y: BTreeMap::from([(10, "ten"), (2, "two")]),
            x: (1, "one"),
            w: External::Struct { b: true, a: () },
            v: vec![
                External::Newtype(7),
                External::Tuple(-1, "t".into()),
                External::Unit,
            ],
            u: vec![0, 255],
            t: -5,
            s: u128::from(u64::MAX),
        };
        let shapes = [
            Tagged::Zebra {
                zulu: 1,
                alpha: Some("a\"b".into()),
                mid: vec![plain(), plain()],
            },
            Tagged::Zebra {
                zulu: 0,
                alpha: None,
                mid: vec![],
            },
            Tagged::Unit,
        ];
        for shape in &shapes {
            let value = serde_json::to_value(shape).unwrap();
            assert_eq!(to_string_of(shape).unwrap(), to_string(&value));
        }
        // Beyond 64 bits, refused like `Value` refuses it.
        assert!(serde_json::to_value(i128::MIN).is_err());
        assert!(to_string_of(&i128::MIN).is_err());
        assert!(to_string_of(&u128::MAX).is_err());
    }

    /// A key given twice keeps its last value, as in a `Value` object.
    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        struct Twice;
        impl serde::Serialize for Twice {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("k", &1)?;
                map.serialize_entry("a", &0)?;
                map.serialize_entry("k", &2)?;
                map.end()
            }
        }
        let value = serde_json::to_value(Twice).unwrap();
        assert_eq!(to_string_of(&Twice).unwrap(), to_string(&value));
        assert_eq!(to_string_of(&Twice).unwrap(), r#"{"a":0,"k":2}"#);
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
