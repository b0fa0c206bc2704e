//! `juris access`, `juris grants`, `juris approvals` and `juris cluster`:
//! the control API from a terminal. Each command reaches one node of the
//! connection's region (`--control` / `JURIS_CONTROL`), with the caller's
//! token; writes are forwarded to the region's leader by that node.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use juris_control::ControlClient;
use juris_control::client::pb;

use crate::tokens::{self, IdpOptions};

/// Where the control API is and how to trust it.
#[derive(Debug, Clone, Args)]
pub struct ControlOptions {
    /// A node's control API, host:port (`node.cluster.control_listen`).
    #[arg(long, env = "JURIS_CONTROL", global = true)]
    pub control: Option<String>,
    /// Deployment file (TOML): without --control, commands go to the
    /// control APIs (`[[region]] control`) of the region that owns the
    /// connection they name, or of --region.
    #[arg(long, env = "JURIS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The region whose control plane to ask (with --config), for commands
    /// that name no connection.
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// CA certificate that signs the node's certificate.
    #[arg(long, env = "JURIS_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// TLS server name of the node; defaults to the host of --control.
    #[arg(long, env = "JURIS_SERVER_NAME", global = true)]
    pub server_name: Option<String>,
    #[command(flatten)]
    pub idp: IdpOptions,
}

impl ControlOptions {
    async fn client(&self) -> anyhow::Result<ControlClient> {
        self.client_for(None).await
    }

    /// A client of the control plane that decides about `connection`:
    /// `--control` if given, else a node of the owning region (grants and
    /// approvals never leave their region), trying its nodes in order.
    async fn client_for(&self, connection: Option<&str>) -> anyhow::Result<ControlClient> {
        let endpoints = match (&self.control, &self.config) {
            (Some(endpoint), _) => vec![endpoint.clone()],
            (None, Some(config)) => self.region_endpoints(config, connection)?,
            (None, None) => anyhow::bail!(
                "no control API: pass --control host:port (or set JURIS_CONTROL), or --config with the deployment file"
            ),
        };
        let token = tokens::current(&self.idp).await?;
        let mut failures = Vec::new();
        for endpoint in &endpoints {
            match ControlClient::connect(
                endpoint,
                self.ca.as_deref(),
                self.server_name.as_deref(),
                &token,
            )
            .await
            {
                Ok(client) => return Ok(client),
                Err(e) => failures.push(format!("{endpoint}: {e}")),
            }
        }
        anyhow::bail!("no control API answered: {}", failures.join("; "))
    }

    /// The control endpoints of the region that owns `connection` (or of
    /// `--region`), from the deployment file.
    fn region_endpoints(
        &self,
        config: &std::path::Path,
        connection: Option<&str>,
    ) -> anyhow::Result<Vec<String>> {
        let deployment = juris_config::Deployment::load(config)?;
        let region = match (connection, &self.region) {
            (Some(connection), _) => {
                let (region, _) = deployment.route_to(connection).with_context(|| {
                    format!(
                        "{}: connection \"{connection}\" is not declared",
                        config.display()
                    )
                })?;
                if let Some(asked) = &self.region
                    && *asked != region.name
                {
                    anyhow::bail!(
                        "connection \"{connection}\" belongs to region {}, not {asked}",
                        region.name
                    );
                }
                region
            }
            (None, Some(name)) => deployment
                .region(name)
                .with_context(|| format!("{}: region {name} is not declared", config.display()))?,
            (None, None) => {
                anyhow::bail!("which region? pass --region (this command names no connection)")
            }
        };
        anyhow::ensure!(
            !region.control.is_empty(),
            "{}: region {} declares no `control` endpoints; pass --control",
            config.display(),
            region.name
        );
        Ok(region.control.clone())
    }
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Ask for a role on a connection for a while; reviewers decide.
    Request {
        connection: String,
        #[arg(long)]
        role: String,
        /// How long, e.g. 30m, 2h.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Why (an incident or ticket id helps reviewers).
        #[arg(long)]
        reason: String,
    },
    /// Requests you may see: your own, or the region's if you review.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        connection: Option<String>,
    },
    /// Approve a request (never your own).
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a request.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Withdraw your own pending request.
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// Grants you may see.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        connection: Option<String>,
    },
    /// End a grant now; sessions riding on it are ended.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Held commands you may see.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        connection: Option<String>,
    },
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Sessions open through the node now (admins see all, others their own).
    Active {
        #[arg(long)]
        connection: Option<String>,
        #[command(flatten)]
        control: ControlOptions,
    },
    /// Recorded sessions in a region's object store (and in this machine's
    /// node spool: not yet uploaded, quarantined).
    List(crate::recordings_cmd::ListOptions),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, members, log indexes and lag, as the node sees them.
    Status,
    /// Add a node as a learner (it catches up from the log or a snapshot).
    AddLearner {
        id: u64,
        /// Its Raft transport address, host:port.
        address: String,
    },
    /// Make exactly these node ids the voters.
    ChangeMembership {
        #[arg(required = true)]
        voters: Vec<u64>,
    },
}

