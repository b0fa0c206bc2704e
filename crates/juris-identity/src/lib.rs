//! OIDC for Juris.
//!
//! * [`TokenValidator`] (gateway side): discovers an identity provider with
//!   the `openidconnect` crate (the issuer in the document must match the
//!   configured one exactly), keeps its signing keys, and turns ACCESS
//!   tokens (JWTs for the gateway's audience) into [`Principal`]s or a
//!   [`TokenRejection`] saying which check failed.
//! * [`client`] (CLI side): device authorization, refresh and client
//!   credentials flows, and a private on-disk token cache.
//!
//! Layout: [`token`] is pure (header, algorithm allow-list, claim checks;
//! the caller passes the clock); `validator` and [`client`] do the HTTP.
//! Access tokens are verified with `jsonwebtoken`: `openidconnect` only
//! verifies ID tokens, whose claim set differs, and does not check `nbf`.

pub mod client;
pub mod token;
mod validator;

use std::time::Duration;

use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;

pub use juris_types::Principal;
pub use token::{MAX_TOKEN_LEN, TokenRejection, ValidatorSettings};
pub use validator::TokenValidator;

/// Errors talking to the identity provider or using the token cache.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid issuer URL {0}")]
    IssuerUrl(String),
    #[error("OIDC discovery at {issuer} failed: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("the identity provider does not support {0}")]
    Unsupported(&'static str),
    #[error("fetching the JWKS from {url} failed: {reason}")]
    Jwks { url: String, reason: String },
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("{0}")]
    Flow(String),
    #[error("token cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

/// An HTTP client for talking to the IdP. It never follows redirects
/// (discovery and token requests must not be bounced elsewhere).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, IdentityError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .map_err(|e| IdentityError::Http(error_chain(&e)))
}

/// Discover the issuer's metadata with `openidconnect`.
pub async fn discover(
    issuer: &str,
    http: &reqwest::Client,
) -> Result<CoreProviderMetadata, IdentityError> {
    let issuer_url = IssuerUrl::new(issuer.to_string())
        .map_err(|_| IdentityError::IssuerUrl(issuer.to_string()))?;
    CoreProviderMetadata::discover_async(issuer_url, http)
        .await
        .map_err(|e| IdentityError::Discovery {
            issuer: issuer.to_string(),
            reason: error_chain(&e),
        })
}

/// An error and all its sources, `: `-separated.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
