//! OIDC for Juris: discover an identity provider, keep its signing keys, and
//! turn access tokens into [`Principal`]s.
//!
//! Discovery uses the `openidconnect` crate (it insists that the issuer in
//! the document matches the configured one exactly). Access tokens are JWTs
//! validated with `jsonwebtoken`: `openidconnect` only verifies ID tokens,
//! whose claim set differs, and does not check `nbf`.
//!
//! Order of checks, cheapest and most telling first: size, structure,
//! algorithm allow-list (so `alg: none` never reaches key lookup), key id
//! (an unknown one refreshes the JWKS at most once per interval, one refresh
//! at a time), signature, then issuer, audience, `exp` and `nbf` with leeway.

pub mod client;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use juris_types::Principal;
use openidconnect::core::CoreProviderMetadata;
use openidconnect::{IssuerUrl, ProviderMetadata};
use tokio::sync::Mutex;
use tracing::{debug, info};

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Errors talking to the identity provider.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid issuer URL {0}")]
    IssuerUrl(String),
    #[error("OIDC discovery at {issuer} failed: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("fetching the JWKS from {url} failed: {reason}")]
    Jwks { url: String, reason: String },
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("{0}")]
    Flow(String),
    #[error("token cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

/// Why a token was refused. `Display` says which check failed and never
/// contains the token.
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
    #[error("token is not yet valid (nbf)")]
    NotYetValid,
    #[error("token issuer is not the configured identity provider")]
    WrongIssuer,
    #[error("token audience does not include {0}")]
    WrongAudience(String),
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    #[error("the identity provider's signing keys are unavailable")]
    KeysUnavailable,
}

/// How to validate tokens.
#[derive(Debug, Clone)]
pub struct ValidatorSettings {
    pub issuer: String,
    pub audience: String,
    pub groups_claim: String,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub jwks_min_refresh_interval: Duration,
    pub http_timeout: Duration,
}

struct Keys {
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    fetched_at: Instant,
}

/// Validates access tokens of one issuer. Cheap to clone.
#[derive(Clone)]
pub struct TokenValidator {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ValidatorSettings,
    jwks_uri: String,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    refresh: Mutex<()>,
}

/// An HTTP client that never follows redirects (discovery must not be bounced elsewhere).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, IdentityError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| IdentityError::Http(e.to_string()))
}

/// Discover the issuer's metadata with `openidconnect`.
pub async fn discover(
    issuer: &str,
    http: &reqwest::Client,
) -> Result<CoreProviderMetadata, IdentityError> {
    let issuer_url = IssuerUrl::new(issuer.to_string())
        .map_err(|_| IdentityError::IssuerUrl(issuer.to_string()))?;
    ProviderMetadata::discover_async(issuer_url, http)
        .await
        .map_err(|e| IdentityError::Discovery {
            issuer: issuer.to_string(),
            reason: error_chain(&e),
        })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl TokenValidator {
    /// Discover the issuer and fetch its keys.
    pub async fn discover(settings: ValidatorSettings) -> Result<TokenValidator, IdentityError> {
        let http = http_client(settings.http_timeout)?;
        let metadata = discover(&settings.issuer, &http).await?;
        let jwks_uri = metadata.jwks_uri().url().to_string();
        let by_kid = fetch_keys(&http, &jwks_uri).await?;
        info!(issuer = %settings.issuer, keys = by_kid.len(), "identity provider discovered");
        Ok(TokenValidator {
            inner: Arc::new(Inner {
                settings,
                jwks_uri,
                http,
                keys: RwLock::new(Keys {
                    by_kid,
                    fetched_at: Instant::now(),
                }),
                refresh: Mutex::new(()),
            }),
        })
    }

    fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let keys = self.inner.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.by_kid.get(kid).cloned()
    }

    /// Refresh the JWKS unless it was refreshed within the interval. One
    /// refresh at a time; callers that waited see its result.
    async fn refresh_keys(&self) -> Result<(), TokenRejection> {
        let _guard = self.inner.refresh.lock().await;
        let fetched_at = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .fetched_at;
        if fetched_at.elapsed() < self.inner.settings.jwks_min_refresh_interval {
            return Ok(());
        }
        debug!("unknown key id: refreshing the JWKS");
        let by_kid = fetch_keys(&self.inner.http, &self.inner.jwks_uri)
            .await
            .map_err(|e| {
                info!("JWKS refresh failed: {e}");
                TokenRejection::KeysUnavailable
            })?;
        *self.inner.keys.write().unwrap_or_else(|p| p.into_inner()) = Keys {
            by_kid,
            fetched_at: Instant::now(),
        };
        Ok(())
    }

    /// Validate an access token.
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenRejection> {
        let settings = &self.inner.settings;
        let (alg, kid) = read_header(token)?;
        let algorithm = parse_algorithm(&alg).filter(|a| settings.algorithms.contains(a));
        let Some(algorithm) = algorithm else {
            return Err(TokenRejection::AlgorithmNotAllowed(alg));
        };
        let kid = kid.unwrap_or_default();
        let (key_algorithm, key) = match self.key(&kid) {
            Some(found) => found,
            None => {
                self.refresh_keys().await?;
                self.key(&kid).ok_or(TokenRejection::UnknownKeyId)?
            }
        };
        if key_algorithm != algorithm {
            return Err(TokenRejection::BadSignature);
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| rejection(e, &settings.audience))?;
        principal(&data.claims, settings)
    }
}

