//! A real OIDC provider for tests: the npm package `oidc-provider` run by
//! `tests/oidc/provider.mjs` on 127.0.0.1, with discovery, JWKS, JWT access
//! tokens for [`AUDIENCE`], the device flow (driven here through its real
//! HTML forms, as a person in a browser would) and the client-credentials
//! flow.
//!
//! Users and groups: alice → dba, engineering; bob → analysts;
//! carol → developers; dana → analysts, pii-readers; erin → pii-readers;
//! frank → dba; anyone else → none; every user's email is
//! `<login>@example.test`. Machine client `ci-bot` → `ci` (its `sub` is the
//! client id).
//!
//! Deliberately bad tokens come from the provider's test-only endpoints
//! (`/test/mint` signs with its real key, `/test/mint-foreign` with another
//! key under its key id).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The audience (resource indicator) the gateway requires.
pub const AUDIENCE: &str = "urn:juris:gateway";
/// The CLI's public client id at the provider.
pub const CLI_CLIENT_ID: &str = "juris-cli";
/// The machine identity's client id and secret.
pub const CI_CLIENT: (&str, &str) = ("ci-bot", "ci-bot-secret");
/// Scopes the CLI asks for.
pub const CLI_SCOPES: &str = "openid email groups offline_access";

/// A running provider; the process is killed when this is dropped.
pub struct OidcProvider {
    /// The issuer exactly as discovery reports it (no trailing slash).
    pub issuer: String,
    pub port: u16,
    _child: Child,
}

/// Tokens from the device flow.
#[derive(Debug, Clone)]
pub struct DeviceTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
}

/// `tests/oidc` in this repository.
pub fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

