//! The identity provider for end-to-end tests: an OIDC issuer on loopback
//! with discovery and JWKS that the node validates like any IdP, plus ways
//! to mint the bad tokens the tests need (expired, wrong audience, `alg:
//! none`, unknown key id, foreign signature).
//!
//! Users and groups: alice → dba, engineering; bob → analysts;
//! carol → developers; anyone else → none.

use std::time::Duration;

use base64::Engine;
use juris_demo::issuer::DevIssuer;
use serde_json::Value;

/// The audience the gateway requires.
pub const AUDIENCE: &str = "urn:juris:gateway";

/// Groups of the test users.
pub fn groups_of(login: &str) -> &'static [&'static str] {
    match login {
        "alice" => &["dba", "engineering"],
        "bob" => &["analysts"],
        "carol" => &["developers"],
        _ => &[],
    }
}

/// A running issuer.
pub struct OidcProvider {
    pub issuer: String,
    inner: DevIssuer,
}

impl OidcProvider {
    pub async fn start() -> anyhow::Result<OidcProvider> {
        let inner = DevIssuer::start(AUDIENCE).await?;
        Ok(OidcProvider { issuer: inner.issuer().to_string(), inner })
    }

    /// An access token for a test user.
    pub async fn user_token(&self, login: &str) -> anyhow::Result<String> {
        Ok(self.inner.mint(login, &format!("{login}@example.test"), groups_of(login), Duration::from_secs(3600))?)
    }

    /// Sign `claims` with the issuer's key. `header` may set `alg` to
    /// `"none"` (an unsigned token) or `kid` to another key id.
    pub async fn mint(&self, header: Value, claims: Value) -> anyhow::Result<String> {
        if header.get("alg").and_then(Value::as_str) == Some("none") {
            let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": self.inner.kid()});
            return Ok(format!("{}.{}.", b64(&header), b64(&claims)));
        }
        Ok(self.inner.sign(&claims, header.get("kid").and_then(Value::as_str))?)
    }

    /// Sign `claims` with a different key under the issuer's key id.
    pub async fn mint_foreign(&self, claims: Value) -> anyhow::Result<String> {
        let key = rcgen::KeyPair::generate()?;
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.inner.kid().to_string());
        Ok(jsonwebtoken::encode(&header, &claims, &encoding)?)
    }
}
