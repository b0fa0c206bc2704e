//! The PostgreSQL data plane of a Juris node.
//!
//! One call to [`serve_connection`] owns one client TCP connection from the
//! first byte to close:
//!
//! 1. **Handshake** ([`session`]): SSLRequest or direct TLS (ALPN
//!    `postgresql`), StartupMessage, cleartext password = the caller's OIDC
//!    access token, validated by an [`Authenticator`]; the startup `database`
//!    names the connection; roles from the deployment decide the access level.
//!    Plaintext sessions are refused; CancelRequests are routed by key.
//! 2. **Upstream** ([`upstream`]): the gateway logs in to the real database
//!    with the connection's stored credential (SCRAM-SHA-256, md5, cleartext
//!    or trust, optionally over verify-full TLS). The client never sees it.
//! 3. **Relay** ([`relay`]): bytes flow both ways with bounded buffers and
//!    natural backpressure; only messages that carry SQL are decoded and
//!    classified. A statement beyond the role is replaced, in place, by one
//!    that makes the upstream fail at exactly that point, and the upstream's
//!    error is swapped for Juris's 42501 on the way back: ordering,
//!    pipelining and transaction state stay exactly PostgreSQL's.
//!
//! 4. **Masking** ([`masking`], [`catalog`]): for connections with masking
//!    rules, DataRows, COPY rows, errors, notices and notifications are
//!    masked before they reach a client who is not exempt; what was masked
//!    is reported per statement to an [`AuditSink`].
//!
//! 5. **Recording** ([`recording`]): every message the client sent and,
//!    after masking, every message it received goes to the session's
//!    recording (`juris-record`); a `strict` connection's session that
//!    cannot be recorded is refused or ended.
//!
//! 6. **Handover** ([`handover`]): a session whose TLS server name names
//!    another region's connection is never decrypted here; it is passed,
//!    still encrypted, to a node of the owning region, which serves it.
//!
//! This crate knows nothing about where tokens, roles or credentials come
//! from: the node assembles a [`ProxyContext`].

pub mod cancel;
pub mod catalog;
pub mod forwarders;
pub mod handover;
mod io;
pub mod masking;
pub mod metrics;
pub mod recording;
pub mod relay;
pub mod session;
mod statements;
pub mod transport;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use juris_config::Deployment;
use juris_mask::Masker;
use juris_pgwire::Limits;
use juris_types::Principal;
use juris_types::audit::MaskingEvent;
use tokio_rustls::TlsAcceptor;

pub use cancel::{CancelRegistry, KeyOrigin};
pub use forwarders::Forwarders;
pub use handover::HandoverLinks;
pub use metrics::ProxyMetrics;
pub use session::serve_connection;
pub use upstream::UpstreamTarget;

/// Validates the token a client presents as its password.
pub trait Authenticator: Send + Sync {
    /// `Err` carries a reason that is safe to show the client (never the token).
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, String>> + Send + 'a>>;
}

/// A grant that lets a principal hold a `jit` role on a connection now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveGrant {
    /// As users type it, e.g. `g-7`.
    pub id: String,
    /// Unix milliseconds at which the grant ends unless revoked earlier.
    pub expires_at_ms: u64,
}

/// What the control plane says about one principal, role and connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantLookup {
    Active(ActiveGrant),
    /// No grant is active (none requested, not yet approved, expired, revoked).
    NoGrant,
    /// This node cannot vouch for grants now (no leader for longer than the
    /// lease bound, no control plane configured); the reason is for the client.
    Unavailable(String),
}

/// The region's just-in-time grants, as this node's applied state has them.
/// Answers come from local state: no network round trip per session.
pub trait GrantAuthority: Send + Sync {
    /// The grant through which `principal` may hold `role` on `connection`.
    fn lookup(&self, principal: &Principal, connection: &str, role: &str) -> GrantLookup;
    /// Resolves, with the text of a FATAL for the client, once `grant`
    /// stops being active (expiry or revocation).
    fn ended(&self, grant: &ActiveGrant) -> Pin<Box<dyn Future<Output = String> + Send>>;
}

/// A statement a connection's review rule holds until reviewers decide.
#[derive(Debug, Clone)]
pub struct HeldStatement {
    pub principal: Principal,
    pub connection: String,
    pub session: juris_types::SessionId,
    /// The full text the client sent (every statement of the message).
    pub statement: String,
    /// `pg_query` fingerprint of that text: an approval is for this shape.
    pub fingerprint: String,
    pub class: juris_types::StatementClass,
}

/// How a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Approved (now, or earlier within the approval window): run it once.
    Run { approval: String },
    /// Not run: denied, not decided in time, or review unavailable.
    Refused {
        sqlstate: &'static str,
        message: String,
    },
}

/// The region's command review, as the data plane uses it.
pub trait CommandReview: Send + Sync {
    /// Uses an approval the same principal already has for the same
    /// fingerprint, or files an approval request for `held` under the
    /// connection's rule and resolves once it is decided or the rule's hold
    /// time has passed. `notify` gets a line for the client as soon as the
    /// request exists (its id, and who may approve it).
    fn hold(
        &self,
        held: HeldStatement,
        notify: Box<dyn FnOnce(String) + Send>,
    ) -> Pin<Box<dyn Future<Output = HoldOutcome> + Send>>;
}

