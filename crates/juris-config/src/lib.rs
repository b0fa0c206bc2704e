//! The deployment file: node identity, listeners, TLS, identity provider,
//! regions, connections and roles.
//!
//! Config is data: [`Deployment::from_toml`] parses, [`Deployment::validate`]
//! checks cross references and returns *every* problem at once, each naming
//! the file, the key and the reason. Secrets are never inline: upstream
//! credentials are references ([`SecretRef`]) resolved by the node at start.
//! This crate does no I/O except [`SecretRef::resolve`] and [`Deployment::load`].

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use juris_mask::{MaskError, Masker, MaskingPolicy};
use juris_types::AccessLevel;
pub use juris_types::ReviewedStatement;
use serde::{Deserialize, Serialize};

/// One problem found in a deployment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `connections[1].upstream.port`.
    pub key: String,
    /// What is wrong, in plain words.
    pub reason: String,
}

/// Everything that can go wrong loading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: invalid configuration:\n{}", render_problems(.problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
    #[error("{key}: {reason}")]
    Secret { key: String, reason: String },
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {}: {}", p.key, p.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole deployment as one node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub node: NodeConfig,
    pub identity: IdentityConfig,
    #[serde(default, rename = "region")]
    pub regions: Vec<RegionConfig>,
    #[serde(default, rename = "connection")]
    pub connections: Vec<ConnectionConfig>,
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleConfig>,
    /// How clients name connections across regions (SNI routing).
    #[serde(default)]
    pub directory: Option<DirectoryConfig>,
}

/// The directory shared by every region: how a client names a connection
/// in the TLS handshake, so that any node can tell, before decrypting
/// anything, which region owns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Clients reach connection `C` as `C.<domain>` (the TLS SNI), e.g.
    /// `billing-eu.db.example.com` for `domain = "db.example.com"`. Each
    /// region's server certificate covers only its own connections' names.
    pub domain: String,
}

impl DirectoryConfig {
    /// The connection a TLS server name asks for: `C` of `C.<domain>`
    /// (ASCII case-insensitive); `None` for any other name.
    pub fn connection_of<'a>(&self, server_name: &'a str) -> Option<&'a str> {
        let split = server_name.len().checked_sub(self.domain.len() + 1)?;
        let (label, rest) = server_name.split_at_checked(split)?;
        let domain = rest.strip_prefix('.')?;
        (domain.eq_ignore_ascii_case(&self.domain) && !label.is_empty() && !label.contains('.'))
            .then_some(label)
    }
}

/// Where this node takes sessions relayed by nodes of other regions, and
/// the certificates of that mutual-TLS link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Listener for relayed sessions, e.g. `10.0.0.5:7601`.
    pub listen: String,
    /// This node's entry in its region's `relay` list, when that is not
    /// `listen` (e.g. `listen = "0.0.0.0:7601"`, listed as
    /// `"10.0.1.5:7601"`). Other nodes pass cancel requests for this
    /// node's sessions to it there.
    #[serde(default)]
    pub advertise: Option<String>,
    /// This node's relay certificate (its SAN must include
    /// `<region>.relay.juris`, which is what a relaying node verifies), its
    /// key, and the CA that signs the relay certificates of every region.
    pub tls: PeerTlsConfig,
    /// Milliseconds to wait for a node of the owning region to accept a
    /// relayed session before trying the next one.
    #[serde(default = "defaults::relay_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Threads that forward the sessions this node hands over (each runs
    /// its own event loop); `None`: one per four CPUs, at least one.
    #[serde(default)]
    pub forward_threads: Option<usize>,
}

/// Most threads `node.relay.forward_threads` may ask for.
pub const MAX_FORWARD_THREADS: usize = 256;

/// The name a relay certificate of `region` carries, and which a relaying
/// node verifies: a node of another region cannot stand in for it.
pub fn relay_server_name(region: &str) -> String {
    format!("{region}.relay.juris")
}

/// This node: who it is, where it listens, how it treats clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable node id, unique in its region.
    pub id: String,
    /// The region this node belongs to (must be declared under `[[region]]`).
    pub region: String,
    /// PostgreSQL listener address, e.g. `0.0.0.0:5432` or `127.0.0.1:0`.
    pub listen: String,
    /// Server certificate and key the gateway terminates client TLS with.
    pub tls: ServerTlsConfig,
    /// Seconds a client has to complete TLS, startup and authentication.
    #[serde(default = "defaults::auth_timeout_secs")]
    pub auth_timeout_secs: u64,
    /// Seconds to wait for an upstream to accept and authenticate.
    #[serde(default = "defaults::upstream_connect_timeout_secs")]
    pub upstream_connect_timeout_secs: u64,
    /// Seconds sessions may continue after SIGTERM before they are ended.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Largest protocol message accepted from an authenticated peer, in bytes.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// Milliseconds the masking catalog trusts what it learnt about a
    /// relation's columns; bounds how long a schema change made outside
    /// this node (a direct migration) can go unseen. 0 asks every time.
    #[serde(default = "defaults::masking_catalog_ttl_ms")]
    pub masking_catalog_ttl_ms: u64,
    /// Where the node keeps its state: the audit chain (`audit/`) and its
    /// signing key (`node.key`). Without it, audit facts only go to the log.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Membership in the region's Raft group (the control plane: JIT grants,
    /// command approvals). Without it the node runs alone: standing roles
    /// work, roles with `access = "jit"` are refused with a clear message.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// The local recording spool (`data_dir/spool`): how much disk it may
    /// use before `strict` sessions are refused.
    #[serde(default)]
    pub recording: RecordingSpoolConfig,
    /// The node's audit chain.
    #[serde(default)]
    pub audit: AuditChainConfig,
    /// How many nice levels (0–19; nice 19 at most) below the node the
    /// threads that write evidence run: the audit chain's writer, the
    /// recording spool's writer and the uploads to the region's store. Their work is batched and waits anyway (a 5 ms
    /// group commit, a 100 ms sync, uploads in the background), so
    /// on busy cores they give way to the sessions instead of preempting
    /// them; the scheduler still gives them their share, so they never
    /// stop. 0 runs them like every other thread.
    #[serde(default = "defaults::evidence_nice")]
    pub evidence_nice: i32,
    /// Sessions relayed between regions (required when the deployment has
    /// connections in more than one region and a `[directory]`).
    #[serde(default)]
    pub relay: Option<RelayConfig>,
    /// Plain-HTTP listener for Prometheus metrics (`GET /metrics`), e.g.
    /// `127.0.0.1:9464`. Off when absent.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

/// How the node's audit chain is sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditChainConfig {
    /// Seal the open segment at least this often (if it has records), so
    /// that recent records reach the region's store and audit bundles
    /// without waiting for the segment to fill.
    #[serde(default = "defaults::seal_every", with = "duration_text")]
    pub seal_every: std::time::Duration,
}

impl Default for AuditChainConfig {
    fn default() -> Self {
        AuditChainConfig {
            seal_every: defaults::seal_every(),
        }
    }
}

/// Limits of the node's recording spool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSpoolConfig {
    /// Bytes of unsent recording data the spool may hold (events not yet
    /// sealed, chunks not yet uploaded). When it is full, `strict`
    /// sessions are refused or ended and `best_effort` sessions lose
    /// events (and say so).
    #[serde(default = "defaults::spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Failed uploads of a file before it is quarantined (moved aside,
    /// counted, shown by `juris sessions list`, and still retried).
    #[serde(default = "defaults::upload_attempts")]
    pub upload_attempts: u32,
    /// Longest wait between two upload attempts of a file (the wait
    /// doubles from 0.5 s up to this).
    #[serde(default = "defaults::upload_max_backoff", with = "duration_text")]
    pub upload_max_backoff: std::time::Duration,
    /// How often quarantined files are tried again.
    #[serde(default = "defaults::quarantine_retry", with = "duration_text")]
    pub quarantine_retry: std::time::Duration,
}

