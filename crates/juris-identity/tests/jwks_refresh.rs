//! An unknown key id refreshes the JWKS at most once per interval, however
//! many sessions present such tokens at once (no stampede on the IdP).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use juris_identity::{TokenRejection, TokenValidator, ValidatorSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP server on loopback: discovery and an empty-but-valid JWKS,
/// counting JWKS fetches.
async fn idp() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let fetches = Arc::new(AtomicUsize::new(0));
    let (issuer_for_server, counter) = (issuer.clone(), fetches.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (issuer, counter) = (issuer_for_server.clone(), counter.clone());
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]);
                let body = if request.starts_with("GET /jwks") {
                    counter.fetch_add(1, Ordering::SeqCst);
                    r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"known","alg":"ES256","use":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#.to_string()
                } else {
                    serde_json::json!({
                        "issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
                        "authorization_endpoint": format!("{issuer}/auth"),
                        "response_types_supported": ["code"], "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["ES256"]
                    })
                    .to_string()
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (issuer, fetches)
}

fn token_with_kid(kid: &str) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b64(format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#)),
        b64("{}".into()),
        b64("sig".into())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_refresh_the_jwks_at_most_once_per_interval() {
    let (issuer, fetches) = idp().await;
    let validator = TokenValidator::discover(ValidatorSettings {
        issuer,
        audience: "urn:juris:gateway".into(),
        groups_claim: "groups".into(),
        algorithms: vec![jsonwebtoken::Algorithm::ES256],
        leeway: Duration::from_secs(0),
        jwks_min_refresh_interval: Duration::from_millis(500),
        http_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    // Discovery (openidconnect reads the JWKS too) and our key load.
    let after_discovery = fetches.load(Ordering::SeqCst);
    assert!((1..=2).contains(&after_discovery), "{after_discovery}");

    // Within the interval: no refresh at all.
    assert_eq!(
        validator.validate(&token_with_kid("unknown")).await,
        Err(TokenRejection::UnknownKeyId)
    );
    assert_eq!(fetches.load(Ordering::SeqCst), after_discovery);

    // After the interval, twenty concurrent unknown-kid tokens cause one refresh.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let attempts = (0..20).map(|i| {
        let validator = validator.clone();
        tokio::spawn(async move {
            validator
                .validate(&token_with_kid(&format!("unknown-{i}")))
                .await
        })
    });
    for attempt in attempts {
        assert_eq!(attempt.await.unwrap(), Err(TokenRejection::UnknownKeyId));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), after_discovery + 1);

    // `alg: none` never reaches key lookup, so it refreshes nothing either.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let none = format!(
        "{}.e30.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"x"}"#)
    );
    assert!(matches!(
        validator.validate(&none).await,
        Err(TokenRejection::AlgorithmNotAllowed(_))
    ));
    assert_eq!(fetches.load(Ordering::SeqCst), after_discovery + 1);
}
