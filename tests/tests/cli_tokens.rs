//! `juris login`, `juris token` and `juris token --client-credentials`
//! against the real OIDC provider, and the tokens they produce used through
//! a real gateway.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::{CONNECTION, Env, db_error};
use juris_testkit::gateway::juris_binary;
use tokio::io::{AsyncBufReadExt, BufReader};

fn juris(env: &Env, cache: &std::path::Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(juris_binary().expect("juris binary"));
    command
        .env("JURIS_ISSUER", &env.oidc.issuer)
        .env("JURIS_CACHE_DIR", cache)
        .env_remove("JURIS_TOKEN")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn device_login_caches_privately_and_token_refreshes() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("juris");

    // Nothing cached yet: a clear error.
    let out = juris(&env, &cache).arg("token").output().await?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("juris login"));

    let mut login = juris(&env, &cache)
        .arg("login")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(login.stdout.take().unwrap()).lines();
    let code = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .expect("login exited early");
        if let Some(rest) = line.split("enter the code ").nth(1) {
            break rest.trim().to_string();
        }
    };
    // The person approves in their browser.
    env.oidc.approve_device(&code, "alice").await?;
    let status = tokio::time::timeout(Duration::from_secs(60), login.wait()).await??;
    assert!(status.success(), "juris login failed");
    let file = cache.join("tokens.json");
    assert_eq!(
        std::fs::metadata(&file)?.permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&cache)?.permissions().mode() & 0o777,
        0o700
    );

    let out = juris(&env, &cache).arg("token").output().await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    let alice = env.client(&token).await?;
    alice
        .batch_execute("create table made_by_cli_login (id int)")
        .await?;

    // An expired cache entry is refreshed with the refresh token.
    let mut cached: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    cached["expires_at"] = 0.into();
    std::fs::write(&file, serde_json::to_vec(&cached)?)?;
    let out = juris(&env, &cache).arg("token").output().await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refreshed = String::from_utf8(out.stdout)?.trim().to_string();
    assert_ne!(refreshed, token);
    let again = env.client(&refreshed).await?;
    assert_eq!(again.query_one("select 1", &[]).await?.get::<_, i32>(0), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn machine_identities_use_client_credentials() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let dir = tempfile::tempdir()?;
    let out = juris(&env, dir.path())
        .args(["token", "--client-credentials"])
        .env("JURIS_CLIENT_ID", "ci-bot")
        .env("JURIS_CLIENT_SECRET", "ci-bot-secret")
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    let ci = env.client(&token).await?;
    let n: i64 = ci
        .query_one("select count(*) from customers", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000);
    // The ci group holds read only.
    let err = ci.batch_execute("delete from customers").await.unwrap_err();
    assert_eq!(db_error(&err).unwrap().0, "42501");

    let wrong = juris(&env, dir.path())
        .args(["token", "--client-credentials"])
        .env("JURIS_CLIENT_ID", "ci-bot")
        .env("JURIS_CLIENT_SECRET", "wrong")
        .output()
        .await?;
    assert!(!wrong.status.success());
    assert!(!String::from_utf8_lossy(&wrong.stderr).contains("wrong\n"));
    let _ = CONNECTION;
    Ok(())
}
