//! Adapter from the identity provider client to the data plane's
//! [`Authenticator`]. Discovery is lazy and retried, so a node starts (and
//! serves clear errors) even while the IdP is briefly unreachable.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::{Duration, Instant};

use juris_config::IdentityConfig;
use juris_identity::{TokenValidator, ValidatorSettings};
use juris_proxy_pg::Authenticator;
use juris_types::Principal;
use tokio::sync::{Mutex, OnceCell};
use tracing::warn;

use crate::NodeError;

/// Do not ask an unreachable IdP again more often than this.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);

/// Validates access tokens against the configured OIDC issuer.
pub struct OidcAuthenticator {
    settings: ValidatorSettings,
    validator: OnceCell<TokenValidator>,
    last_failure: Mutex<Option<Instant>>,
}

impl OidcAuthenticator {
    /// Prepare an authenticator; discovery happens on first use.
    pub fn new(config: &IdentityConfig) -> Result<Self, NodeError> {
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| {
                jsonwebtoken::Algorithm::from_str(a)
                    .map_err(|_| NodeError::Algorithm(format!("unknown algorithm `{a}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OidcAuthenticator {
            settings: ValidatorSettings {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                groups_claim: config.groups_claim.clone(),
                algorithms,
                leeway: Duration::from_secs(config.leeway_secs),
                jwks_min_refresh_interval: Duration::from_secs(config.jwks_refresh_secs),
                http_timeout: Duration::from_secs(5),
            },
            validator: OnceCell::new(),
            last_failure: Mutex::new(None),
        })
    }

    async fn validator(&self) -> Result<&TokenValidator, String> {
        if let Some(validator) = self.validator.get() {
            return Ok(validator);
        }
        let mut last_failure = self.last_failure.lock().await;
        if let Some(validator) = self.validator.get() {
            return Ok(validator);
        }
        if last_failure.is_some_and(|at| at.elapsed() < DISCOVERY_RETRY) {
            return Err("the identity provider is unreachable".into());
        }
        match TokenValidator::discover(self.settings.clone()).await {
            Ok(validator) => {
                *last_failure = None;
                Ok(self.validator.get_or_init(|| async { validator }).await)
            }
            Err(e) => {
                warn!(issuer = %self.settings.issuer, "OIDC discovery failed: {e}");
                *last_failure = Some(Instant::now());
                Err("the identity provider is unreachable".into())
            }
        }
    }
}

impl Authenticator for OidcAuthenticator {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, String>> + Send + 'a>> {
        Box::pin(async move {
            let validator = self.validator().await?;
            validator
                .validate(token)
                .await
                .map_err(|rejection| rejection.to_string())
        })
    }
}
