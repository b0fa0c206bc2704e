//! A real S3 API on loopback for tests: s3s with the s3s-fs backend,
//! serving buckets as directories and checking SigV4 signatures against
//! one access key. It runs inside the test process; [`S3Server::stop`]
//! closes the listener and every open connection, so a client's pooled
//! keep-alive connections fail like they would against a server that went
//! away.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const ACCESS_KEY: &str = "juris-test-access";
pub const SECRET_KEY: &str = "juris-test-secret-0123456789";
/// The cloud region [`S3Server::start`] reports for its buckets.
pub const DEFAULT_REGION: &str = "us-east-1";

/// A running server.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Serve `root` on `addr` (`127.0.0.1:0` for an ephemeral port); each
    /// of `buckets` is created as a directory under `root` if missing.
    pub async fn start(
        root: &Path,
        addr: SocketAddr,
        buckets: &[&str],
    ) -> anyhow::Result<S3Server> {
        let in_regions: Vec<(&str, &str)> = buckets.iter().map(|b| (*b, DEFAULT_REGION)).collect();
        Self::start_in_regions(root, addr, &in_regions).await
    }

    /// Like [`Self::start`], with each bucket in a cloud region, which the
    /// server reports as AWS does: `HEAD /<bucket>` answers with an
    /// `x-amz-bucket-region` header (s3s-fs itself reports none).
    pub async fn start_in_regions(
        root: &Path,
        addr: SocketAddr,
        buckets: &[(&str, &str)],
    ) -> anyhow::Result<S3Server> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder;
        let mut regions = std::collections::HashMap::new();
        for (bucket, region) in buckets {
            std::fs::create_dir_all(root.join(bucket))?;
            regions.insert(format!("/{bucket}"), region.to_string());
        }
        let regions = std::sync::Arc::new(regions);
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| anyhow::anyhow!("s3s-fs on {}: {e:?}", root.display()))?;
        let service = {
            let mut builder = s3s::service::S3ServiceBuilder::new(fs);
            builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            builder.build()
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Dropped with the task: aborting it aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        let service = service.clone();
                        let regions = regions.clone();
                        let answer = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let region = (request.method() == hyper::Method::HEAD)
                                .then(|| regions.get(request.uri().path().trim_end_matches('/')))
                                .flatten()
                                .cloned();
                            let service = service.clone();
                            async move {
                                match region {
                                    Some(region) => {
                                        let mut response = hyper::Response::new(s3s::Body::empty());
                                        if let Ok(value) = hyper::header::HeaderValue::from_str(&region) {
                                            response.headers_mut().insert("x-amz-bucket-region", value);
                                        }
                                        Ok(response)
                                    }
                                    None => hyper::service::Service::call(&service, request).await,
                                }
                            }
                        });
                        connections.spawn(async move {
                            let _ = Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(socket), answer)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(S3Server {
            addr,
            root: root.to_path_buf(),
            task,
        })
    }

    /// The endpoint URL clients use.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop serving: the listener and all connections close.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