impl Default for RecordingSpoolConfig {
    fn default() -> Self {
        RecordingSpoolConfig {
            spool_max_bytes: defaults::spool_max_bytes(),
            upload_attempts: defaults::upload_attempts(),
            upload_max_backoff: defaults::upload_max_backoff(),
            quarantine_retry: defaults::quarantine_retry(),
        }
    }
}

/// This node's place in its region's control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Raft id, unique within the region, at least 1.
    pub raft_id: u64,
    /// Node-to-node Raft transport (mutual TLS), e.g. `10.0.0.5:7401`.
    pub listen: String,
    /// Address peers dial; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Control API for the CLI (TLS with `node.tls`, the caller's OIDC token).
    pub control_listen: String,
    /// The group's initial voters. The member with the lowest id
    /// initializes the group once; later changes go through
    /// `juris cluster add-learner` / `change-membership`.
    #[serde(default, rename = "member")]
    pub members: Vec<ClusterMember>,
    /// Certificates for the node-to-node transport: this node's certificate
    /// and key, and the CA that signs every node of the region.
    pub tls: PeerTlsConfig,
    /// IdP groups allowed to manage membership through the control API.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// How long a node may go without hearing from a leader before it
    /// refuses new sessions that depend on grants, and approvals.
    #[serde(default = "defaults::lease_bound", with = "duration_text")]
    pub lease_bound: std::time::Duration,
    /// Log entries between snapshots of the region's state; a tenth of
    /// them stay in the log after each snapshot, so a node further behind
    /// (or a new learner) is sent the snapshot.
    #[serde(default = "defaults::snapshot_every")]
    pub snapshot_every: u64,
}

/// One initial voter of the region's Raft group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMember {
    pub id: u64,
    /// Its Raft transport address (`host:port`).
    pub address: String,
    /// Its control API address (`host:port`), so the CLI and followers can
    /// name the leader's endpoint.
    #[serde(default)]
    pub control: Option<String>,
}

/// PEM files for mutual TLS between the nodes of a region.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// PEM files for a TLS server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The company identity provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Issuer URL exactly as the IdP's discovery document states it.
    pub issuer: String,
    /// Audience the access tokens must carry (resource indicator).
    pub audience: String,
    /// Claim that holds the principal's groups.
    #[serde(default = "defaults::groups_claim")]
    pub groups_claim: String,
    /// Allowed JWS algorithms.
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "defaults::leeway_secs")]
    pub leeway_secs: u64,
    /// Minimum seconds between two JWKS refreshes triggered by unknown key ids.
    #[serde(default = "defaults::jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
}

/// A jurisdiction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub name: String,
    /// Key for the `hash` masking strategy (HMAC-SHA-256). One per region,
    /// so tokens are stable inside a jurisdiction and useless outside it.
    #[serde(default)]
    pub mask_hash_key: Option<SecretRef>,
    /// The region's object store: recordings and sealed audit segments of
    /// its connections are written here and nowhere else.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// The cloud regions this jurisdiction allows evidence to be stored in
    /// (e.g. `["eu-west-1", "eu-central-1"]`); an S3 store in any other
    /// cloud region is refused. Empty: not constrained (single-region
    /// deployments, local stores).
    #[serde(default)]
    pub cloud_regions: Vec<String>,
    /// Where clients reach this region's nodes (`host:port`), named to a
    /// client that asked a node of another region for one of this
    /// region's connections.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Relay listeners of this region's nodes (`host:port`, their
    /// `node.relay.listen`): where a node of another region hands over,
    /// still encrypted, a session for one of this region's connections.
    #[serde(default)]
    pub relay: Vec<String>,
    /// Control APIs of this region's nodes (`host:port`, their
    /// `node.cluster.control_listen`): where the CLI sends access requests,
    /// reviews and approvals for this region's connections.
    #[serde(default)]
    pub control: Vec<String>,
}

/// A region's object store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// A directory on the node's file system, explicitly assigned to the
    /// region (the demo, single-node deployments, tests).
    Local { path: PathBuf },
    /// An S3-compatible bucket.
    S3 {
        bucket: String,
        /// The bucket's cloud region, e.g. `eu-west-1`.
        region: String,
        /// Endpoint URL for S3-compatible servers; AWS when absent.
        #[serde(default)]
        endpoint: Option<String>,
        /// Credentials; the environment's AWS credential chain when absent.
        #[serde(default)]
        access_key_id: Option<SecretRef>,
        #[serde(default)]
        secret_access_key: Option<SecretRef>,
        /// Allow a plain-HTTP endpoint (loopback test servers only).
        #[serde(default)]
        allow_http: bool,
    },
}

/// What happens to a session that cannot be recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingMode {
    /// The session is refused, or ended with a FATAL, when its recording
    /// cannot be written (spool full, disk error).
    #[default]
    Strict,
    /// The session continues; the recording marks the gap and an audit
    /// event says what was lost.
    BestEffort,
    /// Sessions are not recorded (the audit trail still has every
    /// statement). For connections whose sessions need no replay.
    Off,
}

/// The kinds of target Juris fronts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    Postgres,
}

/// A named target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// What clients put in `dbname`.
    pub name: String,
    pub kind: ConnectionKind,
    /// Owning region.
    pub region: String,
    pub upstream: UpstreamConfig,
    /// What is masked in results, and who may see cleartext.
    #[serde(default)]
    pub masking: MaskingPolicy,
    /// Statements that are held until reviewers approve them (needs the
    /// region's control plane, `[node.cluster]`).
    #[serde(default)]
    pub approvals: Option<CommandApprovalConfig>,
    /// `strict` (default), `best_effort` or `off`: see [`RecordingMode`].
    #[serde(default)]
    pub recording: RecordingMode,
    /// One audit record per statement (default `true`). `false` keeps the
    /// session's start and end, authentication, refusals, masking actions
    /// and recording losses in the audit trail, but not each statement: for a
    /// connection whose statements are not evidence (a load test's, a
    /// bulk reader's), and to measure what the statement audit costs.
    #[serde(default = "defaults::audit_statements")]
    pub audit_statements: bool,
}

/// Command review of one connection: which statements are held, who
/// reviews them, how long the session waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandApprovalConfig {
    /// IdP groups whose members may approve or deny (never the requester).
    pub reviewers: Vec<String>,
    /// Approvals needed before the statement runs.
    #[serde(default = "defaults::approvals")]
    pub approvals: u32,
    /// Statement kinds that need review. The default covers what is hard
    /// to undo: `drop`, `truncate`, `alter`, `unqualified_write` (DELETE or
    /// UPDATE without WHERE) and `privileges` (GRANT, REVOKE, role changes).
    #[serde(default = "defaults::reviewed_statements")]
    pub statements: Vec<ReviewedStatement>,
    /// Regular expressions matched against each statement's text; a match
    /// is held too (e.g. `"(?i)^\\s*vacuum\\s+full"`).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// How long the session waits for a decision before the statement
    /// fails with the request id; approval afterwards lets the same
    /// statement run once within `window`.
    #[serde(default = "defaults::approval_hold", with = "duration_text")]
    pub hold: std::time::Duration,
    /// How long after approval the identical statement may still be run
    /// once by the requester (when the hold ended first).
    #[serde(default = "defaults::approval_window", with = "duration_text")]
    pub window: std::time::Duration,
}

