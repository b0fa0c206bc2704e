//! OIDC client flows for the `juris` CLI, on the `openidconnect` crate:
//! device authorization (people), refresh, client credentials (machines),
//! and a token cache readable only by its owner (file 0600 in a 0700
//! directory).
//!
//! Endpoints come from the issuer's discovery document. Every request sends
//! the resource indicator (`resource=<audience>`, RFC 8707) so the IdP
//! issues JWT access tokens for the gateway's audience; the gateway
//! validates those access tokens, never ID tokens.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreDeviceAuthorizationResponse, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType, CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, ClientId, ClientSecret, DeviceAuthorizationUrl, IssuerUrl,
    OAuth2TokenResponse, ProviderMetadata, RefreshToken, Scope,
};
use serde::{Deserialize, Serialize};

use crate::{IdentityError, error_chain};

/// Tokens as the IdP returned them, with an absolute expiry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenSet {
    /// The JWT access token the gateway validates.
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// When `access_token` expires, in seconds since the Unix epoch.
    pub expires_at: u64,
}

impl TokenSet {
    /// The access token if it stays valid for at least `min_remaining` after `now`.
    pub fn valid_access_token(&self, now: u64, min_remaining: Duration) -> Option<&str> {
        (self.expires_at > now.saturating_add(min_remaining.as_secs()))
            .then_some(self.access_token.as_str())
    }
}

/// Where the IdP is and who we are to it.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Issuer URL, exactly as the IdP's discovery document spells it.
    pub issuer: String,
    pub client_id: String,
    /// The gateway's audience, sent as the `resource` parameter.
    pub audience: String,
    /// Space-separated scopes for the device flow.
    pub scopes: String,
}

impl ClientSettings {
    /// Settings with the CLI's default scopes.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        ClientSettings {
            issuer: issuer.into(),
            client_id: client_id.into(),
            audience: audience.into(),
            scopes: DEFAULT_SCOPES.into(),
        }
    }
}

/// Scopes the CLI asks for by default.
pub const DEFAULT_SCOPES: &str = "openid email offline_access";

/// What the person must do to finish a device login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorization {
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    /// How long the code stays usable.
    pub expires_in: Duration,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The device authorization endpoint is an extension of the discovery document.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceEndpoint {
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}
impl AdditionalProviderMetadata for DeviceEndpoint {}

type Metadata = ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

async fn metadata(http: &reqwest::Client, issuer: &str) -> Result<Metadata, IdentityError> {
    let issuer_url = IssuerUrl::new(issuer.to_string())
        .map_err(|_| IdentityError::IssuerUrl(issuer.to_string()))?;
    Metadata::discover_async(issuer_url, http)
        .await
        .map_err(|e| IdentityError::Discovery {
            issuer: issuer.to_string(),
            reason: error_chain(&e),
        })
}

fn flow_error(what: &str, e: &dyn std::error::Error) -> IdentityError {
    IdentityError::Flow(format!("{what}: {}", error_chain(e)))
}

fn token_set(response: &CoreTokenResponse) -> TokenSet {
    TokenSet {
        access_token: response.access_token().secret().clone(),
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        expires_at: now() + response.expires_in().map_or(300, |d| d.as_secs()),
    }
}

/// Device authorization flow (RFC 8628). `show` is called once with what
/// the person must do; this then polls until they finish or the code expires.
pub async fn device_login(
    settings: &ClientSettings,
    show: impl FnOnce(&DeviceAuthorization),
) -> Result<TokenSet, IdentityError> {
    let http = crate::http_client(HTTP_TIMEOUT)?;
    let metadata = metadata(&http, &settings.issuer).await?;
    let device_url = metadata
        .additional_metadata()
        .device_authorization_endpoint
        .clone()
        .ok_or(IdentityError::Unsupported("the device authorization flow"))?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(settings.client_id.clone()),
        None,
    )
    .set_device_authorization_url(device_url);
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(
            settings
                .scopes
                .split_whitespace()
                .map(|s| Scope::new(s.to_string())),
        )
        .add_extra_param("resource", settings.audience.clone())
        .request_async(&http)
        .await
        .map_err(|e| flow_error("device authorization failed", &e))?;
    show(&DeviceAuthorization {
        user_code: details.user_code().secret().clone(),
        verification_uri: details.verification_uri().to_string(),
        verification_uri_complete: details
            .verification_uri_complete()
            .map(|u| u.secret().clone()),
        expires_in: details.expires_in(),
    });
    let response = client
        .exchange_device_access_token(&details)
        .map_err(|e| flow_error("device login", &e))?
        .add_extra_param("resource", settings.audience.clone())
        .request_async(&http, tokio::time::sleep, None)
        .await
        .map_err(|e| flow_error("device login failed", &e))?;
    Ok(token_set(&response))
}

