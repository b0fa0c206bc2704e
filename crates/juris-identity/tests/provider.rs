//! Token validation and the client flows against a real OIDC provider
//! (`oidc-provider` on loopback, started by `juris_testkit::oidc`).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use juris_identity::client::{self, ClientSettings, TokenCache};
use juris_identity::{TokenRejection, TokenValidator, ValidatorSettings};
use juris_testkit::oidc::{AUDIENCE, CI_CLIENT, CLI_CLIENT_ID, OidcProvider};
use serde_json::{Value, json};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn settings(provider: &OidcProvider) -> ValidatorSettings {
    ValidatorSettings::new(&provider.issuer, AUDIENCE)
}

async fn validator(provider: &OidcProvider) -> TokenValidator {
    TokenValidator::discover(settings(provider))
        .await
        .expect("discovery")
}

fn client_settings(provider: &OidcProvider) -> ClientSettings {
    ClientSettings::new(&provider.issuer, CLI_CLIENT_ID, AUDIENCE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_and_user_tokens_validate_with_their_groups() -> anyhow::Result<()> {
    let provider = OidcProvider::start().await?;
    let validator = validator(&provider).await;

    let ci = validator
        .validate(&provider.client_credentials_token().await?)
        .await?;
    assert_eq!(ci.subject, "ci-bot");
    assert_eq!(ci.groups, ["ci"]);
    assert_eq!(ci.issuer, provider.issuer);
    assert!(ci.expires_at > now() + 500, "default TTL is 600 s");

    let alice = validator
        .validate(&provider.user_token("alice").await?)
        .await?;
    assert_eq!(alice.subject, "alice");
    assert_eq!(alice.display_name.as_deref(), Some("alice@example.test"));
    assert_eq!(alice.groups, ["dba", "engineering"]);

    let dave = validator
        .validate(&provider.user_token("dave").await?)
        .await?;
    assert_eq!(dave.subject, "dave");
    assert!(dave.groups.is_empty());

    // The crate's own client-credentials flow gets an equally good token.
    let tokens = client::client_credentials(
        &ClientSettings::new(&provider.issuer, CI_CLIENT.0, AUDIENCE),
        CI_CLIENT.1,
    )
    .await?;
    assert_eq!(
        validator.validate(&tokens.access_token).await?.groups,
        ["ci"]
    );
    let wrong_secret = client::client_credentials(
        &ClientSettings::new(&provider.issuer, CI_CLIENT.0, AUDIENCE),
        "not-the-secret",
    )
    .await;
    assert!(wrong_secret.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_kind_gets_its_specific_rejection() -> anyhow::Result<()> {
    let provider = OidcProvider::start().await?;
    let validator = validator(&provider).await;
    let issuer = provider.issuer.clone();
    let claims = |extra: Value| {
        let mut claims = json!({
            "iss": issuer, "sub": "mallory", "aud": AUDIENCE,
            "iat": now(), "exp": now() + 300, "groups": ["dba"],
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };

    // A minted token with good claims is accepted: the cases below differ in one thing only.
    let good = provider.mint(json!({}), claims(json!({}))).await?;
    assert_eq!(validator.validate(&good).await?.subject, "mallory");
    let array_aud = provider
        .mint(json!({}), claims(json!({"aud": ["other", AUDIENCE]})))
        .await?;
    assert!(validator.validate(&array_aud).await.is_ok());

    let cases: Vec<(&str, String, TokenRejection)> = vec![
        (
            "expired",
            provider
                .mint(json!({}), claims(json!({"exp": now() - 3600})))
                .await?,
            TokenRejection::Expired,
        ),
        (
            "nbf in the future",
            provider
                .mint(json!({}), claims(json!({"nbf": now() + 3600})))
                .await?,
            TokenRejection::NotYetValid,
        ),
        (
            "wrong issuer",
            provider
                .mint(
                    json!({}),
                    claims(json!({"iss": format!("{}/", provider.issuer)})),
                )
                .await?,
            TokenRejection::WrongIssuer,
        ),
        (
            "wrong audience",
            provider
                .mint(json!({}), claims(json!({"aud": "urn:someone:else"})))
                .await?,
            TokenRejection::WrongAudience(AUDIENCE.into()),
        ),
        (
            "no subject",
            provider
                .mint(json!({}), claims(json!({"sub": null})))
                .await?,
            TokenRejection::MissingClaim("sub"),
        ),
        (
            "no expiry",
            provider
                .mint(json!({}), claims(json!({"exp": null})))
                .await?,
            TokenRejection::MissingClaim("exp"),
        ),
        (
            "alg none",
            provider
                .mint(json!({"alg": "none"}), claims(json!({})))
                .await?,
            TokenRejection::AlgorithmNotAllowed("none".into()),
        ),
        (
            "unknown kid",
            provider
                .mint(json!({"kid": "no-such-key"}), claims(json!({})))
                .await?,
            TokenRejection::UnknownKeyId,
        ),
        (
            "foreign signature",
            provider.mint_foreign(claims(json!({}))).await?,
            TokenRejection::BadSignature,
        ),
        (
            "tampered payload",
            {
                let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
                let other = provider
                    .mint(json!({}), claims(json!({"sub": "root"})))
                    .await?;
                parts[1] = other.split('.').nth(1).unwrap().to_string();
                parts.join(".")
            },
            TokenRejection::BadSignature,
        ),
        (
            "garbage",
            "this.is-not.a-jwt".to_string(),
            TokenRejection::Malformed,
        ),
        ("empty", String::new(), TokenRejection::Malformed),
        (
            "oversized",
            format!("{}.{}.sig", "a".repeat(8 * 1024), "b".repeat(8 * 1024)),
            TokenRejection::Malformed,
        ),
    ];
    for (what, token, expected) in cases {
        let rejection = validator
            .validate(&token)
            .await
            .expect_err(&format!("{what} must be refused"));
        assert_eq!(rejection, expected, "{what}");
        let message = rejection.to_string();
        assert!(
            token.is_empty() || !message.contains(&token),
            "{what}: the token was echoed"
        );
    }

    // An ID token is not an access token: its audience is the client.
    let id_token = provider
        .device_tokens("alice")
        .await?
        .id_token
        .expect("id_token");
    assert_eq!(
        validator.validate(&id_token).await,
        Err(TokenRejection::WrongAudience(AUDIENCE.into()))
    );

    // A gateway configured for another audience refuses the real tokens.
    let mut other = settings(&provider);
    other.audience = "urn:other:service".into();
    let other = TokenValidator::discover(other).await?;
    assert_eq!(
        other.validate(&provider.user_token("bob").await?).await,
        Err(TokenRejection::WrongAudience("urn:other:service".into()))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_requires_the_exact_issuer() -> anyhow::Result<()> {
    let provider = OidcProvider::start().await?;
    let mut slash = settings(&provider);
    slash.issuer = format!("{}/", provider.issuer);
    let error = TokenValidator::discover(slash).await.unwrap_err();
    assert!(error.to_string().contains("discovery"), "{error}");
    let mut nowhere = settings(&provider);
    nowhere.issuer = "http://127.0.0.1:1".into();
    nowhere.http_timeout = Duration::from_secs(2);
    assert!(TokenValidator::discover(nowhere).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refresh_once_per_interval_and_an_unreachable_idp_is_reported()
-> anyhow::Result<()> {
    let provider = OidcProvider::start().await?;
    let mut fast = settings(&provider);
    fast.jwks_min_refresh_interval = Duration::from_millis(200);
    let validator = TokenValidator::discover(fast).await?;
    let claims = json!({"iss": provider.issuer, "sub": "s", "aud": AUDIENCE, "exp": now() + 300});
    let good = provider.mint(json!({}), claims.clone()).await?;
    let unknown = provider
        .mint(json!({"kid": "rotated-away"}), claims)
        .await?;

    assert_eq!(
        validator.validate(&unknown).await,
        Err(TokenRejection::UnknownKeyId)
    );
    drop(provider);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The refresh is due but the IdP is gone.
    assert_eq!(
        validator.validate(&unknown).await,
        Err(TokenRejection::KeysUnavailable)
    );
    // Within the interval after that failure nobody asks again.
    assert_eq!(
        validator.validate(&unknown).await,
        Err(TokenRejection::UnknownKeyId)
    );
    // Cached keys keep working while the IdP is down.
    assert_eq!(validator.validate(&good).await?.subject, "s");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_refresh_and_a_private_cache() -> anyhow::Result<()> {
    let provider = OidcProvider::start().await?;
    let validator = validator(&provider).await;
    let settings = client_settings(&provider);

    let (code_tx, code_rx) = tokio::sync::oneshot::channel();
    let login = tokio::spawn({
        let settings = settings.clone();
        async move {
            client::device_login(&settings, |authorization| {
                assert!(
                    authorization
                        .verification_uri
                        .starts_with("http://127.0.0.1:")
                );
                let _ = code_tx.send(authorization.user_code.clone());
            })
            .await
        }
    });
    let code = tokio::time::timeout(Duration::from_secs(30), code_rx).await??;
    provider.approve_device(&code, "alice").await?;
    let tokens = tokio::time::timeout(Duration::from_secs(60), login).await???;
    let alice = validator.validate(&tokens.access_token).await?;
    assert_eq!(alice.groups, ["dba", "engineering"]);
    assert!(tokens.expires_at > client::now() + 500);
    let refresh_token = tokens.refresh_token.clone().expect("a refresh token");

    let dir = tempfile::tempdir()?;
    let cache = TokenCache::new(&dir.path().join("juris"));
    cache.store(&tokens)?;
    assert_eq!(
        std::fs::metadata(cache.path())?.permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("juris"))?
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let cached = cache.load()?.expect("cached tokens");
    assert_eq!(
        cached.valid_access_token(client::now(), Duration::from_secs(60)),
        Some(tokens.access_token.as_str())
    );
    assert_eq!(
        cached.valid_access_token(cached.expires_at, Duration::ZERO),
        None
    );

    let refreshed = client::refresh(&settings, &refresh_token).await?;
    assert_ne!(refreshed.access_token, tokens.access_token);
    let again = validator.validate(&refreshed.access_token).await?;
    assert_eq!(
        (again.subject.as_str(), again.groups),
        ("alice", alice.groups)
    );
    assert!(refreshed.refresh_token.is_some());

    let bogus = client::refresh(&settings, "not-a-refresh-token").await;
    assert!(bogus.is_err());
    Ok(())
}