/// Where and how the gateway reaches the real database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Reference to the password; absent for `trust` upstreams.
    #[serde(default)]
    pub password: Option<SecretRef>,
    #[serde(default)]
    pub tls: UpstreamTlsConfig,
}

/// TLS towards the upstream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// CA bundle that signs the upstream's certificate (required for verify-full).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify; defaults to `upstream.host`.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Upstream TLS policy. There is deliberately no "prefer": it silently downgrades.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    #[default]
    Disable,
    VerifyFull,
}

/// Where a secret lives. Exactly one of the fields is set.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// The table form of a [`SecretRef`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRefTable {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reference like { env = \"VAR\" } or { file = \"/path\" }")
            }
            // Deliberately does not echo the value: it is probably the secret.
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "secrets are never inline: use { env = \"VAR\" } or { file = \"/path\" }",
                ))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretRef, A::Error> {
                let t =
                    SecretRefTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    env: t.env,
                    file: t.file,
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env, &self.file) {
            (Some(var), _) => write!(f, "SecretRef(env {var})"),
            (_, Some(path)) => write!(f, "SecretRef(file {})", path.display()),
            _ => f.write_str("SecretRef(unset)"),
        }
    }
}

impl SecretRef {
    /// Read the secret. `key` names the config key for the error message.
    /// A file's trailing newline is dropped.
    pub fn resolve(&self, key: &str) -> Result<String, ConfigError> {
        let fail = |reason: String| ConfigError::Secret {
            key: key.to_string(),
            reason,
        };
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| fail(format!("environment variable {var} is not set"))),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| fail(format!("cannot read {}: {e}", path.display()))),
            _ => Err(fail("set exactly one of `env` or `file`".into())),
        }
    }
}

/// Binds IdP groups to an access level on connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    /// IdP groups whose members hold this role.
    pub groups: Vec<String>,
    /// Connection names, or `"*"` for all.
    pub connections: Vec<String>,
    pub level: AccessLevel,
    /// `standing` (default): the groups hold the role whenever they connect.
    /// `jit`: the groups may *request* the role; they hold it only while a
    /// grant approved by reviewers is active.
    #[serde(default)]
    pub access: RoleAccess,
    /// Who reviews requests for a `jit` role, and the bounds of a grant.
    #[serde(default)]
    pub review: Option<AccessReviewConfig>,
}

/// How a role is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleAccess {
    #[default]
    Standing,
    Jit,
}

/// Review rule of a `jit` role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessReviewConfig {
    /// IdP groups whose members may approve or deny (never the requester).
    pub reviewers: Vec<String>,
    /// Approvals needed before the grant exists.
    #[serde(default = "defaults::approvals")]
    pub approvals: u32,
    /// Longest grant a request may ask for, e.g. `"8h"`.
    #[serde(default = "defaults::max_grant", with = "duration_text")]
    pub max_duration: std::time::Duration,
    /// How long a request waits for reviews before it expires.
    #[serde(default = "defaults::request_ttl", with = "duration_text")]
    pub request_ttl: std::time::Duration,
}

impl RoleConfig {
    /// Whether a principal in `groups` is eligible for this role on `connection`.
    pub fn applies_to(&self, groups: &[String], connection: &str) -> bool {
        self.covers(connection) && self.groups.iter().any(|g| groups.contains(g))
    }

    fn covers(&self, connection: &str) -> bool {
        self.connections.iter().any(|c| c == "*" || c == connection)
    }
}

/// The role through which a principal reaches a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveRole {
    pub role: String,
    pub level: AccessLevel,
}

/// Durations written the way people say them: `"90s"`, `"15m"`, `"8h"`, `"1h 30m"`.
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like \"90s\", \"15m\" or \"8h\" ({e})"
            ))
        })
    }
}

/// Default values of optional keys (for programs that build a deployment
/// in code, like the demo).
pub mod defaults {
    pub fn audit_statements() -> bool {
        true
    }
    pub fn auth_timeout_secs() -> u64 {
        30
    }
    pub fn upstream_connect_timeout_secs() -> u64 {
        10
    }
    pub fn shutdown_grace_secs() -> u64 {
        30
    }
    pub fn max_message_bytes() -> usize {
        256 * 1024 * 1024
    }
    pub fn masking_catalog_ttl_ms() -> u64 {
        1000
    }
    pub fn groups_claim() -> String {
        "groups".into()
    }
    pub fn algorithms() -> Vec<String> {
        vec!["RS256".into(), "ES256".into()]
    }
    pub fn snapshot_every() -> u64 {
        10_000
    }
    pub fn lease_bound() -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }
    pub fn approvals() -> u32 {
        1
    }
    pub fn max_grant() -> std::time::Duration {
        std::time::Duration::from_secs(8 * 3600)
    }
    pub fn reviewed_statements() -> Vec<super::ReviewedStatement> {
        use super::ReviewedStatement::*;
        vec![Drop, Truncate, Alter, UnqualifiedWrite, Privileges]
    }
    pub fn approval_hold() -> std::time::Duration {
        std::time::Duration::from_secs(120)
    }
    pub fn approval_window() -> std::time::Duration {
        std::time::Duration::from_secs(15 * 60)
    }
    pub fn request_ttl() -> std::time::Duration {
        std::time::Duration::from_secs(24 * 3600)
    }
    pub fn leeway_secs() -> u64 {
        30
    }
    pub fn jwks_refresh_secs() -> u64 {
        60
    }
    pub fn spool_max_bytes() -> u64 {
        1 << 30
    }
    pub fn upload_attempts() -> u32 {
        8
    }
    pub fn upload_max_backoff() -> std::time::Duration {
        std::time::Duration::from_secs(60)
    }
    pub fn relay_connect_timeout_ms() -> u64 {
        3000
    }
    pub fn evidence_nice() -> i32 {
        10
    }
    pub fn seal_every() -> std::time::Duration {
        std::time::Duration::from_secs(300)
    }
    pub fn quarantine_retry() -> std::time::Duration {
        std::time::Duration::from_secs(600)
    }
}

