//! `juris login` and `juris token`: where the CLI's access token comes from.
//!
//! In order: `JURIS_TOKEN` (scripts that already hold one), the cache when
//! its token is valid for another minute, a refresh with the cached refresh
//! token, else an error that says to log in.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use juris_identity::client::{self, ClientSettings, TokenCache};

/// How to reach the IdP; every flag has an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct IdpOptions {
    /// OIDC issuer URL.
    #[arg(long, env = "JURIS_ISSUER")]
    pub issuer: Option<String>,
    /// OAuth client id of the CLI (or of the machine identity).
    #[arg(long, env = "JURIS_CLIENT_ID", default_value = "juris-cli")]
    pub client_id: String,
    /// Audience (resource indicator) of the gateway.
    #[arg(long, env = "JURIS_AUDIENCE", default_value = "urn:juris:gateway")]
    pub audience: String,
    /// Token cache directory (default: the user's config dir + /juris).
    #[arg(long, env = "JURIS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl IdpOptions {
    fn settings(&self) -> anyhow::Result<ClientSettings> {
        Ok(ClientSettings {
            issuer: self
                .issuer
                .clone()
                .context("no identity provider: pass --issuer or set JURIS_ISSUER")?,
            client_id: self.client_id.clone(),
            audience: self.audience.clone(),
            scopes: "openid email offline_access".into(),
        })
    }

    fn cache(&self) -> anyhow::Result<TokenCache> {
        let dir = match &self.cache_dir {
            Some(dir) => dir.clone(),
            None => dirs::config_dir()
                .context("no config directory; set JURIS_CACHE_DIR")?
                .join("juris"),
        };
        Ok(TokenCache::new(&dir))
    }
}

/// Device login; caches the tokens.
pub async fn login(options: &IdpOptions) -> anyhow::Result<()> {
    let settings = options.settings()?;
    let tokens = client::device_login(&settings, |authorization| {
        println!(
            "To log in, open {} and enter the code {}",
            authorization.verification_uri, authorization.user_code
        );
        if let Some(complete) = &authorization.verification_uri_complete {
            println!("(or open {complete})");
        }
    })
    .await?;
    let cache = options.cache()?;
    cache.store(&tokens)?;
    println!("Logged in; tokens cached in {}", cache.path().display());
    Ok(())
}

/// A valid access token for the current user.
pub async fn current(options: &IdpOptions) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("JURIS_TOKEN")
        && !token.is_empty()
    {
        return Ok(token);
    }
    let cache = options.cache()?;
    let Some(tokens) = cache.load()? else {
        bail!("not logged in: run `juris login`");
    };
    if let Some(token) = tokens.valid_access_token(client::now(), Duration::from_secs(60)) {
        return Ok(token.to_string());
    }
    let Some(refresh_token) = tokens.refresh_token.as_deref() else {
        bail!("the cached token expired: run `juris login`");
    };
    let refreshed = client::refresh(&options.settings()?, refresh_token)
        .await
        .context("refreshing the cached token failed; run `juris login`")?;
    cache.store(&refreshed)?;
    Ok(refreshed.access_token)
}

/// Client-credentials token for a machine identity (secret from JURIS_CLIENT_SECRET).
pub async fn client_credentials(options: &IdpOptions) -> anyhow::Result<String> {
    let secret = std::env::var("JURIS_CLIENT_SECRET")
        .context("set JURIS_CLIENT_SECRET to the client secret")?;
    Ok(client::client_credentials(&options.settings()?, &secret)
        .await?
        .access_token)
}
