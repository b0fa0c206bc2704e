//! `node.metrics_listen`: the node's counters over plain HTTP in the
//! Prometheus text format (`GET /metrics`). Bind it to a loopback or
//! management address: it carries no secrets, but it is not authenticated.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use juris_proxy_pg::ProxyMetrics;
use juris_proxy_pg::metrics::{write_counter, write_gauge};
use juris_record::Spool;
use juris_record::uploader::UploaderMonitor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What the metrics page reads.
pub(crate) struct Sources {
    pub proxy: Arc<ProxyMetrics>,
    pub spool: Option<Arc<Spool>>,
    pub uploads: Option<UploaderMonitor>,
}

impl Sources {
    fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.proxy.render(&mut out);
        if let Some(spool) = &self.spool {
            write_gauge(
                &mut out,
                "juris_recording_spool_bytes",
                "Bytes of recordings in the local spool not yet uploaded (quarantined files included).",
                spool.used_bytes(),
            );
        }
        if let Some(uploads) = &self.uploads {
            let stats = uploads.stats();
            write_gauge(
                &mut out,
                "juris_recording_upload_pending_files",
                "Recording chunks and manifests in the spool waiting for upload (not quarantined), after the last pass.",
                stats.pending,
            );
            write_gauge(
                &mut out,
                "juris_recording_quarantined_files",
                "Recording files that kept failing to upload, kept in the spool's quarantine and retried.",
                stats.quarantined,
            );
            write_counter(
                &mut out,
                "juris_recording_uploaded_files_total",
                "Recording chunks and manifests stored in the region's object store.",
                stats.uploaded,
            );
            write_counter(
                &mut out,
                "juris_recording_upload_failures_total",
                "Failed attempts to upload a recording file.",
                stats.failures,
            );
        }
        out
    }
}

/// Serve `GET /metrics` until `stop`.
pub(crate) async fn serve(listener: TcpListener, sources: Arc<Sources>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sources = sources.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(respond(&request, &sources)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                served = connection => if let Err(e) = served {
                    debug!("metrics connection: {e}");
                },
            }
        });
    }
}

fn respond<B>(request: &Request<B>, sources: &Sources) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, sources.render()),
        _ => (
            StatusCode::NOT_FOUND,
            "not found; try GET /metrics\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