/// Algorithms a deployment may allow. Symmetric (HS*) algorithms are excluded:
/// a shared secret with the IdP would let anyone holding it mint tokens.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl Deployment {
    /// The region named `name`.
    pub fn region(&self, name: &str) -> Option<&RegionConfig> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// How a client reaches `connection` directly in its own region: the
    /// region's client endpoint (if declared) and the TLS server name
    /// (`<connection>.<domain>` with a `[directory]`).
    pub fn route_to(&self, connection: &str) -> Option<(&RegionConfig, Option<String>)> {
        let owner = self.connection(connection)?;
        let region = self.region(&owner.region)?;
        let server_name = self
            .directory
            .as_ref()
            .map(|d| format!("{}.{}", owner.name, d.domain));
        Some((region, server_name))
    }

    /// The store of region `name`, with its config key (`region[1].store`)
    /// for error messages; `None` if the region or its store is missing.
    pub fn region_store(&self, name: &str) -> Option<(String, &StoreConfig)> {
        let (index, region) = self
            .regions
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == name)?;
        Some((format!("region[{index}].store"), region.store.as_ref()?))
    }

    /// Read, parse and validate a deployment file.
    pub fn load(path: &Path) -> Result<Deployment, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let deployment = Deployment::from_toml(&file, &text)?;
        deployment.validate(&file)?;
        Ok(deployment)
    }

    /// Parse TOML text; `file` only labels errors.
    pub fn from_toml(file: &str, text: &str) -> Result<Deployment, ConfigError> {
        // The error is rebuilt from message and position on purpose: toml's
        // default rendering quotes the offending source line, which could
        // carry a secret someone pasted inline.
        toml::from_str(text).map_err(|e| {
            let position = e
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: ")
                })
                .unwrap_or_default();
            ConfigError::Parse {
                file: file.to_string(),
                message: format!("{position}{}", e.message().trim_end()),
            }
        })
    }

    /// Check cross references and values; report every problem found.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                file: file.to_string(),
                problems,
            })
        }
    }

    /// `[directory]`, `node.relay`, `node.metrics_listen` and the regions'
    /// relay endpoints.
    fn routing_problems(&self, problem: &mut impl FnMut(String, String)) {
        if let Some(listen) = &self.node.metrics_listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            problem(
                "node.metrics_listen".into(),
                format!("`{listen}` is not an address like 127.0.0.1:9464"),
            );
        }
        if let Some(relay) = &self.node.relay {
            if relay.listen.parse::<std::net::SocketAddr>().is_err() {
                problem(
                    "node.relay.listen".into(),
                    format!("`{}` is not an address like 0.0.0.0:7601", relay.listen),
                );
            }
            if relay.connect_timeout_ms == 0 {
                problem(
                    "node.relay.connect_timeout_ms".into(),
                    "must be at least 1".into(),
                );
            }
            if relay
                .forward_threads
                .is_some_and(|n| !(1..=MAX_FORWARD_THREADS).contains(&n))
            {
                problem(
                    "node.relay.forward_threads".into(),
                    format!("must be between 1 and {MAX_FORWARD_THREADS}"),
                );
            }
            if let Some(advertise) = &relay.advertise {
                let listed = self
                    .region(&self.node.region)
                    .is_some_and(|r| r.relay.contains(advertise));
                if !listed {
                    problem(
                        "node.relay.advertise".into(),
                        format!(
                            "`{advertise}` is not in the relay list of this node's region `{}`",
                            self.node.region
                        ),
                    );
                }
            }
        }
        for (i, r) in self.regions.iter().enumerate() {
            let endpoints = r
                .relay
                .iter()
                .enumerate()
                .map(|(j, e)| (format!("region[{i}].relay[{j}]"), e))
                .chain(
                    r.control
                        .iter()
                        .enumerate()
                        .map(|(j, e)| (format!("region[{i}].control[{j}]"), e)),
                )
                .chain(
                    r.endpoint
                        .iter()
                        .map(|e| (format!("region[{i}].endpoint"), e)),
                );
            for (key, endpoint) in endpoints {
                if !is_host_port(endpoint) {
                    problem(key, format!("`{endpoint}` is not a host:port"));
                }
            }
        }
        let Some(directory) = &self.directory else {
            return;
        };
        if !is_dns_name(&directory.domain) {
            problem(
                "directory.domain".into(),
                format!(
                    "`{}` is not a DNS name like db.example.com (lower-case labels of a-z, 0-9 and '-')",
                    directory.domain
                ),
            );
        }
        for (i, c) in self.connections.iter().enumerate() {
            if c.name.contains('_') {
                problem(
                    format!("connection[{i}].name"),
                    format!(
                        "`{}` cannot be a DNS label (`{}.{}`): use '-' instead of '_' when [directory] is set",
                        c.name, c.name, directory.domain
                    ),
                );
            }
        }
        let owning: HashSet<&str> = self.connections.iter().map(|c| c.region.as_str()).collect();
        if owning.len() < 2 {
            return;
        }
        if self.node.relay.is_none() {
            problem(
                "node.relay".into(),
                "required when connections belong to more than one region: nodes hand each other's sessions over on it, over mutual TLS".into(),
            );
        }
        for (i, r) in self.regions.iter().enumerate() {
            if r.name != self.node.region && owning.contains(r.name.as_str()) && r.relay.is_empty()
            {
                problem(
                    format!("region[{i}].relay"),
                    format!(
                        "required: region `{}` owns connections, so nodes of other regions need its nodes' relay endpoints",
                        r.name
                    ),
                );
            }
        }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |key: String, reason: String| out.push(Problem { key, reason });

        if self.node.id.trim().is_empty() {
            problem("node.id".into(), "must not be empty".into());
        }
        if self.node.listen.parse::<std::net::SocketAddr>().is_err() {
            problem(
                "node.listen".into(),
                format!(
                    "`{}` is not an address like 127.0.0.1:5432",
                    self.node.listen
                ),
            );
        }
        if self.node.max_message_bytes < 1024 {
            problem(
                "node.max_message_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        let regions: HashSet<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        if !regions.contains(self.node.region.as_str()) {
            problem(
                "node.region".into(),
                format!(
                    "region `{}` is not declared under [[region]]",
                    self.node.region
                ),
            );
        }
        if url_scheme(&self.identity.issuer).is_none() {
            problem("identity.issuer".into(), "must be an http(s) URL".into());
        }
        if self.identity.audience.is_empty() {
            problem("identity.audience".into(), "must not be empty".into());
        }
        if self.identity.algorithms.is_empty() {
            problem(
                "identity.algorithms".into(),
                "must allow at least one algorithm".into(),
            );
        }
        for (i, alg) in self.identity.algorithms.iter().enumerate() {
            if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                problem(
                    format!("identity.algorithms[{i}]"),
                    format!(
                        "`{alg}` is not allowed; choose from {}",
                        SUPPORTED_ALGORITHMS.join(", ")
                    ),
                );
            }
        }

        if self.node.data_dir.is_none() {
            problem(
                "node.data_dir".into(),
                "required: the node spools session recordings and keeps its audit chain and signing key there".into(),
            );
        }
        if !(0..=19).contains(&self.node.evidence_nice) {
            problem(
                "node.evidence_nice".into(),
                format!(
                    "{} is not a nice value from 0 to 19 (a node may only lower its threads' priority)",
                    self.node.evidence_nice
                ),
            );
        }
        if self.node.audit.seal_every < std::time::Duration::from_secs(1) {
            problem("node.audit.seal_every".into(), "must be at least 1s".into());
        }
        if self.node.recording.upload_attempts == 0 {
            problem(
                "node.recording.upload_attempts".into(),
                "must be at least 1".into(),
            );
        }
        if self.node.recording.spool_max_bytes < 1 << 20 {
            problem(
                "node.recording.spool_max_bytes".into(),
                "must be at least 1048576 (1 MiB)".into(),
            );
        }
        for (i, r) in self.regions.iter().enumerate() {
            if let Some(secret) = &r.mask_hash_key
                && (secret.env.is_some() == secret.file.is_some())
            {
                problem(
                    format!("region[{i}].mask_hash_key"),
                    "set exactly one of `env` or `file` (secrets are never inline)".into(),
                );
            }
            match &r.store {
                None => problem(
                    format!("region[{i}].store"),
                    format!(
                        "required: region `{}` needs an object store for its recordings, e.g. store = {{ kind = \"s3\", bucket = \"…\", region = \"…\" }} or {{ kind = \"local\", path = \"…\" }}",
                        r.name
                    ),
                ),
                Some(StoreConfig::Local { path }) => {
                    if !path.is_absolute() {
                        problem(
                            format!("region[{i}].store.path"),
                            format!("`{}` must be an absolute path", path.display()),
                        );
                    }
                }
                Some(StoreConfig::S3 {
                    bucket,
                    region,
                    endpoint,
                    access_key_id,
                    secret_access_key,
                    ..
                }) => {
                    if !r.cloud_regions.is_empty() && !r.cloud_regions.contains(region) {
                        problem(
                            format!("region[{i}].store.region"),
                            format!(
                                "`{region}` is outside region `{}`'s jurisdiction (cloud_regions: {})",
                                r.name,
                                r.cloud_regions.join(", ")
                            ),
                        );
                    }
                    if bucket.trim().is_empty() {
                        problem(
                            format!("region[{i}].store.bucket"),
                            "must not be empty".into(),
                        );
                    }
                    if region.trim().is_empty() {
                        problem(
                            format!("region[{i}].store.region"),
                            "must name the bucket's cloud region, e.g. eu-west-1".into(),
                        );
                    }
                    if let Some(endpoint) = endpoint
                        && url_scheme(endpoint).is_none()
                    {
                        problem(
                            format!("region[{i}].store.endpoint"),
                            "must be an http(s) URL".into(),
                        );
                    }
                    if access_key_id.is_some() != secret_access_key.is_some() {
                        problem(
                            format!("region[{i}].store"),
                            "set both `access_key_id` and `secret_access_key`, or neither (the environment's credentials)".into(),
                        );
                    }
                    for (key, secret) in [
                        ("access_key_id", access_key_id),
                        ("secret_access_key", secret_access_key),
                    ] {
                        if let Some(secret) = secret
                            && (secret.env.is_some() == secret.file.is_some())
                        {
                            problem(
                                format!("region[{i}].store.{key}"),
                                "set exactly one of `env` or `file` (secrets are never inline)"
                                    .into(),
                            );
                        }
                    }
                }
            }
        }

        self.routing_problems(&mut problem);

        let mut seen = HashSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            let key = format!("connection[{i}]");
            if !is_valid_name(&c.name) {
                problem(
                    format!("{key}.name"),
                    format!(
                        "`{}` must be 1-63 characters of a-z, 0-9, '-' or '_'",
                        c.name
                    ),
                );
            }
            if !seen.insert(c.name.as_str()) {
                problem(
                    format!("{key}.name"),
                    format!("`{}` is declared twice", c.name),
                );
            }
            if !regions.contains(c.region.as_str()) {
                problem(
                    format!("{key}.region"),
                    format!("region `{}` is not declared under [[region]]", c.region),
                );
            }
            if c.upstream.port == 0 {
                problem(format!("{key}.upstream.port"), "must not be 0".into());
            }
            if let Some(secret) = &c.upstream.password
                && (secret.env.is_some() == secret.file.is_some())
            {
                problem(
                    format!("{key}.upstream.password"),
                    "set exactly one of `env` or `file` (secrets are never inline)".into(),
                );
            }
            let region_key = self
                .regions
                .iter()
                .find(|r| r.name == c.region)
                .and_then(|r| r.mask_hash_key.as_ref());
            // Compiled here with a stand-in key only to find problems; the
            // node compiles again with the resolved key.
            if let Err(MaskError::InvalidPolicy(found)) =
                Masker::compile(&c.masking, region_key.map(|_| &b"validation"[..]))
            {
                for p in found {
                    let reason = if p.key.ends_with("strategy")
                        && region_key.is_none()
                        && p.reason.contains("hash")
                    {
                        format!("{} (set mask_hash_key on region `{}`)", p.reason, c.region)
                    } else {
                        p.reason
                    };
                    problem(format!("{key}.masking.{}", p.key), reason);
                }
            }
            for (j, group) in c.masking.exempt_groups.iter().enumerate() {
                if group.trim().is_empty() {
                    problem(
                        format!("{key}.masking.exempt_groups[{j}]"),
                        "must not be empty".into(),
                    );
                }
            }
            if let Some(review) = &c.approvals {
                self.approval_problems(&key, review, &mut problem);
            }
            if c.upstream.tls.mode == UpstreamTlsMode::VerifyFull
                && c.upstream.tls.ca_file.is_none()
            {
                problem(
                    format!("{key}.upstream.tls.ca_file"),
                    "is required when mode = \"verify-full\"".into(),
                );
            }
        }
        self.cluster_problems(&mut problem);
        self.role_review_problems(&mut problem);
        for (i, r) in self.roles.iter().enumerate() {
            if r.groups.is_empty() {
                problem(
                    format!("role[{i}].groups"),
                    "must name at least one group".into(),
                );
            }
            for (j, c) in r.connections.iter().enumerate() {
                if c != "*" && !seen.contains(c.as_str()) {
                    problem(
                        format!("role[{i}].connections[{j}]"),
                        format!("connection `{c}` is not declared"),
                    );
                }
            }
        }
        out
    }

    /// The connection called `name`, if declared.
    pub fn connection(&self, name: &str) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.name == name)
    }

    /// Whether `groups` make their holder exempt from `connection`'s masking:
    /// one of them is an exempt group *and* that group itself holds a role on
    /// the connection (an exemption never outlives the access it rides on).
    pub fn masking_exempt(&self, groups: &[String], connection: &str) -> bool {
        let Some(c) = self.connection(connection) else {
            return false;
        };
        c.masking
            .exempt_groups
            .iter()
            .filter(|g| groups.contains(g))
            .any(|g| {
                self.roles
                    .iter()
                    .any(|r| r.covers(connection) && r.groups.contains(g))
            })
    }

    /// The most powerful *standing* role that one of `groups` holds on
    /// `connection` (a `jit` role counts only with an active grant; see
    /// [`Deployment::jit_roles`]).
    pub fn effective_role(&self, groups: &[String], connection: &str) -> Option<EffectiveRole> {
        self.roles
            .iter()
            .filter(|r| r.access == RoleAccess::Standing && r.applies_to(groups, connection))
            .max_by_key(|r| r.level)
            .map(|r| EffectiveRole {
                role: r.name.clone(),
                level: r.level,
            })
    }
}