fn rejection(e: jsonwebtoken::errors::Error, audience: &str) -> TokenRejection {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience(audience.to_string()),
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
            TokenRejection::BadSignature
        }
        ErrorKind::MissingRequiredClaim(claim) => TokenRejection::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm => TokenRejection::AlgorithmNotAllowed("(mismatch)".into()),
        _ => TokenRejection::Malformed,
    }
}

/// The header's `alg` and `kid`, read without trusting anything else.
fn read_header(token: &str) -> Result<(String, Option<String>), TokenRejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenRejection::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenRejection::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| TokenRejection::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(|v| v.as_str())
        .ok_or(TokenRejection::Malformed)?;
    // Bound what we echo: the algorithm name goes into client-visible text.
    let alg: String = alg
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    let kid = header
        .get("kid")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok((alg, kid))
}

fn parse_algorithm(alg: &str) -> Option<Algorithm> {
    use std::str::FromStr;
    match alg {
        // Symmetric algorithms would let anyone holding the key mint tokens.
        "HS256" | "HS384" | "HS512" => None,
        other => Algorithm::from_str(other).ok(),
    }
}

fn principal(
    claims: &serde_json::Map<String, serde_json::Value>,
    settings: &ValidatorSettings,
) -> Result<Principal, TokenRejection> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let subject = text("sub").ok_or_else(|| TokenRejection::MissingClaim("sub".into()))?;
    let expires_at = claims
        .get("exp")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| TokenRejection::MissingClaim("exp".into()))?;
    let groups = match claims.get(&settings.groups_claim) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(Principal {
        issuer: settings.issuer.clone(),
        display_name: text("email").or_else(|| text("preferred_username")),
        subject,
        groups,
        expires_at,
    })
}

async fn fetch_keys(
    http: &reqwest::Client,
    url: &str,
) -> Result<HashMap<String, (Algorithm, DecodingKey)>, IdentityError> {
    let fail = |reason: String| IdentityError::Jwks {
        url: url.to_string(),
        reason,
    };
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
    let set: JwkSet =
        serde_json::from_slice(&body).map_err(|e| fail(format!("invalid JWKS: {e}")))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let algorithm = jwk
            .common
            .key_algorithm
            .and_then(|a| parse_algorithm(&format!("{a:?}")))
            .or_else(|| default_algorithm(jwk));
        if let Some(algorithm) = algorithm {
            keys.insert(
                jwk.common.key_id.clone().unwrap_or_default(),
                (algorithm, key),
            );
        }
    }
    Ok(keys)
}

/// The algorithm a key without an `alg` member is used with.
fn default_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn headers_are_read_defensively() {
        assert_eq!(read_header("a.b"), Err(TokenRejection::Malformed));
        assert_eq!(
            read_header(&"x".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenRejection::Malformed)
        );
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert_eq!(read_header(&none).unwrap().0, "none");
        let kid = format!("{}.e30.sig", b64(r#"{"alg":"ES256","kid":"k1"}"#));
        assert_eq!(
            read_header(&kid).unwrap(),
            ("ES256".into(), Some("k1".into()))
        );
        assert_eq!(parse_algorithm("HS256"), None);
        assert_eq!(parse_algorithm("none"), None);
        assert_eq!(parse_algorithm("RS256"), Some(Algorithm::RS256));
    }

    #[test]
    fn rejections_never_contain_the_token_and_say_what_failed() {
        assert_eq!(TokenRejection::Expired.to_string(), "token expired");
        assert!(
            TokenRejection::WrongAudience("urn:juris:gateway".into())
                .to_string()
                .contains("audience")
        );
    }

    #[test]
    fn principals_take_groups_from_the_configured_claim() {
        let settings = ValidatorSettings {
            issuer: "http://127.0.0.1:1".into(),
            audience: "a".into(),
            groups_claim: "roles".into(),
            algorithms: vec![Algorithm::ES256],
            leeway: Duration::from_secs(0),
            jwks_min_refresh_interval: Duration::from_secs(1),
            http_timeout: Duration::from_secs(1),
        };
        let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"sub":"u1","exp":5,"email":"u@example.test","roles":["dba","x"]}"#,
        )
        .unwrap();
        let p = principal(&claims, &settings).unwrap();
        assert_eq!(
            (p.name(), p.groups.as_slice(), p.expires_at),
            (
                "u@example.test",
                &["dba".to_string(), "x".to_string()][..],
                5
            )
        );
    }
}
