//! Pure access-token checks: header reading, the algorithm allow-list and
//! the claim checks that turn a verified claim set into a [`Principal`].
//! No I/O and no clock: callers pass `now`.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::Algorithm;
use juris_types::Principal;
use serde_json::{Map, Value};

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. `Display` says in plain words which check
/// failed and never contains the token or anything taken from it beyond a
/// sanitised algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("token is malformed (not a signed JWT)")]
    Malformed,
    #[error("token algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("token signed with an unknown key id")]
    UnknownKeyId,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token is not yet valid (nbf is in the future)")]
    NotYetValid,
    #[error("token issuer is not the configured identity provider")]
    WrongIssuer,
    /// Holds the configured audience (never a value from the token).
    #[error("token audience does not include {0}")]
    WrongAudience(String),
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("the identity provider's signing keys are unavailable")]
    KeysUnavailable,
}

/// How to validate access tokens of one issuer.
#[derive(Debug, Clone)]
pub struct ValidatorSettings {
    /// The issuer, exactly as its discovery document spells it.
    pub issuer: String,
    /// The audience the gateway requires in `aud`.
    pub audience: String,
    /// Claim holding the principal's groups (default `groups`).
    pub groups_claim: String,
    /// Allowed signature algorithms (default RS256, ES256). Symmetric
    /// algorithms and `none` are never accepted.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
    pub leeway: Duration,
    /// An unknown key id refreshes the JWKS at most this often (default 60 s).
    pub jwks_min_refresh_interval: Duration,
    /// Timeout of each request to the identity provider (default 10 s).
    pub http_timeout: Duration,
}

impl ValidatorSettings {
    /// Settings with the defaults for everything but issuer and audience.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        ValidatorSettings {
            issuer: issuer.into(),
            audience: audience.into(),
            groups_claim: "groups".into(),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            leeway: Duration::from_secs(30),
            jwks_min_refresh_interval: Duration::from_secs(60),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// What the header says, read without trusting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// Sanitised (ASCII alphanumerics, at most 16) so it can be echoed.
    pub alg: String,
    pub kid: Option<String>,
}

/// Read `alg` and `kid` of a compact JWS, after the size and shape checks.
pub fn read_header(token: &str) -> Result<TokenHeader, TokenRejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenRejection::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenRejection::Malformed);
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenRejection::Malformed)?;
    let header: Value = serde_json::from_slice(&raw).map_err(|_| TokenRejection::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenRejection::Malformed)?;
    let alg: String = alg
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenRejection::Malformed),
    };
    Ok(TokenHeader { alg, kid })
}

/// The asymmetric algorithm named `alg`; `none`, HMAC and unknown names are `None`.
pub fn asymmetric_algorithm(alg: &str) -> Option<Algorithm> {
    use std::str::FromStr;
    match alg {
        // With a symmetric algorithm anyone holding the key could mint tokens.
        "HS256" | "HS384" | "HS512" => None,
        other => Algorithm::from_str(other).ok(),
    }
}

/// The header's algorithm if it is on the allow-list; checked before any key lookup.
pub fn allowed_algorithm(
    header: &TokenHeader,
    allowed: &[Algorithm],
) -> Result<Algorithm, TokenRejection> {
    asymmetric_algorithm(&header.alg)
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| TokenRejection::AlgorithmNotAllowed(header.alg.clone()))
}

/// A NumericDate claim as whole seconds; `Err(Malformed)` if present but not a number.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenRejection> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else if let Some(v) = n.as_f64().filter(|v| v.is_finite()) {
                Ok(Some(if v <= 0.0 { 0 } else { v.floor() as u64 }))
            } else {
                Err(TokenRejection::Malformed)
            }
        }
        Some(_) => Err(TokenRejection::Malformed),
    }
}

