//! OIDC client flows for the `juris` CLI: device authorization (people),
//! refresh, client credentials (machines), and a token cache readable only
//! by its owner (file 0600 in a 0700 directory).
//!
//! Endpoints come from the issuer's discovery document. Every request sends
//! the resource indicator (`resource=<audience>`) so the IdP issues JWT
//! access tokens for the gateway's audience.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::IdentityError;

/// Tokens as the IdP returned them, with an absolute expiry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

impl TokenSet {
    /// The access token if it stays valid for at least `min_remaining`.
    pub fn valid_access_token(&self, now: u64, min_remaining: Duration) -> Option<&str> {
        (self.expires_at > now + min_remaining.as_secs()).then_some(self.access_token.as_str())
    }
}

/// Where the IdP is and who we are to it.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub issuer: String,
    pub client_id: String,
    pub audience: String,
    pub scopes: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

/// What the user must do to finish a device login.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: Option<u64>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Endpoints {
    token: String,
    device: Option<String>,
}

async fn endpoints(http: &reqwest::Client, issuer: &str) -> Result<Endpoints, IdentityError> {
    let metadata = crate::discover(issuer, http).await?;
    // The device endpoint is an extension field; read it from the raw document.
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let raw: serde_json::Value = http
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| IdentityError::Http(e.to_string()))?
        .json()
        .await
        .map_err(|e| IdentityError::Http(e.to_string()))?;
    let token = metadata
        .token_endpoint()
        .map(|u| u.url().to_string())
        .ok_or_else(|| IdentityError::Flow("the identity provider has no token endpoint".into()))?;
    Ok(Endpoints {
        token,
        device: raw
            .get("device_authorization_endpoint")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    })
}

async fn token_request(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<Result<TokenSet, ErrorResponse>, IdentityError> {
    let mut request = http.post(url).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request
        .send()
        .await
        .map_err(|e| IdentityError::Http(e.to_string()))?;
    let ok = response.status().is_success();
    let body = response
        .bytes()
        .await
        .map_err(|e| IdentityError::Http(e.to_string()))?;
    if ok {
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| IdentityError::Flow(format!("invalid token response: {e}")))?;
        Ok(Ok(TokenSet {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            expires_at: now() + t.expires_in.unwrap_or(300),
        }))
    } else {
        let e: ErrorResponse = serde_json::from_slice(&body).map_err(|_| {
            IdentityError::Flow(format!(
                "token endpoint answered {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        })?;
        Ok(Err(e))
    }
}

fn flow_error(e: ErrorResponse) -> IdentityError {
    IdentityError::Flow(match e.error_description {
        Some(d) => format!("{}: {d}", e.error),
        None => e.error,
    })
}

/// Device authorization flow. `show` is called once with what the user must do.
pub async fn device_login(
    settings: &ClientSettings,
    show: impl FnOnce(&DeviceAuthorization),
) -> Result<TokenSet, IdentityError> {
    let http = crate::http_client(Duration::from_secs(30))?;
    let endpoints = endpoints(&http, &settings.issuer).await?;
    let device_url = endpoints.device.ok_or_else(|| {
        IdentityError::Flow("the identity provider does not support the device flow".into())
    })?;
    let authorization: DeviceAuthorization = http
        .post(&device_url)
        .form(&[
            ("client_id", settings.client_id.as_str()),
            ("scope", settings.scopes.as_str()),
            ("resource", settings.audience.as_str()),
        ])
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| IdentityError::Http(e.to_string()))?
        .json()
        .await
        .map_err(|e| IdentityError::Flow(format!("invalid device authorization response: {e}")))?;
    show(&authorization);
    let mut interval = Duration::from_secs(authorization.interval.unwrap_or(5).max(1));
    let deadline = now() + authorization.expires_in;
    while now() < deadline {
        tokio::time::sleep(interval).await;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", authorization.device_code.as_str()),
            ("client_id", settings.client_id.as_str()),
            ("resource", settings.audience.as_str()),
        ];
        match token_request(&http, &endpoints.token, &form, None).await? {
            Ok(tokens) => return Ok(tokens),
            Err(e) if e.error == "authorization_pending" => {}
            Err(e) if e.error == "slow_down" => interval += Duration::from_secs(5),
            Err(e) => return Err(flow_error(e)),
        }
    }
    Err(IdentityError::Flow(
        "the device code expired before the login was completed".into(),
    ))
}

/// Exchange a refresh token.
pub async fn refresh(
    settings: &ClientSettings,
    refresh_token: &str,
) -> Result<TokenSet, IdentityError> {
    let http = crate::http_client(Duration::from_secs(30))?;
    let endpoints = endpoints(&http, &settings.issuer).await?;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", settings.client_id.as_str()),
        ("resource", settings.audience.as_str()),
    ];
    let mut tokens = token_request(&http, &endpoints.token, &form, None)
        .await?
        .map_err(flow_error)?;
    if tokens.refresh_token.is_none() {
        tokens.refresh_token = Some(refresh_token.to_string());
    }
    Ok(tokens)
}

/// Client-credentials flow for machine identities.
pub async fn client_credentials(
    settings: &ClientSettings,
    client_secret: &str,
) -> Result<TokenSet, IdentityError> {
    let http = crate::http_client(Duration::from_secs(30))?;
    let endpoints = endpoints(&http, &settings.issuer).await?;
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", settings.audience.as_str()),
    ];
    token_request(
        &http,
        &endpoints.token,
        &form,
        Some((&settings.client_id, client_secret)),
    )
    .await?
    .map_err(flow_error)
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
        let temporary = self.path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
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

    #[test]
    fn the_cache_is_private_and_round_trips() {
        let dir = tempfile_dir();
        let cache = TokenCache::new(&dir.join("juris"));
        assert_eq!(cache.load().unwrap(), None);
        let tokens = TokenSet {
            access_token: "a".into(),
            refresh_token: Some("r".into()),
            expires_at: 100,
        };
        cache.store(&tokens).unwrap();
        assert_eq!(cache.load().unwrap(), Some(tokens.clone()));
        assert_eq!(
            std::fs::metadata(cache.path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(dir.join("juris"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(
            tokens.valid_access_token(10, Duration::from_secs(60)),
            Some("a")
        );
        assert_eq!(tokens.valid_access_token(50, Duration::from_secs(60)), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("juris-identity-{}-{}", std::process::id(), now()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
