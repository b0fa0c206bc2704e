//! Arbitrary text as SQL from a client: classifying it never panics, its
//! fingerprint key exists only for text that parses (and has a
//! fingerprint), and a text's key and classes do not depend on whether
//! the key was asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if sql.contains('\0') {
        // A NUL ends a string in the wire protocol: never SQL text.
        return;
    }
    let (statements, key) = juris_policy::classify_keyed(sql);
    assert_eq!(statements, juris_policy::classify(sql));
    if key.is_some() {
        assert!(
            juris_policy::fingerprint(sql).is_some(),
            "a key for text without a fingerprint"
        );
        assert_eq!(juris_policy::classify_keyed(sql).1, key);
    }
});