/// Where the data plane reports audit facts. The evidence layer persists
/// them; [`LogAuditSink`] writes them to the node's log.
pub trait AuditSink: Send + Sync {
    /// What masking did to one statement's output.
    fn masking(&self, event: &MaskingEvent);
    /// Any other fact: session start and end, authentication, refusals.
    fn record(&self, event: juris_audit::AuditEvent);
}

/// Audit facts as structured log lines (target `juris::audit`).
#[derive(Debug, Default)]
pub struct LogAuditSink;

impl AuditSink for LogAuditSink {
    fn masking(&self, event: &MaskingEvent) {
        let actions = event
            .actions
            .iter()
            .map(|a| format!("{} {} {}×{}", a.column, a.detector, a.strategy, a.count))
            .collect::<Vec<_>>()
            .join("; ");
        tracing::info!(
            target: "juris::audit",
            event = "masking",
            session = %event.session,
            principal = %event.principal,
            connection = %event.connection,
            statement = event.statement,
            %actions,
            "masked statement output"
        );
    }

    // The session's own log lines already say these; nothing to add.
    fn record(&self, _event: juris_audit::AuditEvent) {}
}

/// A connection's compiled masking policy and its catalog cache.
pub struct ConnectionMasking {
    pub masker: Arc<Masker>,
    pub catalog: Arc<catalog::Catalog>,
}

impl ConnectionMasking {
    /// `catalog_ttl`: how long column origins are trusted (see [`catalog`]).
    pub fn new(
        masker: Masker,
        target: Arc<UpstreamTarget>,
        limits: Limits,
        catalog_ttl: Duration,
    ) -> Self {
        ConnectionMasking {
            masker: Arc::new(masker),
            catalog: Arc::new(catalog::Catalog::new(target, limits, catalog_ttl)),
        }
    }
}

/// The node's live sessions: registered once a session is admitted,
/// removed when it ends (whatever way it ends: the guard's drop).
#[derive(Debug, Default)]
pub struct LiveSessions {
    sessions: std::sync::Mutex<HashMap<juris_types::SessionId, juris_types::LiveSession>>,
}

impl LiveSessions {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<juris_types::SessionId, juris_types::LiveSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every live session, oldest first.
    pub fn snapshot(&self) -> Vec<juris_types::LiveSession> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|s| (s.started_ms, s.session.0));
        all
    }

    pub(crate) fn register(self: &Arc<Self>, session: juris_types::LiveSession) -> LiveGuard {
        let id = session.session;
        self.lock().insert(id, session);
        LiveGuard {
            registry: self.clone(),
            id,
        }
    }
}

/// Keeps a session listed while it lives.
#[derive(Debug)]
pub struct LiveGuard {
    registry: Arc<LiveSessions>,
    id: juris_types::SessionId,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// Knobs of the data plane.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Time a client has for TLS, startup and authentication.
    pub auth_timeout: Duration,
    /// Time the upstream has to accept and authenticate the gateway.
    pub upstream_connect_timeout: Duration,
    /// Message size bound once a session is authenticated.
    pub limits: Limits,
}

/// Before authentication nobody gets to make the gateway buffer much.
pub(crate) const PRE_AUTH_LIMITS: Limits = Limits {
    max_message_len: 64 * 1024,
    max_startup_len: 10_000,
};

/// Everything a session needs, shared by all sessions of a node.
pub struct ProxyContext {
    pub deployment: Arc<Deployment>,
    /// Resolved upstreams by connection name.
    pub targets: HashMap<String, Arc<UpstreamTarget>>,
    pub tls: TlsAcceptor,
    pub authenticator: Arc<dyn Authenticator>,
    pub cancels: CancelRegistry,
    pub settings: ProxySettings,
    /// Masking by connection name; absent for connections without rules.
    pub masking: HashMap<String, ConnectionMasking>,
    pub audit: Arc<dyn AuditSink>,
    /// Grants for `jit` roles; `None` when the node has no control plane.
    pub grants: Option<Arc<dyn GrantAuthority>>,
    /// Command review by connection name; absent for connections without it.
    pub reviews: HashMap<String, juris_policy::ReviewPolicy>,
    /// Where held statements go for review; `None` without a control plane
    /// (a connection with review then refuses what it would hold).
    pub command_review: Option<Arc<dyn CommandReview>>,
    /// Sessions open through this node now.
    pub live: Arc<LiveSessions>,
    /// The node's recording spool. `None` only where nothing is recorded
    /// (a node without a data directory): then `strict` connections
    /// refuse every session.
    pub recordings: Option<Arc<juris_record::Spool>>,
    /// Links to nodes of other regions, for sessions of their connections;
    /// `None` when `node.relay` is not configured.
    pub handover: Option<HandoverLinks>,
    /// Counters served at `node.metrics_listen`.
    pub metrics: Arc<ProxyMetrics>,
}
