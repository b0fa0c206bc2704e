//! DEMO ONLY: a minimal OIDC issuer for `juris demo` and tests.
//!
//! It serves a discovery document and a JWKS over plain HTTP on 127.0.0.1
//! and mints ES256 access tokens directly (no login, no consent, anyone who
//! holds the `DevIssuer` can be anybody). The node validates its tokens
//! exactly as it validates a real IdP's: discovery, JWKS, signature, issuer,
//! audience, expiry. Every response says so: a `juris_demo_only: true`
//! member in each JSON body and an `x-juris-demo-only: true` header.
//! Never point a real deployment at it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::DemoError;

/// DEMO ONLY. A running demo issuer; its HTTP server stops when dropped.
pub struct DevIssuer {
    issuer: String,
    jwks: serde_json::Value,
    audience: String,
    kid: String,
    key: EncodingKey,
    stop: CancellationToken,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DevIssuer {
    /// Generate a key and serve discovery + JWKS on a free loopback port.
    pub async fn start(audience: &str) -> Result<DevIssuer, DemoError> {
        let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let key = EncodingKey::from_ec_pem(key_pair.serialize_pem().as_bytes())
            .map_err(|e| DemoError::Issuer(e.to_string()))?;
        let point = key_pair.public_key_raw();
        if point.len() != 65 || point[0] != 4 {
            return Err(DemoError::Issuer("unexpected public key encoding".into()));
        }
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let kid = format!("demo-{:08x}", rand::random::<u32>());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let discovery = json!({
            "juris_demo_only": true,
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
        .to_string();
        let jwks = json!({
            "juris_demo_only": true,
            "keys": [{"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]), "kid": kid, "alg": "ES256", "use": "sig"}]
        });
        let documents = Arc::new((discovery, jwks.to_string()));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // e.g. EMFILE: back off instead of spinning.
                            tracing::debug!(%error, "demo issuer accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let documents = documents.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let documents = documents.clone();
                        async move { Ok::<_, Infallible>(respond(&request, &documents)) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = stopped.cancelled() => {}
                        _ = connection => {}
                    }
                });
            }
        });
        tracing::warn!(%issuer, "DEMO ONLY OIDC issuer started on loopback; never trust it");
        Ok(DevIssuer {
            issuer,
            jwks,
            audience: audience.to_string(),
            kid,
            key,
            stop,
        })
    }

    /// The issuer URL, exactly as discovery states it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// The discovery document URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The audience minted tokens carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The JWKS document as served.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// The key id the issuer signs with.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Sign arbitrary claims with the issuer's real key (tests build bad
    /// tokens this way: expired, wrong audience, …). `kid` overrides the header.
    pub fn sign(&self, claims: &serde_json::Value, kid: Option<&str>) -> Result<String, DemoError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.unwrap_or(&self.kid).to_string());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| DemoError::Issuer(e.to_string()))
    }

    /// DEMO ONLY. Mint a JWT access token for a principal: `iss`, `sub`,
    /// `aud`, `exp`, `nbf`, `iat`, `email`, `groups`, `jti`.
    pub fn mint(
        &self,
        subject: &str,
        email: &str,
        groups: &[&str],
        ttl: Duration,
    ) -> Result<String, DemoError> {
        let issued = now();
        let claims = json!({
            "iss": self.issuer, "sub": subject, "aud": self.audience, "email": email, "groups": groups,
            "iat": issued, "nbf": issued, "exp": issued + ttl.as_secs(), "jti": format!("{:032x}", rand::random::<u128>()),
        });
        self.sign(&claims, None)
    }
}

fn respond<B>(request: &Request<B>, documents: &(String, String)) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let (status, body) = match (request.method(), path) {
        (&hyper::Method::GET, "/.well-known/openid-configuration") => {
            (StatusCode::OK, documents.0.clone())
        }
        (&hyper::Method::GET, "/jwks") => (StatusCode::OK, documents.1.clone()),
        (_, "/authorize" | "/token") => (
            StatusCode::BAD_REQUEST,
            json!({
                "juris_demo_only": true,
                "error": "unsupported",
                "error_description": "demo issuer mints tokens directly; there is no login here",
            })
            .to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            json!({"juris_demo_only": true, "error": "not_found"}).to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-juris-demo-only",
        hyper::header::HeaderValue::from_static("true"),
    );
    response
}
