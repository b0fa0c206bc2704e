//! The DEMO ONLY issuer over real HTTP: discovery and JWKS as an OIDC
//! client reads them, and minted tokens verify against the served key.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use juris_demo::issuer::DevIssuer;
use serde_json::Value;

const AUDIENCE: &str = "urn:juris:test";

#[tokio::test]
async fn discovery_jwks_and_minted_tokens_verify() -> anyhow::Result<()> {
    let issuer = DevIssuer::start(AUDIENCE).await?;
    let base = issuer.issuer().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let http = reqwest::Client::new();

    let response = http
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-juris-demo-only"], "true");
    let discovery: Value = response.json().await?;
    assert_eq!(discovery["juris_demo_only"], true);
    assert_eq!(discovery["issuer"], base.as_str());
    assert_eq!(discovery["jwks_uri"], format!("{base}/jwks"));
    assert_eq!(
        discovery["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        discovery["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    for endpoint in ["authorization_endpoint", "token_endpoint"] {
        let url = discovery[endpoint].as_str().expect(endpoint);
        let response = http.post(url).send().await?;
        assert_eq!(response.status(), 400, "{endpoint}");
        let body: Value = response.json().await?;
        assert_eq!(body["juris_demo_only"], true);
        assert!(
            body["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("demo issuer mints tokens directly")
        );
    }

    let jwks_url = discovery["jwks_uri"].as_str().expect("jwks_uri");
    let raw: Value = http.get(jwks_url).send().await?.json().await?;
    assert_eq!(raw["juris_demo_only"], true);
    let key = &raw["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], issuer.kid());
    assert_eq!(&raw, issuer.jwks());
    let jwks: JwkSet = serde_json::from_value(raw)?;

    let token = issuer.mint(
        "alice",
        "alice@example.com",
        &["dba", "developers"],
        Duration::from_secs(300),
    )?;
    let header = jsonwebtoken::decode_header(&token)?;
    assert_eq!(header.alg, Algorithm::ES256);
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("the token's kid is served");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[base.as_str()]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    let claims =
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk)?, &validation)?.claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["dba", "developers"]));
    assert_eq!(claims["aud"], AUDIENCE);
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(300));
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));

    // Another issuer's token does not verify against this key.
    let other = DevIssuer::start(AUDIENCE).await?;
    let foreign = other.mint("mallory", "m@example.com", &[], Duration::from_secs(300))?;
    assert!(
        jsonwebtoken::decode::<Value>(&foreign, &DecodingKey::from_jwk(jwk)?, &validation).is_err()
    );

    // An expired token is refused.
    let expired = issuer.sign(
        &serde_json::json!({"iss": base, "sub": "alice", "aud": AUDIENCE, "exp": 1_000, "nbf": 0}),
        None,
    )?;
    assert!(
        jsonwebtoken::decode::<Value>(&expired, &DecodingKey::from_jwk(jwk)?, &validation).is_err()
    );

    // The server stops with the handle.
    drop(issuer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/jwks"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err()
    );
    Ok(())
}
