//! A real OIDC provider for end-to-end tests: the npm package
//! `oidc-provider` run by `tests/oidc/provider.mjs` on 127.0.0.1, with
//! discovery, JWKS, JWT access tokens for [`AUDIENCE`], the device flow
//! (driven here through its real HTML forms, as a browser would) and the
//! client-credentials flow.
//!
//! Users and groups: alice → dba, engineering; bob → analysts;
//! carol → developers; anyone else → none. Machine client `ci-bot` → ci.

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The audience the gateway requires.
pub const AUDIENCE: &str = "urn:juris:gateway";
/// The CLI's public client id at the provider.
pub const CLI_CLIENT_ID: &str = "juris-cli";
/// The machine identity's client id and secret.
pub const CI_CLIENT: (&str, &str) = ("ci-bot", "ci-bot-secret");

/// A running provider; the process is killed on drop.
pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    kid: String,
    key: jsonwebtoken::EncodingKey,
    _child: Child,
}

static NPM: Mutex<()> = Mutex::new(());

fn ensure_installed(dir: &Path) -> anyhow::Result<()> {
    let _guard = NPM.lock().unwrap_or_else(|p| p.into_inner());
    if dir.join("node_modules/oidc-provider").exists() {
        return Ok(());
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .context("cannot run npm")?;
    if !status.success() {
        bail!("npm ci in {} failed", dir.display());
    }
    Ok(())
}

impl OidcProvider {
    /// Start the provider and wait for its ready line.
    pub async fn start() -> anyhow::Result<OidcProvider> {
        let dir = crate::gateway::workspace_root().join("tests/oidc");
        ensure_installed(&dir)?;
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("JURIS_OIDC_AUDIENCE", AUDIENCE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start node tests/oidc/provider.mjs")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the OIDC provider did not start within 30 s")??
            .context("the OIDC provider exited before it was ready")?;
        // Keep draining: a provider blocked on a full or closed stdout pipe stops answering.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: Value = serde_json::from_str(&line).context("bad ready line")?;
        let text = |k: &str| {
            ready
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .context("ready line lacks a field")
        };
        let key = jsonwebtoken::EncodingKey::from_ec_pem(text("private_key_pem")?.as_bytes())?;
        Ok(OidcProvider {
            issuer: text("issuer")?,
            port: ready
                .get("port")
                .and_then(Value::as_u64)
                .context("no port")? as u16,
            kid: text("kid")?,
            key,
            _child: child,
        })
    }

    fn http() -> anyhow::Result<reqwest::Client> {
        // No connection reuse: the provider's HTTP server resets reused
        // connections after some responses, which a browser would retry.
        Ok(reqwest::Client::builder()
            .cookie_store(true)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// A machine token from the client-credentials flow (`ci-bot`).
    pub async fn client_credentials_token(&self) -> anyhow::Result<String> {
        let response: Value = Self::http()?
            .post(format!("{}/token", self.issuer))
            .basic_auth(CI_CLIENT.0, Some(CI_CLIENT.1))
            .form(&[("grant_type", "client_credentials"), ("resource", AUDIENCE)])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        response
            .get("access_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .context("no access_token")
    }

    /// A user's access token through the whole device flow.
    pub async fn user_token(&self, login: &str) -> anyhow::Result<String> {
        let http = Self::http()?;
        let device: Value = http
            .post(format!("{}/device/auth", self.issuer))
            .form(&[
                ("client_id", CLI_CLIENT_ID),
                ("scope", "openid email offline_access"),
                ("resource", AUDIENCE),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let user_code = device["user_code"].as_str().context("no user_code")?;
        let device_code = device["device_code"].as_str().context("no device_code")?;
        self.approve_device(user_code, login).await?;
        let tokens: Value = http
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", CLI_CLIENT_ID),
                ("resource", AUDIENCE),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        tokens["access_token"]
            .as_str()
            .map(str::to_string)
            .context("no access_token")
    }

    /// Do what the user does in a browser: enter the code, confirm, log in.
    pub async fn approve_device(&self, user_code: &str, login: &str) -> anyhow::Result<()> {
        let http = Self::http()?;
        let device_url = format!("{}/device", self.issuer);
        let page = http
            .get(&device_url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let page = http
            .post(&device_url)
            .form(&[
                ("xsrf", hidden(&page, "xsrf")?.as_str()),
                ("user_code", user_code),
            ])
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let page = http
            .post(&device_url)
            .form(&[
                ("xsrf", hidden(&page, "xsrf")?.as_str()),
                ("user_code", user_code),
                ("confirm", "yes"),
            ])
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let action = attribute(&page, "action=\"").context("no login form")?;
        let page = http
            .post(action)
            .form(&[("prompt", "login"), ("login", login), ("password", "any")])
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        if !page.contains("Sign-in Success") {
            bail!(
                "device login did not succeed: {}",
                page.chars().take(500).collect::<String>()
            );
        }
        Ok(())
    }

    /// Sign `claims` with the provider's real key. `header` may set `kid`,
    /// or `alg: "none"` for an unsigned token.
    pub async fn mint(&self, header: Value, claims: Value) -> anyhow::Result<String> {
        if header.get("alg").and_then(Value::as_str) == Some("none") {
            let b64 =
                |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            return Ok(format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "kid": self.kid})),
                b64(&claims)
            ));
        }
        let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        jwt_header.kid = Some(
            header
                .get("kid")
                .and_then(Value::as_str)
                .unwrap_or(&self.kid)
                .to_string(),
        );
        Ok(jsonwebtoken::encode(&jwt_header, &claims, &self.key)?)
    }

    /// Sign `claims` with a different key under the provider's key id.
    pub async fn mint_foreign(&self, claims: Value) -> anyhow::Result<String> {
        let key = rcgen::KeyPair::generate()?;
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &encoding)?)
    }
}

fn attribute<'a>(page: &'a str, prefix: &str) -> Option<&'a str> {
    let start = page.find(prefix)? + prefix.len();
    let end = page[start..].find('"')? + start;
    Some(&page[start..end])
}

fn hidden(page: &str, name: &str) -> anyhow::Result<String> {
    attribute(page, &format!("name=\"{name}\" value=\""))
        .map(str::to_string)
        .with_context(|| format!("no hidden {name} field"))
}
