//! Where recordings live in a region's object store, and how an S3 store
//! is built without a second TLS stack.
//!
//! Key layout (see `docs/formats/recording.md`):
//!
//! ```text
//! recordings/<region>/<yyyy>/<mm>/<dd>/<session_id>/chunk-000001.zst
//! recordings/<region>/<yyyy>/<mm>/<dd>/<session_id>/manifest.json
//! recordings/<region>/index/<started_at_ms, 13 digits>-<session_id>.json
//! ```
//!
//! The date is the session's start (UTC), so a day's recordings share a
//! prefix and lifecycle rules can expire them by prefix. The index object
//! is an unsigned pointer with a summary: listing it in key order lists
//! sessions by start time without fetching every manifest; the manifest
//! stays the only authority.
//!
//! `object_store` 0.14 speaks HTTP through `reqwest` 0.13, which would
//! bring `aws-lc-rs` with its default TLS feature. The workspace uses ring
//! everywhere, so this crate enables reqwest's `rustls-no-provider` and
//! installs ring as the process-wide rustls provider before building an
//! S3 store ([`install_crypto_provider`]); without a provider, reqwest
//! panics when the store builds its client.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;

use crate::Result;

/// File name of chunk `index` (in the spool and in the store).
pub fn chunk_file_name(index: u32) -> String {
    format!("chunk-{index:06}.zst")
}

/// File name of the manifest.
pub const MANIFEST_NAME: &str = "manifest.json";

/// The prefix shared by a session's chunks and manifest.
pub fn session_prefix(region: &str, session_id: &str, started_at_ms: u64) -> String {
    let (year, month, day) = utc_date(started_at_ms);
    format!("recordings/{region}/{year:04}/{month:02}/{day:02}/{session_id}")
}

/// The prefix under which a region's index objects live.
pub fn index_prefix(region: &str) -> String {
    format!("recordings/{region}/index/")
}

/// The index object of a session.
pub fn index_key(region: &str, session_id: &str, started_at_ms: u64) -> String {
    format!(
        "{}{started_at_ms:013}-{session_id}.json",
        index_prefix(region)
    )
}

/// Parse an index object's file name into (start, session id).
pub(crate) fn parse_index_name(name: &str) -> Option<(u64, &str)> {
    let stem = name.strip_suffix(".json")?;
    let (start, session) = stem.split_once('-')?;
    if start.len() != 13 || crate::check_session_id(session).is_err() {
        return None;
    }
    Some((start.parse().ok()?, session))
}

pub(crate) fn object_path(key: &str) -> Result<ObjectPath> {
    ObjectPath::parse(key).map_err(|e| crate::RecordError::Invalid {
        what: "object key",
        value: key.to_string(),
        reason: if e.to_string().is_empty() {
            "not a valid object key"
        } else {
            "not a valid object key (empty segment, `.` or `..`, or bad characters)"
        },
    })
}

/// Civil date (UTC) of a Unix time in milliseconds.
pub(crate) fn utc_date(at_ms: u64) -> (i32, u8, u8) {
    let seconds = i64::try_from(at_ms / 1000).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => (t.year(), t.month() as u8, t.day()),
        // Beyond year 9999: clamp rather than fail; such a clock is wrong
        // anyway and the key stays well-formed.
        Err(_) => (9999, 12, 31),
    }
}

/// Install ring as the process-wide rustls crypto provider, unless one is
/// installed already. Idempotent; call it before building any HTTP-based
/// object store.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // A concurrent install wins the race harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Build an S3 store from a configured builder (bucket, region,
/// credentials, endpoint), with ring as the TLS provider.
pub fn s3_store(builder: AmazonS3Builder) -> Result<Arc<dyn ObjectStore>> {
    install_crypto_provider();
    Ok(Arc::new(builder.build()?))
}

/// Open a region's object store from its `store` settings; `key` names
/// them in errors (`region[0].store`). A local directory is created
/// (mode 0700) if missing; S3 credentials come from the settings' secret
/// references, else from the environment's AWS variables.
pub fn open_store(config: &juris_config::StoreConfig, key: &str) -> Result<Arc<dyn ObjectStore>> {
    use juris_config::StoreConfig;
    let fail = |reason: String| crate::RecordError::StoreConfig {
        key: key.to_string(),
        reason,
    };
    match config {
        StoreConfig::Local { path } => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| fail(format!("cannot create {}: {e}", path.display())))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?;
            Ok(Arc::new(store))
        }
        StoreConfig::S3 {
            bucket,
            region,
            endpoint,
            access_key_id,
            secret_access_key,
            allow_http,
        } => {
            // The uploader retries with its own backoff and quarantine;
            // the client's retries only cover a blip, so that a node
            // stopping during an outage is not held up for minutes.
            let retry = object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(10),
                ..object_store::RetryConfig::default()
            };
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(region)
                .with_allow_http(*allow_http)
                .with_retry(retry);
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
                let resolve = |name: &str, secret: &juris_config::SecretRef| {
                    secret
                        .resolve(&format!("{key}.{name}"))
                        .map_err(|e| fail(e.to_string()))
                };
                builder = builder
                    .with_access_key_id(resolve("access_key_id", id)?)
                    .with_secret_access_key(resolve("secret_access_key", secret)?);
            }
            s3_store(builder).map_err(|e| fail(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        // 2024-02-29T23:59:59.999Z
        let at = 1_709_251_199_999;
        let sid = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            session_prefix("eu-west", sid, at),
            format!("recordings/eu-west/2024/02/29/{sid}")
        );
        assert_eq!(chunk_file_name(1), "chunk-000001.zst");
        let key = index_key("eu-west", sid, at);
        assert_eq!(
            key,
            format!("recordings/eu-west/index/1709251199999-{sid}.json")
        );
        let name = key.rsplit('/').next().unwrap();
        assert_eq!(parse_index_name(name), Some((at, sid)));
        assert_eq!(parse_index_name("x-y.json"), None);
        assert_eq!(utc_date(u64::MAX), (9999, 12, 31));
    }
}
