//! Identifiers of the records the state machine creates. They are
//! allocated sequentially by the machine itself, so every node that applies
//! the same log hands out the same ids; users see and type them with a
//! prefix (`ar-12`, `g-7`, `ap-3`) so that an id says what it names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StateError;

macro_rules! record_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// What users type before the number.
            pub const PREFIX: &'static str = $prefix;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}-{}", $prefix, self.0)
            }
        }

        /// Accepts both the displayed form (`ar-12`) and the bare number (`12`).
        impl FromStr for $name {
            type Err = StateError;

            fn from_str(input: &str) -> Result<Self, StateError> {
                parse_number(input, $prefix).map($name).ok_or_else(|| StateError::InvalidId {
                    input: truncate_for_message(input),
                    expected: concat!($what, " id such as `", $prefix, "-12` or `12`"),
                })
            }
        }
    };
}

record_id!(
    /// One just-in-time access request.
    AccessRequestId,
    "ar",
    "an access request"
);
record_id!(
    /// One grant: the result of an approved access request.
    GrantId,
    "g",
    "a grant"
);
record_id!(
    /// One command approval request.
    ApprovalId,
    "ap",
    "an approval"
);

fn parse_number(input: &str, prefix: &str) -> Option<u64> {
    let trimmed = input.trim();
    let digits = match trimmed.split_once('-') {
        Some((given, digits)) if given.eq_ignore_ascii_case(prefix) => digits,
        Some(_) => return None,
        None => trimmed,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Echoing user input back is helpful, echoing a megabyte of it is not.
fn truncate_for_message(input: &str) -> String {
    const SHOWN: usize = 40;
    match input.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_the_prefix_users_type() {
        assert_eq!(AccessRequestId(12).to_string(), "ar-12");
        assert_eq!(GrantId(7).to_string(), "g-7");
        assert_eq!(ApprovalId(3).to_string(), "ap-3");
    }

    #[test]
    fn parses_prefixed_and_bare_forms() {
        assert_eq!(
            "ar-12".parse::<AccessRequestId>().unwrap(),
            AccessRequestId(12)
        );
        assert_eq!(
            "12".parse::<AccessRequestId>().unwrap(),
            AccessRequestId(12)
        );
        assert_eq!(" g-7 ".parse::<GrantId>().unwrap(), GrantId(7));
        assert_eq!("AP-3".parse::<ApprovalId>().unwrap(), ApprovalId(3));
    }

    #[test]
    fn refuses_other_kinds_and_garbage() {
        for bad in [
            "g-12",
            "ar-",
            "ar--1",
            "+12",
            "ar-1x",
            "",
            "ar-99999999999999999999",
        ] {
            let err = bad.parse::<AccessRequestId>().unwrap_err().to_string();
            assert!(
                err.contains("an access request id such as `ar-12` or `12`"),
                "{bad}: {err}"
            );
        }
        let long = "x".repeat(1000);
        let err = long.parse::<GrantId>().unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn serialises_as_a_plain_number() {
        assert_eq!(serde_json::to_string(&GrantId(7)).unwrap(), "7");
    }
}
