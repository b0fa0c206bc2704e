//! Invariant 3 (DESIGN §2): a node refuses to start unless its region's
//! object store is in its jurisdiction, and checks where the backend can
//! tell. A local directory is accepted because the config assigns it to
//! the region explicitly; an S3 bucket must report its cloud region (as
//! AWS and S3-compatible servers do on `HEAD /<bucket>`), which must be
//! the configured `store.region` and one of the region's `cloud_regions`.
//! A server that cannot be asked, or does not say, fails the start: evidence
//! is never written to a bucket of unknown location.

use std::time::Duration;

use juris_config::{Deployment, StoreConfig};
use tracing::info;

use crate::NodeError;

/// How long the bucket has to answer at start.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Check the node's own region's store; `Err` names the config key.
pub(crate) async fn check_store(deployment: &Deployment) -> Result<(), NodeError> {
    let region_name = &deployment.node.region;
    let Some((key, store)) = deployment.region_store(region_name) else {
        return Ok(()); // validation reports the missing store
    };
    let StoreConfig::S3 {
        bucket,
        region: configured,
        endpoint,
        allow_http,
        ..
    } = store
    else {
        return Ok(());
    };
    let refuse = |reason: String| NodeError::Residency(format!("{key}: {reason}"));
    let reported = match endpoint {
        Some(endpoint) => ask_endpoint(endpoint, bucket, *allow_http)
            .await
            .map_err(|reason| {
                refuse(format!(
                    "cannot confirm the cloud region of bucket `{bucket}`: {reason}"
                ))
            })?,
        None => {
            let options = object_store::ClientOptions::new();
            tokio::time::timeout(
                CHECK_TIMEOUT,
                object_store::aws::resolve_bucket_region(bucket, &options),
            )
            .await
            .map_err(|_| refuse(format!("cannot confirm the cloud region of bucket `{bucket}`: no answer within {CHECK_TIMEOUT:?}")))?
            .map_err(|e| refuse(format!("cannot confirm the cloud region of bucket `{bucket}`: {e}")))?
        }
    };
    if &reported != configured {
        return Err(refuse(format!(
            "bucket `{bucket}` is in cloud region `{reported}`, not `{configured}` as configured"
        )));
    }
    let allowed = &deployment
        .region(region_name)
        .map(|r| r.cloud_regions.clone())
        .unwrap_or_default();
    if !allowed.is_empty() && !allowed.contains(&reported) {
        return Err(refuse(format!(
            "bucket `{bucket}` is in cloud region `{reported}`, outside region `{region_name}`'s jurisdiction (cloud_regions: {})",
            allowed.join(", ")
        )));
    }
    info!(%bucket, cloud_region = %reported, "object store is in the region's jurisdiction");
    Ok(())
}

/// `HEAD <endpoint>/<bucket>` and its `x-amz-bucket-region` header (sent
/// by AWS and S3-compatible servers whatever the status, so no signature
/// is needed to learn it).
async fn ask_endpoint(endpoint: &str, bucket: &str, allow_http: bool) -> Result<String, String> {
    if endpoint.starts_with("http://") && !allow_http {
        return Err("the endpoint is plain HTTP and allow_http is not set".into());
    }
    let client = reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/{bucket}", endpoint.trim_end_matches('/'));
    let response = client
        .head(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(format!("{url}: the bucket does not exist"));
    }
    response
        .headers()
        .get("x-amz-bucket-region")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "{url} answered {} without an x-amz-bucket-region header",
                response.status()
            )
        })
}