impl Deployment {
    /// The `jit` roles a principal in `groups` may request on `connection`.
    pub fn jit_roles<'a>(
        &'a self,
        groups: &'a [String],
        connection: &'a str,
    ) -> impl Iterator<Item = &'a RoleConfig> + 'a {
        self.roles
            .iter()
            .filter(move |r| r.access == RoleAccess::Jit && r.applies_to(groups, connection))
    }

    /// The role called `name`, if declared.
    pub fn role(&self, name: &str) -> Option<&RoleConfig> {
        self.roles.iter().find(|r| r.name == name)
    }

    fn cluster_problems(&self, problem: &mut impl FnMut(String, String)) {
        let Some(cluster) = &self.node.cluster else {
            return;
        };
        if cluster.raft_id == 0 {
            problem("node.cluster.raft_id".into(), "must be at least 1".into());
        }
        for (key, value) in [
            ("listen", Some(&cluster.listen)),
            ("control_listen", Some(&cluster.control_listen)),
        ] {
            if let Some(value) = value
                && value.parse::<std::net::SocketAddr>().is_err()
            {
                problem(
                    format!("node.cluster.{key}"),
                    format!("`{value}` is not an address like 127.0.0.1:7401"),
                );
            }
        }
        let mut ids = HashSet::new();
        for (i, m) in cluster.members.iter().enumerate() {
            if m.id == 0 {
                problem(
                    format!("node.cluster.member[{i}].id"),
                    "must be at least 1".into(),
                );
            }
            if !ids.insert(m.id) {
                problem(
                    format!("node.cluster.member[{i}].id"),
                    format!("id {} is declared twice", m.id),
                );
            }
            if m.address.trim().is_empty() {
                problem(
                    format!("node.cluster.member[{i}].address"),
                    "must not be empty".into(),
                );
            }
        }
        if cluster.snapshot_every == 0 {
            problem(
                "node.cluster.snapshot_every".into(),
                "must be at least 1".into(),
            );
        }
        if cluster.lease_bound.is_zero() {
            problem(
                "node.cluster.lease_bound".into(),
                "must be longer than 0s".into(),
            );
        }
    }

    fn approval_problems(
        &self,
        key: &str,
        review: &CommandApprovalConfig,
        problem: &mut impl FnMut(String, String),
    ) {
        if self.node.cluster.is_none() {
            problem(
                format!("{key}.approvals"),
                "command approvals need the region's control plane ([node.cluster])".into(),
            );
        }
        if review.reviewers.is_empty() {
            problem(
                format!("{key}.approvals.reviewers"),
                "must name at least one group".into(),
            );
        }
        if review.approvals == 0 {
            problem(
                format!("{key}.approvals.approvals"),
                "must be at least 1".into(),
            );
        }
        if review.statements.is_empty() && review.patterns.is_empty() {
            problem(
                format!("{key}.approvals.statements"),
                "name at least one statement kind or pattern to review".into(),
            );
        }
        if let Err(juris_policy::PolicyError::Pattern { index, reason }) =
            juris_policy::ReviewPolicy::new(&review.statements, &review.patterns)
        {
            problem(format!("{key}.approvals.patterns[{index}]"), reason);
        }
        for (field, value) in [("hold", review.hold), ("window", review.window)] {
            if value.is_zero() {
                problem(
                    format!("{key}.approvals.{field}"),
                    "must be longer than 0s".into(),
                );
            }
        }
    }

    fn role_review_problems(&self, problem: &mut impl FnMut(String, String)) {
        for (i, r) in self.roles.iter().enumerate() {
            match (&r.access, &r.review) {
                (RoleAccess::Jit, None) => problem(
                    format!("role[{i}].review"),
                    "a role with access = \"jit\" needs [role.review] with reviewers".into(),
                ),
                (RoleAccess::Standing, Some(_)) => problem(
                    format!("role[{i}].review"),
                    "only roles with access = \"jit\" are reviewed".into(),
                ),
                (RoleAccess::Jit, Some(review)) => {
                    if review.reviewers.is_empty() {
                        problem(
                            format!("role[{i}].review.reviewers"),
                            "must name at least one group".into(),
                        );
                    }
                    if review.approvals == 0 {
                        problem(
                            format!("role[{i}].review.approvals"),
                            "must be at least 1".into(),
                        );
                    }
                    if review.max_duration.is_zero() {
                        problem(
                            format!("role[{i}].review.max_duration"),
                            "must be longer than 0s".into(),
                        );
                    }
                    if review.request_ttl.is_zero() {
                        problem(
                            format!("role[{i}].review.request_ttl"),
                            "must be longer than 0s".into(),
                        );
                    }
                }
                (RoleAccess::Standing, None) => {}
            }
        }
    }
}