/// Unix milliseconds as RFC 3339 (to the second); `-` for 0 (unset).
pub(crate) fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn print_request(r: &pb::AccessRequest) {
    let approvals = r.reviews.iter().filter(|v| v.approve).count();
    println!(
        "{}  {}  {} on {} ({}) for {}  by {}  approvals {}/{}{}  reason: {}",
        r.id,
        r.status,
        r.role,
        r.connection,
        r.level,
        humantime::format_duration(Duration::from_millis(r.duration_ms)),
        r.requester,
        approvals,
        r.approvals_needed,
        if r.grant_id.is_empty() {
            String::new()
        } else {
            format!("  grant {}", r.grant_id)
        },
        r.reason
    );
}

fn print_grant(g: &pb::Grant) {
    println!(
        "{}  {}  {} holds {} on {} ({})  from {} until {}{}",
        g.id,
        g.status,
        g.holder,
        g.role,
        g.connection,
        g.level,
        time(g.not_before_ms),
        time(g.expires_at_ms),
        if g.revoked_by.is_empty() {
            String::new()
        } else {
            format!("  revoked by {}: {}", g.revoked_by, g.revoke_reason)
        }
    );
}

fn print_approval(a: &pb::Approval) {
    println!(
        "{}  {}  {} on {} ({})  {}",
        a.id, a.status, a.requester, a.connection, a.class, a.statement
    );
}

pub async fn access(options: &ControlOptions, command: AccessCommand) -> anyhow::Result<()> {
    let named = match &command {
        AccessCommand::Request { connection, .. } => Some(connection.as_str()),
        AccessCommand::List { connection, .. } => connection.as_deref(),
        _ => None,
    };
    let mut client = options.client_for(named).await?;
    match command {
        AccessCommand::Request {
            connection,
            role,
            duration,
            reason,
        } => {
            let r = client
                .request_access(pb::RequestAccessRequest {
                    connection,
                    role,
                    duration_ms: duration.as_millis() as u64,
                    reason,
                    not_before_ms: 0,
                })
                .await?;
            print_request(&r);
            println!(
                "Reviewers can approve it with: juris access approve {}",
                r.id
            );
        }
        AccessCommand::List { status, connection } => {
            for r in client
                .list_access_requests(pb::ListAccessRequestsRequest {
                    status: status.unwrap_or_default(),
                    connection: connection.unwrap_or_default(),
                })
                .await?
            {
                print_request(&r);
            }
        }
        AccessCommand::Approve { id, reason } => {
            let r = client
                .review_access(pb::ReviewRequest {
                    id,
                    approve: true,
                    reason: reason.unwrap_or_default(),
                })
                .await?;
            print_request(&r);
        }
        AccessCommand::Deny { id, reason } => {
            let r = client
                .review_access(pb::ReviewRequest {
                    id,
                    approve: false,
                    reason: reason.unwrap_or_default(),
                })
                .await?;
            print_request(&r);
        }
        AccessCommand::Cancel { id } => print_request(&client.cancel_access(id).await?),
    }
    Ok(())
}

