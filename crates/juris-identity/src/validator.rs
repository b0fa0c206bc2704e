//! [`TokenValidator`]: discovery, the JWKS cache and the hot path that
//! checks an access token.
//!
//! Order of checks, cheapest and most telling first: size and shape,
//! algorithm allow-list (so `alg: none` never reaches key lookup), key id
//! (an unknown one refreshes the JWKS at most once per interval, one refresh
//! at a time), signature, then the claims ([`crate::token::check_claims`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use juris_types::Principal;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::token::{self, TokenRejection, ValidatorSettings};
use crate::{IdentityError, error_chain};

/// Decoded verification keys by key id (`""` for a key without one).
type KeySet = HashMap<String, (Algorithm, Arc<DecodingKey>)>;

/// Validates access tokens of one issuer. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct TokenValidator {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ValidatorSettings,
    jwks_uri: String,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Held during a refresh (one at a time); holds when the last one started.
    last_refresh: tokio::sync::Mutex<Instant>,
    /// Signature-only validation per allowed algorithm (claims are checked by us).
    validations: Vec<(Algorithm, Validation)>,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("issuer", &self.inner.settings.issuer)
            .field("audience", &self.inner.settings.audience)
            .field("jwks_uri", &self.inner.jwks_uri)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenValidator {
    /// Discover the issuer with `openidconnect` (the document's issuer must
    /// equal `settings.issuer` exactly) and fetch its keys.
    pub async fn discover(settings: ValidatorSettings) -> Result<TokenValidator, IdentityError> {
        let http = crate::http_client(settings.http_timeout)?;
        let metadata = crate::discover(&settings.issuer, &http).await?;
        let jwks_uri = metadata.jwks_uri().url().to_string();
        let keys = fetch_keys(&http, &jwks_uri).await?;
        info!(issuer = %settings.issuer, keys = keys.len(), "identity provider discovered");
        let validations = settings
            .algorithms
            .iter()
            .map(|&algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.validate_exp = false;
                validation.validate_nbf = false;
                validation.validate_aud = false;
                validation.required_spec_claims.clear();
                (algorithm, validation)
            })
            .collect();
        Ok(TokenValidator {
            inner: Arc::new(Inner {
                settings,
                jwks_uri,
                http,
                keys: RwLock::new(Arc::new(keys)),
                last_refresh: tokio::sync::Mutex::new(Instant::now()),
                validations,
            }),
        })
    }

    /// The settings this validator was built with.
    pub fn settings(&self) -> &ValidatorSettings {
        &self.inner.settings
    }

    fn key(&self, kid: &str) -> Option<(Algorithm, Arc<DecodingKey>)> {
        let keys = self.inner.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(kid).cloned()
    }

    /// Refresh the JWKS unless a refresh started within the interval. One
    /// refresh at a time: concurrent callers wait and then use its result.
    /// A failed refresh also counts, so an unreachable IdP is not hammered.
    async fn refresh_keys(&self) -> Result<(), TokenRejection> {
        let mut last_refresh = self.inner.last_refresh.lock().await;
        if last_refresh.elapsed() < self.inner.settings.jwks_min_refresh_interval {
            return Ok(());
        }
        *last_refresh = Instant::now();
        debug!("unknown key id: refreshing the JWKS");
        match fetch_keys(&self.inner.http, &self.inner.jwks_uri).await {
            Ok(keys) => {
                *self.inner.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                Ok(())
            }
            Err(e) => {
                warn!("JWKS refresh failed: {e}");
                Err(TokenRejection::KeysUnavailable)
            }
        }
    }

    /// Validate an access token and return who it names.
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenRejection> {
        let settings = &self.inner.settings;
        let header = token::read_header(token)?;
        let algorithm = token::allowed_algorithm(&header, &settings.algorithms)?;
        let kid = header.kid.as_deref().unwrap_or_default();
        let (key_algorithm, key) = match self.key(kid) {
            Some(found) => found,
            None => {
                self.refresh_keys().await?;
                self.key(kid).ok_or(TokenRejection::UnknownKeyId)?
            }
        };
        // A key is only good for its own algorithm (no algorithm confusion).
        if key_algorithm != algorithm {
            return Err(TokenRejection::BadSignature);
        }
        let validation = self
            .inner
            .validations
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, v)| v)
            .ok_or_else(|| TokenRejection::AlgorithmNotAllowed(header.alg.clone()))?;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidAlgorithm => TokenRejection::BadSignature,
                    _ => TokenRejection::Malformed,
                }
            })?;
        token::check_claims(&data.claims, settings, now())
    }
}

/// Fetch and decode a JWKS. Keys that cannot be used for signatures with an
/// asymmetric algorithm are skipped.
pub(crate) async fn fetch_keys(http: &reqwest::Client, url: &str) -> Result<KeySet, IdentityError> {
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
    parse_keys(&body).map_err(fail)
}

/// Decode a JWKS document (pure).
pub(crate) fn parse_keys(body: &[u8]) -> Result<KeySet, String> {
    let document: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JWKS: {e}"))?;
    let Some(entries) = document.get("keys").and_then(Value::as_array) else {
        return Err("invalid JWKS: no keys array".into());
    };
    let mut keys = KeySet::new();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            debug!("skipping a JWK this validator cannot read");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let algorithm = match jwk.common.key_algorithm {
            Some(a) => key_algorithm(a),
            None => default_algorithm(&jwk),
        };
        let (Some(algorithm), Ok(key)) = (algorithm, DecodingKey::from_jwk(&jwk)) else {
            continue;
        };
        keys.insert(
            jwk.common.key_id.clone().unwrap_or_default(),
            (algorithm, Arc::new(key)),
        );
    }
    Ok(keys)
}

fn key_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The algorithm a key without an `alg` member is used with.
fn default_algorithm(jwk: &Jwk) -> Option<Algorithm> {
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

    #[test]
    fn jwks_parsing_skips_what_it_cannot_use() {
        let body = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"ec","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"oct","kid":"hmac","alg":"HS256","k":"c2VjcmV0"},
            {"kty":"weird","kid":"odd"}
        ]}"#;
        let keys = parse_keys(body).unwrap();
        assert_eq!(keys.len(), 1, "{:?}", keys.keys().collect::<Vec<_>>());
        assert_eq!(keys["ec"].0, Algorithm::ES256);
        assert!(parse_keys(b"{}").is_err());
        assert!(parse_keys(b"nonsense").is_err());
    }
}