fn url_scheme(s: &str) -> Option<&'static str> {
    if s.starts_with("https://") && s.len() > 8 {
        Some("https")
    } else if s.starts_with("http://") && s.len() > 7 {
        Some("http")
    } else {
        None
    }
}

/// `host:port` with a non-empty host and a port number.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Lower-case DNS name: labels of a-z, 0-9 and inner '-', at least two.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = "eu-1"
region = "eu-west"
listen = "127.0.0.1:0"
tls = { cert_file = "server.pem", key_file = "server.key" }
data_dir = "/var/lib/juris"

[identity]
issuer = "https://idp.example.test/"
audience = "urn:juris:gateway"

[[region]]
name = "eu-west"
store = { kind = "local", path = "/var/lib/juris-evidence" }

[[connection]]
name = "billing"
kind = "postgres"
region = "eu-west"
upstream = { host = "127.0.0.1", port = 5432, database = "billing", user = "gw", password = { env = "BILLING_PW" } }

[[role]]
name = "analysts"
groups = ["analysts"]
connections = ["billing"]
level = "read"

[[role]]
name = "dba"
groups = ["dba"]
connections = ["*"]
level = "admin"
"#;

    #[test]
    fn a_good_file_validates_and_resolves_roles() {
        let d = Deployment::from_toml("t.toml", GOOD).unwrap();
        d.validate("t.toml").unwrap();
        let groups = vec!["analysts".to_string(), "dba".to_string()];
        assert_eq!(
            d.effective_role(&groups, "billing").unwrap(),
            EffectiveRole {
                role: "dba".into(),
                level: AccessLevel::Admin
            }
        );
        assert_eq!(
            d.effective_role(&["analysts".to_string()], "billing")
                .unwrap()
                .level,
            AccessLevel::Read
        );
        assert!(
            d.effective_role(&["nobody".to_string()], "billing")
                .is_none()
        );
        assert_eq!(d.identity.groups_claim, "groups");
    }

    #[test]
    fn every_problem_is_reported_with_file_and_key() {
        let bad = GOOD
            .replace(
                "region = \"eu-west\"\nupstream",
                "region = \"mars\"\nupstream",
            )
            .replace("port = 5432", "port = 0")
            .replace("connections = [\"billing\"]", "connections = [\"payroll\"]")
            .replace(
                "audience = \"urn:juris:gateway\"",
                "audience = \"\"\nalgorithms = [\"HS256\"]",
            );
        let d = Deployment::from_toml("bad.toml", &bad).unwrap();
        let err = d.validate("bad.toml").unwrap_err().to_string();
        for needle in [
            "bad.toml",
            "connection[0].region: region `mars` is not declared",
            "connection[0].upstream.port: must not be 0",
            "role[0].connections[0]: connection `payroll` is not declared",
            "identity.audience: must not be empty",
            "identity.algorithms[0]: `HS256` is not allowed",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn cross_region_routing_needs_a_directory_relay_endpoints_and_dns_names() {
        let two_regions = format!(
            "{GOOD}\n[directory]\ndomain = \"db.example.com\"\n\n[[region]]\nname = \"us-east\"\nstore = {{ kind = \"local\", path = \"/var/lib/us\" }}\n\n[[connection]]\nname = \"crm_us\"\nkind = \"postgres\"\nregion = \"us-east\"\nupstream = {{ host = \"127.0.0.1\", port = 5433, database = \"crm\", user = \"gw\" }}\n"
        );
        let d = Deployment::from_toml("t.toml", &two_regions).unwrap();
        let err = d.validate("t.toml").unwrap_err().to_string();
        for needle in [
            "node.relay: required when connections belong to more than one region",
            "region[1].relay: required: region `us-east` owns connections",
            "connection[1].name: `crm_us` cannot be a DNS label (`crm_us.db.example.com`)",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        assert!(!err.contains("region[0].relay"), "{err}");

        let fixed = two_regions
            .replace("crm_us", "crm-us")
            .replace(
                "name = \"us-east\"\n",
                "name = \"us-east\"\nrelay = [\"10.0.1.5:7601\", \"nowhere\"]\n",
            )
            .replace(
                "data_dir = \"/var/lib/juris\"\n",
                "data_dir = \"/var/lib/juris\"\nmetrics_listen = \"localhost\"\nrelay = { listen = \"0.0.0.0:7601\", tls = { cert_file = \"r.pem\", key_file = \"r.key\", ca_file = \"ca.pem\" } }\n",
            );
        let d = Deployment::from_toml("t.toml", &fixed).unwrap();
        let err = d.validate("t.toml").unwrap_err().to_string();
        assert!(
            err.contains("region[1].relay[1]: `nowhere` is not a host:port"),
            "{err}"
        );
        assert!(err.contains("node.metrics_listen: `localhost`"), "{err}");
        let d = Deployment::from_toml(
            "t.toml",
            &fixed.replace(", \"nowhere\"", "").replace(
                "metrics_listen = \"localhost\"",
                "metrics_listen = \"127.0.0.1:9464\"",
            ),
        )
        .unwrap();
        d.validate("t.toml").unwrap();
        // The valid configuration with one more `node.relay` setting.
        let relay_with = |setting: &str| {
            fixed
                .replace(", \"nowhere\"", "")
                .replace(
                    "metrics_listen = \"localhost\"",
                    "metrics_listen = \"127.0.0.1:9464\"",
                )
                .replace(
                    "listen = \"0.0.0.0:7601\",",
                    &format!("listen = \"0.0.0.0:7601\", {setting},"),
                )
        };
        // Forwarding needs at least one thread, and not thousands.
        for (threads, valid) in [(0, false), (1, true), (MAX_FORWARD_THREADS + 1, false)] {
            let config = relay_with(&format!("forward_threads = {threads}"));
            let result = Deployment::from_toml("t.toml", &config)
                .unwrap()
                .validate("t.toml");
            match (valid, result) {
                (true, result) => result.unwrap(),
                (false, Ok(())) => panic!("forward_threads = {threads} was accepted"),
                (false, Err(e)) => assert!(
                    e.to_string()
                        .contains("node.relay.forward_threads: must be between 1 and 256"),
                    "{e}"
                ),
            }
        }
        // A node listening on 0.0.0.0 says where its region's list has it;
        // a name not in the list is refused.
        let advertising = |at: &str| relay_with(&format!("advertise = \"{at}\""));
        let err = Deployment::from_toml("t.toml", &advertising("10.0.9.9:7601"))
            .unwrap()
            .validate("t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node.relay.advertise: `10.0.9.9:7601` is not in the relay list of this node's region `eu-west`"),
            "{err}"
        );
        let d = Deployment::from_toml(
            "t.toml",
            &advertising("10.0.0.5:7601").replace(
                "name = \"eu-west\"\n",
                "name = \"eu-west\"\nrelay = [\"10.0.0.5:7601\"]\n",
            ),
        )
        .unwrap();
        d.validate("t.toml").unwrap();
        let directory = d.directory.as_ref().unwrap();
        assert_eq!(
            directory.connection_of("crm-us.db.example.com"),
            Some("crm-us")
        );
        assert_eq!(
            directory.connection_of("Billing.DB.example.COM"),
            Some("Billing")
        );
        for other in [
            "db.example.com",
            ".db.example.com",
            "a.b.db.example.com",
            "crm-us.db.example.org",
            "crm-usdb.example.com",
            "",
        ] {
            assert_eq!(directory.connection_of(other), None, "{other}");
        }
        assert_eq!(relay_server_name("us-east"), "us-east.relay.juris");
    }

    #[test]
    fn stores_and_recording_settings_are_checked() {
        let d = Deployment::from_toml("t.toml", GOOD).unwrap();
        assert_eq!(d.connections[0].recording, RecordingMode::Strict);
        assert_eq!(d.node.recording.spool_max_bytes, 1 << 30);
        let s3 = GOOD
            .replace(
                "store = { kind = \"local\", path = \"/var/lib/juris-evidence\" }",
                "store = { kind = \"s3\", bucket = \"\", region = \"\", endpoint = \"ftp://x\", access_key_id = { env = \"K\" } }",
            )
            .replace("region = \"eu-west\"\nupstream", "region = \"eu-west\"\nrecording = \"best_effort\"\nupstream");
        let d = Deployment::from_toml("t.toml", &s3).unwrap();
        assert_eq!(d.connections[0].recording, RecordingMode::BestEffort);
        let err = d.validate("t.toml").unwrap_err().to_string();
        for needle in [
            "region[0].store.bucket: must not be empty",
            "region[0].store.region: must name the bucket's cloud region",
            "region[0].store.endpoint: must be an http(s) URL",
            "region[0].store: set both `access_key_id` and `secret_access_key`",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        let missing = GOOD
            .replace(
                "store = { kind = \"local\", path = \"/var/lib/juris-evidence\" }\n",
                "",
            )
            .replace("data_dir = \"/var/lib/juris\"\n", "");
        let err = Deployment::from_toml("t.toml", &missing)
            .unwrap()
            .validate("t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("region[0].store: required"), "{err}");
        assert!(err.contains("node.data_dir: required"), "{err}");
        assert_eq!(d.node.evidence_nice, 10);
        for (nice, ok) in [(0, true), (19, true), (20, false), (-5, false)] {
            let text = GOOD.replace(
                "data_dir = \"/var/lib/juris\"\n",
                &format!("data_dir = \"/var/lib/juris\"\nevidence_nice = {nice}\n"),
            );
            let result = Deployment::from_toml("t.toml", &text)
                .unwrap()
                .validate("t.toml");
            match result {
                Ok(_) => assert!(ok, "{nice} was accepted"),
                Err(e) => {
                    assert!(!ok, "{nice} was refused: {e}");
                    let e = e.to_string();
                    assert!(
                        e.contains(&format!("node.evidence_nice: {nice} is not a nice value")),
                        "{e}"
                    );
                }
            }
        }
        let foreign = GOOD.replace(
            "store = { kind = \"local\", path = \"/var/lib/juris-evidence\" }",
            "cloud_regions = [\"eu-west-1\", \"eu-central-1\"]\nstore = { kind = \"s3\", bucket = \"b\", region = \"us-east-1\" }",
        );
        let err = Deployment::from_toml("t.toml", &foreign)
            .unwrap()
            .validate("t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("region[0].store.region: `us-east-1` is outside region `eu-west`'s jurisdiction (cloud_regions: eu-west-1, eu-central-1)"),
            "{err}"
        );
        let relative = GOOD.replace("/var/lib/juris-evidence", "evidence");
        let err = Deployment::from_toml("t.toml", &relative)
            .unwrap()
            .validate("t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("region[0].store.path: `evidence` must be an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn masking_problems_name_the_connection_key() {
        let with_masking = format!(
            "{GOOD}\n[connection.masking]\nexempt_groups = [\"dba\"]\n[[connection.masking.value]]\ndetector = \"passport\"\nstrategy = \"redact\"\n[[connection.masking.column]]\nname = \"public.customers.email\"\nstrategy = \"hash\"\n"
        );
        // `[connection.masking]` after the roles still belongs to the last connection.
        let placed = with_masking;
        let d = Deployment::from_toml("m.toml", &placed).unwrap();
        let err = d.validate("m.toml").unwrap_err().to_string();
        assert!(
            err.contains("connection[0].masking.value[0].detector"),
            "{err}"
        );
        assert!(
            err.contains("connection[0].masking.column[0].strategy")
                && err.contains("mask_hash_key"),
            "{err}"
        );

        let keyed = placed.replace(
            "name = \"eu-west\"\n",
            "name = \"eu-west\"\nmask_hash_key = { env = \"MASK_KEY\" }\n",
        );
        let fixed = keyed.replace("\"passport\"", "\"ssn\"");
        let d = Deployment::from_toml("m.toml", &fixed).unwrap();
        d.validate("m.toml").unwrap();
        assert!(d.masking_exempt(&["dba".to_string()], "billing"));
        assert!(!d.masking_exempt(&["analysts".to_string()], "billing"));
    }

    #[test]
    fn an_exempt_group_without_a_role_on_the_connection_is_not_exempt() {
        let text = format!("{GOOD}\n[connection.masking]\nexempt_groups = [\"pii-readers\"]\n");
        let d = Deployment::from_toml("m.toml", &text).unwrap();
        d.validate("m.toml").unwrap();
        let groups = vec!["analysts".to_string(), "pii-readers".to_string()];
        assert!(!d.masking_exempt(&groups, "billing"));
    }

    #[test]
    fn unknown_keys_and_inline_secrets_are_refused() {
        let typo = GOOD.replace("listen =", "listn =");
        let err = Deployment::from_toml("t.toml", &typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml") && err.contains("listn"), "{err}");

        let inline = GOOD.replace(
            "password = { env = \"BILLING_PW\" }",
            "password = \"hunter2\"",
        );
        let err = Deployment::from_toml("t.toml", &inline)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("never inline") && err.contains("line 21"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the secret was echoed: {err}");
    }

    #[test]
    fn secrets_resolve_from_env_and_file_without_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("juris-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let file_ref = SecretRef {
            env: None,
            file: Some(path.clone()),
        };
        assert_eq!(file_ref.resolve("k").unwrap(), "s3cret");
        let missing = SecretRef {
            env: Some("JURIS_TEST_SURELY_UNSET_VAR".into()),
            file: None,
        };
        let err = missing
            .resolve("connection[0].upstream.password")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connection[0].upstream.password")
                && err.contains("JURIS_TEST_SURELY_UNSET_VAR")
        );
        assert!(!format!("{file_ref:?}").contains("s3cret"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn jit_roles_are_requestable_not_standing() {
        let text = format!(
            "{GOOD}\n[[role]]\nname = \"oncall-write\"\ngroups = [\"analysts\"]\nconnections = [\"billing\"]\nlevel = \"write\"\naccess = \"jit\"\nreview = {{ reviewers = [\"dba\"], approvals = 2, max_duration = \"4h\" }}\n"
        );
        let d = Deployment::from_toml("t.toml", &text).unwrap();
        d.validate("t.toml").unwrap();
        let analysts = vec!["analysts".to_string()];
        // The standing role still decides; the jit role does not count by itself.
        assert_eq!(
            d.effective_role(&analysts, "billing").unwrap().level,
            AccessLevel::Read
        );
        let jit: Vec<_> = d.jit_roles(&analysts, "billing").collect();
        assert_eq!(jit.len(), 1);
        let review = jit[0].review.as_ref().unwrap();
        assert_eq!(review.approvals, 2);
        assert_eq!(
            review.max_duration,
            std::time::Duration::from_secs(4 * 3600)
        );
        assert_eq!(
            review.request_ttl,
            std::time::Duration::from_secs(24 * 3600)
        );
        assert_eq!(d.jit_roles(&["dba".to_string()], "billing").count(), 0);
    }

    #[test]
    fn jit_and_cluster_mistakes_are_reported_by_key() {
        let text = format!(
            "{GOOD}\n[[role]]\nname = \"w\"\ngroups = [\"analysts\"]\nconnections = [\"billing\"]\nlevel = \"write\"\naccess = \"jit\"\n\n[[role]]\nname = \"z\"\ngroups = [\"analysts\"]\nconnections = [\"billing\"]\nlevel = \"write\"\naccess = \"jit\"\nreview = {{ reviewers = [], approvals = 0 }}\n"
        )
        .replace("data_dir = \"/var/lib/juris\"\n", "")
        .replace(
            "tls = { cert_file = \"server.pem\", key_file = \"server.key\" }",
            "tls = { cert_file = \"server.pem\", key_file = \"server.key\" }\ncluster = { raft_id = 0, listen = \"nowhere\", control_listen = \"127.0.0.1:7501\", tls = { cert_file = \"a\", key_file = \"b\", ca_file = \"c\" }, member = [{ id = 1, address = \"127.0.0.1:7401\" }, { id = 1, address = \"127.0.0.2:7401\" }] }",
        );
        let d = Deployment::from_toml("t.toml", &text).unwrap();
        let ConfigError::Invalid { problems, .. } = d.validate("t.toml").unwrap_err() else {
            panic!("expected problems");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "node.cluster.raft_id",
            "node.cluster.listen",
            "node.data_dir",
            "node.cluster.member[1].id",
            "role[2].review",
            "role[3].review.reviewers",
            "role[3].review.approvals",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[test]
    fn a_bad_duration_names_the_value() {
        let text = format!(
            "{GOOD}\n[[role]]\nname = \"w\"\ngroups = [\"analysts\"]\nconnections = [\"billing\"]\nlevel = \"write\"\naccess = \"jit\"\nreview = {{ reviewers = [\"dba\"], max_duration = \"forever\" }}\n"
        );
        let err = Deployment::from_toml("t.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`forever` is not a duration"), "{err}");
    }

    #[test]
    fn command_approvals_default_to_hard_to_undo_statements_and_need_a_cluster() {
        let text = GOOD.replace(
            "user = \"gw\", password = { env = \"BILLING_PW\" } }",
            "user = \"gw\", password = { env = \"BILLING_PW\" } }\napprovals = { reviewers = [\"dba\"], hold = \"30s\" }",
        );
        let d = Deployment::from_toml("t.toml", &text).unwrap();
        let review = d.connections[0].approvals.as_ref().unwrap();
        assert_eq!(review.approvals, 1);
        assert_eq!(review.hold, std::time::Duration::from_secs(30));
        assert_eq!(review.window, std::time::Duration::from_secs(900));
        assert!(
            review
                .statements
                .contains(&ReviewedStatement::UnqualifiedWrite)
        );
        let ConfigError::Invalid { problems, .. } = d.validate("t.toml").unwrap_err() else {
            panic!("expected problems");
        };
        assert!(
            problems
                .iter()
                .any(|p| p.key == "connection[0].approvals" && p.reason.contains("[node.cluster]")),
            "{problems:?}"
        );
    }

    #[test]
    fn command_approval_mistakes_are_reported_by_key() {
        let text = GOOD.replace(
            "user = \"gw\", password = { env = \"BILLING_PW\" } }",
            "user = \"gw\", password = { env = \"BILLING_PW\" } }\napprovals = { reviewers = [], approvals = 0, patterns = [\"(\"], hold = \"0s\" }",
        );
        let d = Deployment::from_toml("t.toml", &text).unwrap();
        let ConfigError::Invalid { problems, .. } = d.validate("t.toml").unwrap_err() else {
            panic!("expected problems");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "connection[0].approvals.reviewers",
            "connection[0].approvals.approvals",
            "connection[0].approvals.patterns[0]",
            "connection[0].approvals.hold",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        let unknown = GOOD.replace(
            "user = \"gw\", password = { env = \"BILLING_PW\" } }",
            "user = \"gw\", password = { env = \"BILLING_PW\" } }\napprovals = { reviewers = [\"dba\"], statements = [\"drop_everything\"] }",
        );
        let err = Deployment::from_toml("t.toml", &unknown)
            .unwrap_err()
            .to_string();
        assert!(err.contains("drop_everything"), "{err}");
    }
}