pub async fn grants(options: &ControlOptions, command: GrantsCommand) -> anyhow::Result<()> {
    let named = match &command {
        GrantsCommand::List { connection, .. } => connection.as_deref(),
        _ => None,
    };
    let mut client = options.client_for(named).await?;
    match command {
        GrantsCommand::List { status, connection } => {
            for g in client
                .list_grants(pb::ListGrantsRequest {
                    status: status.unwrap_or_default(),
                    connection: connection.unwrap_or_default(),
                })
                .await?
            {
                print_grant(&g);
            }
        }
        GrantsCommand::Revoke { id, reason } => {
            let g = client
                .revoke_grant(pb::RevokeGrantRequest {
                    id,
                    reason: reason.unwrap_or_default(),
                })
                .await?;
            print_grant(&g);
        }
    }
    Ok(())
}

pub async fn approvals(options: &ControlOptions, command: ApprovalsCommand) -> anyhow::Result<()> {
    let named = match &command {
        ApprovalsCommand::List { connection, .. } => connection.as_deref(),
        _ => None,
    };
    let mut client = options.client_for(named).await?;
    match command {
        ApprovalsCommand::List { status, connection } => {
            for a in client
                .list_approvals(pb::ListApprovalsRequest {
                    status: status.unwrap_or_default(),
                    connection: connection.unwrap_or_default(),
                })
                .await?
            {
                print_approval(&a);
            }
        }
        ApprovalsCommand::Approve { id, reason } => print_approval(
            &client
                .review_approval(pb::ReviewRequest {
                    id,
                    approve: true,
                    reason: reason.unwrap_or_default(),
                })
                .await?,
        ),
        ApprovalsCommand::Deny { id, reason } => print_approval(
            &client
                .review_approval(pb::ReviewRequest {
                    id,
                    approve: false,
                    reason: reason.unwrap_or_default(),
                })
                .await?,
        ),
    }
    Ok(())
}

pub async fn sessions(command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List(list) => crate::recordings_cmd::list(&list).await?,
        SessionsCommand::Active {
            connection,
            control,
        } => {
            let mut client = control.client().await?;
            let sessions = client
                .list_sessions(pb::ListSessionsRequest {
                    connection: connection.unwrap_or_default(),
                })
                .await?;
            if sessions.is_empty() {
                println!("no sessions");
            }
            for s in sessions {
                let grant = if s.grant.is_empty() {
                    String::new()
                } else {
                    format!(" grant {}", s.grant)
                };
                println!(
                    "{}  {} on {} as {}{}  from {}  since {}  node {}",
                    s.id,
                    s.principal,
                    s.connection,
                    s.role,
                    grant,
                    s.client,
                    time(s.started_ms),
                    s.node
                );
            }
        }
    }
    Ok(())
}

pub async fn cluster(options: &ControlOptions, command: ClusterCommand) -> anyhow::Result<()> {
    let mut client = options.client().await?;
    let status = match command {
        ClusterCommand::Status => client.cluster_status().await?,
        ClusterCommand::AddLearner { id, address } => client.add_learner(id, address).await?,
        ClusterCommand::ChangeMembership { voters } => client.change_membership(voters).await?,
    };
    println!(
        "region {}  node {} ({})  leader {}  term {}",
        status.region,
        status.node_id,
        status.state,
        if status.leader_id == 0 {
            "none (no quorum)".to_string()
        } else {
            format!("{} at {}", status.leader_id, status.leader_address)
        },
        status.term
    );
    println!(
        "log: last {}  committed {}  applied {}  snapshot {}  leader contact {}",
        status.last_log_index,
        status.committed_index,
        status.applied_index,
        status.snapshot_index,
        if status.leader_contact_age_ms == u64::MAX {
            "never".to_string()
        } else {
            format!("{} ms ago", status.leader_contact_age_ms)
        }
    );
    for m in &status.members {
        println!(
            "  member {}  {}  {}  matched {}  lag {}",
            m.id,
            m.address,
            if m.voter { "voter" } else { "learner" },
            m.matched_index,
            m.lag
        );
    }
    Ok(())
}