/// Run `npm ci` in `dir` unless its dependencies are installed. Test binaries
/// run in parallel processes, so this holds an exclusive file lock.
fn ensure_installed(dir: &Path) -> anyhow::Result<()> {
    let installed = || dir.join("node_modules/oidc-provider/package.json").exists();
    if installed() {
        return Ok(());
    }
    let lock_path = std::env::temp_dir().join("juris-testkit-oidc-npm.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .context("cannot lock the npm install lock file")?;
    if installed() {
        return Ok(());
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .context("cannot run npm (is Node.js installed?)")?;
    if !status.success() {
        bail!("`npm ci` in {} failed", dir.display());
    }
    Ok(())
}

impl OidcProvider {
    /// Start the provider (installing its npm dependencies first if needed)
    /// and wait for its ready line.
    pub async fn start() -> anyhow::Result<OidcProvider> {
        Self::start_with(&[]).await
    }

    /// Start with extra environment, e.g. `("JURIS_OIDC_TOKEN_TTL", "5")`.
    pub async fn start_with(env: &[(&str, &str)]) -> anyhow::Result<OidcProvider> {
        let dir = provider_dir();
        let install_dir = dir.clone();
        tokio::task::spawn_blocking(move || ensure_installed(&install_dir)).await??;
        let mut command = Command::new("node");
        command
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("JURIS_OIDC_PORT", "0")
            .env("JURIS_OIDC_AUDIENCE", AUDIENCE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        // The provider warns about its development-only features on stderr.
        if std::env::var_os("JURIS_OIDC_DEBUG").is_none() {
            command.stderr(Stdio::null());
        }
        let mut child = command
            .spawn()
            .context("cannot start `node tests/oidc/provider.mjs`")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the OIDC provider did not start within 30 s")??
            .context("the OIDC provider exited before it was ready")?;
        // Keep draining stdout so the provider never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: Value = serde_json::from_str(&line)
            .with_context(|| format!("bad ready line from the OIDC provider: {line}"))?;
        let issuer = ready["issuer"]
            .as_str()
            .context("ready line lacks issuer")?
            .to_string();
        let port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .context("ready line lacks port")?;
        Ok(OidcProvider {
            issuer,
            port,
            _child: child,
        })
    }

    fn http() -> anyhow::Result<reqwest::Client> {
        // No connection reuse: the provider's HTTP server may reset kept-alive
        // connections, which a browser would silently retry.
        Ok(reqwest::Client::builder()
            .cookie_store(true)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// A machine access token from the client-credentials flow (`ci-bot`).
    pub async fn client_credentials_token(&self) -> anyhow::Result<String> {
        let response = Self::http()?
            .post(format!("{}/token", self.issuer))
            .basic_auth(CI_CLIENT.0, Some(CI_CLIENT.1))
            .form(&[("grant_type", "client_credentials"), ("resource", AUDIENCE)])
            .send()
            .await?;
        let tokens = json_or_error(response, "client credentials").await?;
        tokens["access_token"]
            .as_str()
            .map(str::to_string)
            .context("no access_token in the token response")
    }

    /// A user's JWT access token through the whole device flow.
    pub async fn user_token(&self, login: &str) -> anyhow::Result<String> {
        Ok(self.device_tokens(login).await?.access_token)
    }

    /// The whole device flow for `login`: device authorization, the
    /// browser's forms, then the token request.
    pub async fn device_tokens(&self, login: &str) -> anyhow::Result<DeviceTokens> {
        let http = Self::http()?;
        let response = http
            .post(format!("{}/device/auth", self.issuer))
            .form(&[
                ("client_id", CLI_CLIENT_ID),
                ("scope", CLI_SCOPES),
                ("resource", AUDIENCE),
            ])
            .send()
            .await?;
        let device = json_or_error(response, "device authorization").await?;
        let user_code = device["user_code"].as_str().context("no user_code")?;
        let device_code = device["device_code"].as_str().context("no device_code")?;
        self.approve_device(user_code, login).await?;
        let response = http
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", CLI_CLIENT_ID),
                ("resource", AUDIENCE),
            ])
            .send()
            .await?;
        let tokens = json_or_error(response, "device token").await?;
        let text = |name: &str| tokens[name].as_str().map(str::to_string);
        Ok(DeviceTokens {
            access_token: text("access_token").context("no access_token")?,
            refresh_token: text("refresh_token"),
            id_token: text("id_token"),
        })
    }

    /// Do what the person does in a browser: open the verification page,
    /// enter the user code, confirm it, sign in as `login` (any password),
    /// and consent.
    pub async fn approve_device(&self, user_code: &str, login: &str) -> anyhow::Result<()> {
        let http = Self::http()?;
        let device_url = format!("{}/device", self.issuer);
        let page = read_page(http.get(&device_url).send().await?).await?;
        let page = read_page(
            http.post(&device_url)
                .form(&[
                    ("xsrf", hidden(&page, "xsrf")?.as_str()),
                    ("user_code", user_code),
                ])
                .send()
                .await?,
        )
        .await?;
        if !page.contains("op.deviceConfirmForm") {
            bail!("the user code was not accepted: {}", excerpt(&page));
        }
        let mut page = read_page(
            http.post(&device_url)
                .form(&[
                    ("xsrf", hidden(&page, "xsrf")?.as_str()),
                    ("user_code", hidden(&page, "user_code")?.as_str()),
                    ("confirm", "yes"),
                ])
                .send()
                .await?,
        )
        .await?;
        // Interaction pages (login, then consent) until the success page.
        for _ in 0..4 {
            if page.contains("Sign-in Success") {
                return Ok(());
            }
            let action = attribute(&page, "action=\"")
                .context("no form on the interaction page")?
                .replace("&amp;", "&");
            let prompt = hidden(&page, "prompt")?;
            let form: Vec<(&str, &str)> = match prompt.as_str() {
                "login" => vec![("prompt", "login"), ("login", login), ("password", "any")],
                "consent" => vec![("prompt", "consent")],
                other => bail!("unexpected interaction prompt {other}"),
            };
            page = read_page(http.post(&action).form(&form).send().await?).await?;
        }
        bail!("device login did not succeed: {}", excerpt(&page))
    }

    async fn mint_at(&self, path: &str, body: Value) -> anyhow::Result<String> {
        let response = Self::http()?
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await?;
        let answer = json_or_error(response, path).await?;
        answer["token"]
            .as_str()
            .map(str::to_string)
            .context("no token in the mint answer")
    }

    /// Sign `claims` with the provider's real key (test-only endpoint).
    /// `header` overrides the default `{"alg":"ES256","kid":<provider kid>}`:
    /// `{"alg":"none"}` gives an unsigned token, `{"kid":"x"}` an unknown key id.
    /// Claims are used verbatim (no defaults are added).
    pub async fn mint(&self, header: Value, claims: Value) -> anyhow::Result<String> {
        self.mint_at("/test/mint", json!({"header": header, "claims": claims}))
            .await
    }

    /// Sign `claims` with a freshly generated key under the provider's key id
    /// (a bad signature).
    pub async fn mint_foreign(&self, claims: Value) -> anyhow::Result<String> {
        self.mint_at(
            "/test/mint-foreign",
            json!({"header": {}, "claims": claims}),
        )
        .await
    }
}

async fn json_or_error(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {}", excerpt(&body));
    }
    serde_json::from_str(&body).with_context(|| format!("{what}: not JSON: {}", excerpt(&body)))
}

async fn read_page(response: reqwest::Response) -> anyhow::Result<String> {
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", excerpt(&body));
    }
    Ok(body)
}

fn excerpt(text: &str) -> String {
    text.chars().take(500).collect()
}

fn attribute<'a>(page: &'a str, prefix: &str) -> Option<&'a str> {
    let start = page.find(prefix)? + prefix.len();
    let end = page[start..].find('"')? + start;
    Some(&page[start..end])
}

fn hidden(page: &str, name: &str) -> anyhow::Result<String> {
    attribute(page, &format!("name=\"{name}\" value=\""))
        .map(str::to_string)
        .with_context(|| format!("no hidden {name} field in: {}", excerpt(page)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_found_in_provider_pages() {
        let page = r#"<form id="op.deviceConfirmForm" method="post" action="/device">
<input type="hidden" name="xsrf" value="abc"/>
<input type="hidden" name="user_code" value="BCDF-GHJK"/>"#;
        assert_eq!(hidden(page, "xsrf").unwrap(), "abc");
        assert_eq!(hidden(page, "user_code").unwrap(), "BCDF-GHJK");
        assert_eq!(attribute(page, "action=\""), Some("/device"));
        assert!(hidden(page, "prompt").is_err());
    }

    #[test]
    fn the_provider_script_is_found_from_the_crate() {
        assert!(provider_dir().join("provider.mjs").is_file());
        assert!(provider_dir().join("package-lock.json").is_file());
    }
}