fn text<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Check the claims of a token whose signature is verified, at `now`
/// (seconds since the Unix epoch), and build the principal.
///
/// Order: `exp`, `nbf` (both with leeway), `iss` (exact), `aud` (string or
/// array containing the audience), `sub`.
pub fn check_claims(
    claims: &Map<String, Value>,
    settings: &ValidatorSettings,
    now: u64,
) -> Result<Principal, TokenRejection> {
    let leeway = settings.leeway.as_secs();
    let expires_at = numeric_date(claims, "exp")?.ok_or(TokenRejection::MissingClaim("exp"))?;
    if expires_at.saturating_add(leeway) <= now {
        return Err(TokenRejection::Expired);
    }
    if let Some(not_before) = numeric_date(claims, "nbf")?
        && not_before > now.saturating_add(leeway)
    {
        return Err(TokenRejection::NotYetValid);
    }
    match claims.get("iss") {
        None => return Err(TokenRejection::MissingClaim("iss")),
        Some(Value::String(iss)) if *iss == settings.issuer => {}
        Some(_) => return Err(TokenRejection::WrongIssuer),
    }
    let audience_ok = match claims.get("aud") {
        None => return Err(TokenRejection::MissingClaim("aud")),
        Some(Value::String(aud)) => *aud == settings.audience,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|a| a.as_str() == Some(settings.audience.as_str())),
        Some(_) => false,
    };
    if !audience_ok {
        return Err(TokenRejection::WrongAudience(settings.audience.clone()));
    }
    let subject = text(claims, "sub").ok_or(TokenRejection::MissingClaim("sub"))?;
    let groups = match claims.get(&settings.groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(one)) if !one.is_empty() => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(Principal {
        issuer: settings.issuer.clone(),
        subject: subject.to_string(),
        display_name: text(claims, "email")
            .or_else(|| text(claims, "preferred_username"))
            .map(str::to_string),
        groups,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn settings() -> ValidatorSettings {
        ValidatorSettings::new("http://127.0.0.1:1", "urn:juris:gateway")
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({
            "iss": "http://127.0.0.1:1", "aud": "urn:juris:gateway", "sub": "alice",
            "exp": NOW + 300, "iat": NOW, "email": "alice@example.test",
            "groups": ["dba", "engineering"],
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base.as_object().unwrap().clone()
    }

    fn check(extra: Value) -> Result<Principal, TokenRejection> {
        check_claims(&claims(extra), &settings(), NOW)
    }

    #[test]
    fn headers_are_read_defensively() {
        assert_eq!(read_header("a.b"), Err(TokenRejection::Malformed));
        assert_eq!(read_header("a.b.c.d"), Err(TokenRejection::Malformed));
        assert_eq!(read_header("!!.e30.x"), Err(TokenRejection::Malformed));
        assert_eq!(
            read_header(&"x".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenRejection::Malformed)
        );
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert_eq!(read_header(&none).unwrap().alg, "none");
        let kid = format!("{}.e30.sig", b64(r#"{"alg":"ES256","kid":"k1"}"#));
        assert_eq!(
            read_header(&kid).unwrap(),
            TokenHeader {
                alg: "ES256".into(),
                kid: Some("k1".into())
            }
        );
        let hostile = format!("{}.e30.sig", b64(r#"{"alg":"<script>alert(1)</script>"}"#));
        assert_eq!(read_header(&hostile).unwrap().alg, "scriptalert1scri");
    }

    #[test]
    fn only_allow_listed_asymmetric_algorithms_pass() {
        let allowed = [Algorithm::RS256, Algorithm::ES256];
        let header = |alg: &str| TokenHeader {
            alg: alg.into(),
            kid: None,
        };
        assert_eq!(
            allowed_algorithm(&header("ES256"), &allowed),
            Ok(Algorithm::ES256)
        );
        for bad in ["none", "HS256", "ES384", "nonsense", ""] {
            assert_eq!(
                allowed_algorithm(&header(bad), &allowed),
                Err(TokenRejection::AlgorithmNotAllowed(bad.into()))
            );
        }
        // Even if someone configures HS256, it is never accepted.
        assert!(allowed_algorithm(&header("HS256"), &[Algorithm::HS256]).is_err());
    }

    #[test]
    fn a_good_claim_set_becomes_a_principal() {
        let p = check(json!({})).unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.display_name.as_deref(), Some("alice@example.test"));
        assert_eq!(p.groups, ["dba", "engineering"]);
        assert_eq!(p.expires_at, NOW + 300);
        assert_eq!(p.issuer, "http://127.0.0.1:1");
    }

    #[test]
    fn expiry_and_not_before_respect_the_leeway() {
        assert_eq!(
            check(json!({"exp": NOW - 31})),
            Err(TokenRejection::Expired)
        );
        assert_eq!(
            check(json!({"exp": NOW - 30})),
            Err(TokenRejection::Expired)
        );
        assert!(check(json!({"exp": NOW - 29})).is_ok());
        assert_eq!(
            check(json!({"nbf": NOW + 31})),
            Err(TokenRejection::NotYetValid)
        );
        assert!(check(json!({"nbf": NOW + 30})).is_ok());
        assert!(check(json!({"exp": (NOW + 10) as f64 + 0.5})).is_ok());
        assert_eq!(
            check(json!({"exp": null})),
            Err(TokenRejection::MissingClaim("exp"))
        );
        assert_eq!(
            check(json!({"exp": "soon"})),
            Err(TokenRejection::Malformed)
        );
        assert_eq!(
            check(json!({"nbf": "later"})),
            Err(TokenRejection::Malformed)
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        for iss in [
            json!("http://127.0.0.1:1/"),
            json!("HTTP://127.0.0.1:1"),
            json!(["http://127.0.0.1:1"]),
        ] {
            assert_eq!(
                check(json!({ "iss": iss })),
                Err(TokenRejection::WrongIssuer)
            );
        }
        assert_eq!(
            check(json!({"iss": null})),
            Err(TokenRejection::MissingClaim("iss"))
        );
    }

    #[test]
    fn audience_may_be_a_string_or_an_array() {
        assert!(check(json!({"aud": ["other", "urn:juris:gateway"]})).is_ok());
        let wrong = Err(TokenRejection::WrongAudience("urn:juris:gateway".into()));
        assert_eq!(check(json!({"aud": "other"})), wrong);
        assert_eq!(check(json!({"aud": ["other"]})), wrong);
        assert_eq!(check(json!({"aud": 7})), wrong);
        assert_eq!(
            check(json!({"aud": null})),
            Err(TokenRejection::MissingClaim("aud"))
        );
    }

    #[test]
    fn subject_is_required_and_groups_and_names_are_optional() {
        assert_eq!(
            check(json!({"sub": null})),
            Err(TokenRejection::MissingClaim("sub"))
        );
        assert_eq!(
            check(json!({"sub": ""})),
            Err(TokenRejection::MissingClaim("sub"))
        );
        let p = check(json!({"groups": null, "email": null, "preferred_username": "al"})).unwrap();
        assert!(p.groups.is_empty());
        assert_eq!(p.display_name.as_deref(), Some("al"));
        let p = check(json!({"groups": ["a", 1, "b"], "email": null})).unwrap();
        assert_eq!(p.groups, ["a", "b"]);
        assert_eq!(p.display_name, None);
        assert_eq!(p.name(), "alice");
    }

    #[test]
    fn groups_come_from_the_configured_claim() {
        let mut settings = settings();
        settings.groups_claim = "roles".into();
        let p = check_claims(&claims(json!({"roles": ["x"]})), &settings, NOW).unwrap();
        assert_eq!(p.groups, ["x"]);
    }

    #[test]
    fn rejections_say_what_failed_in_plain_words() {
        assert_eq!(TokenRejection::Expired.to_string(), "token expired");
        assert_eq!(
            TokenRejection::UnknownKeyId.to_string(),
            "token signed with an unknown key id"
        );
        assert_eq!(
            TokenRejection::WrongAudience("urn:juris:gateway".into()).to_string(),
            "token audience does not include urn:juris:gateway"
        );
        assert!(
            TokenRejection::AlgorithmNotAllowed("none".into())
                .to_string()
                .contains("algorithm none")
        );
        assert!(TokenRejection::Malformed.to_string().contains("malformed"));
        assert!(
            TokenRejection::BadSignature
                .to_string()
                .contains("signature")
        );
        assert!(TokenRejection::WrongIssuer.to_string().contains("issuer"));
        assert!(
            TokenRejection::NotYetValid
                .to_string()
                .contains("not yet valid")
        );
    }
}