/// Exchange a refresh token for new tokens. If the IdP does not rotate the
/// refresh token, the old one is kept.
pub async fn refresh(
    settings: &ClientSettings,
    refresh_token: &str,
) -> Result<TokenSet, IdentityError> {
    let http = crate::http_client(HTTP_TIMEOUT)?;
    let metadata = metadata(&http, &settings.issuer).await?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(settings.client_id.clone()),
        None,
    );
    let refresh_token = RefreshToken::new(refresh_token.to_string());
    let response = client
        .exchange_refresh_token(&refresh_token)
        .map_err(|e| flow_error("refresh", &e))?
        .add_extra_param("resource", settings.audience.clone())
        .request_async(&http)
        .await
        .map_err(|e| flow_error("refreshing the token failed", &e))?;
    let mut tokens = token_set(&response);
    if tokens.refresh_token.is_none() {
        tokens.refresh_token = Some(refresh_token.secret().clone());
    }
    Ok(tokens)
}

/// Client-credentials flow for machine identities (secret sent with HTTP
/// basic authentication).
pub async fn client_credentials(
    settings: &ClientSettings,
    client_secret: &str,
) -> Result<TokenSet, IdentityError> {
    let http = crate::http_client(HTTP_TIMEOUT)?;
    let metadata = metadata(&http, &settings.issuer).await?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(settings.client_id.clone()),
        Some(ClientSecret::new(client_secret.to_string())),
    );
    let response = client
        .exchange_client_credentials()
        .map_err(|e| flow_error("client credentials", &e))?
        .add_extra_param("resource", settings.audience.clone())
        .request_async(&http)
        .await
        .map_err(|e| flow_error("the client credentials flow failed", &e))?;
    Ok(token_set(&response))
}

/// A token cache file readable only by its owner.
pub struct TokenCache {
    path: PathBuf,
}

impl TokenCache {
    /// The cache at `dir/tokens.json`.
    pub fn new(dir: &Path) -> Self {
        TokenCache {
            path: dir.join("tokens.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, reason: impl ToString) -> IdentityError {
        IdentityError::Cache {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// The cached tokens, if any.
    pub fn load(&self) -> Result<Option<TokenSet>, IdentityError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.fail(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Store tokens atomically with mode 0600 (directory 0700).
    pub fn store(&self, tokens: &TokenSet) -> Result<(), IdentityError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let dir = self
            .path
            .parent()
            .ok_or_else(|| self.fail("no parent directory"))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| self.fail(e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| self.fail(e))?;
        let temporary = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| self.fail(e))?;
        // `mode` only applies to a new file; a stale temporary keeps its own.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| self.fail(e))?;
        file.write_all(&serde_json::to_vec(tokens).map_err(|e| self.fail(e))?)
            .map_err(|e| self.fail(e))?;
        file.sync_all().map_err(|e| self.fail(e))?;
        std::fs::rename(&temporary, &self.path).map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_cache_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(&dir.path().join("juris"));
        assert_eq!(cache.load().unwrap(), None);
        let tokens = TokenSet {
            access_token: "a".into(),
            refresh_token: Some("r".into()),
            expires_at: 100,
        };
        cache.store(&tokens).unwrap();
        assert_eq!(cache.load().unwrap(), Some(tokens.clone()));
        assert_eq!(mode(cache.path()), 0o600);
        assert_eq!(mode(&dir.path().join("juris")), 0o700);
        // Overwriting keeps it private and leaves no temporary behind.
        cache.store(&tokens).unwrap();
        assert_eq!(mode(cache.path()), 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path().join("juris")).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_loose_directory_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("juris");
        std::fs::create_dir(&cache_dir).unwrap();
        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cache = TokenCache::new(&cache_dir);
        cache
            .store(&TokenSet {
                access_token: "a".into(),
                refresh_token: None,
                expires_at: 1,
            })
            .unwrap();
        assert_eq!(mode(&cache_dir), 0o700);
    }

    #[test]
    fn a_corrupt_cache_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path());
        std::fs::write(cache.path(), b"{not json").unwrap();
        let e = cache.load().unwrap_err().to_string();
        assert!(e.contains("tokens.json"), "{e}");
    }

    #[test]
    fn access_tokens_are_used_only_with_time_to_spare() {
        let tokens = TokenSet {
            access_token: "a".into(),
            refresh_token: None,
            expires_at: 1_000,
        };
        let minute = Duration::from_secs(60);
        assert_eq!(tokens.valid_access_token(900, minute), Some("a"));
        assert_eq!(tokens.valid_access_token(940, minute), None);
        assert_eq!(tokens.valid_access_token(1_000, Duration::ZERO), None);
        assert_eq!(tokens.valid_access_token(999, Duration::ZERO), Some("a"));
        assert_eq!(tokens.valid_access_token(u64::MAX, minute), None);
    }
}
