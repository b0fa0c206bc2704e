//! `juris`: run a node, the demo, or the client side (login, token, connect).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use juris_cli::connect::{self, ConnectOptions};
use juris_cli::control_cmd::{
    AccessCommand, ApprovalsCommand, ClusterCommand, ControlOptions, GrantsCommand, SessionsCommand,
};
use juris_cli::mask_test::MaskTest;
use juris_cli::tokens::{self, IdpOptions};

#[derive(Parser)]
#[command(
    name = "juris",
    version,
    about = "Juris: a residency-enforcing access gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway node from a deployment file.
    Node {
        /// Deployment file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a deployment file and exit.
    Check {
        /// Deployment file (TOML).
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL, a demo-only OIDC issuer and a node; print how to connect.
    Demo {
        /// Gateway port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Run several regions (one PostgreSQL each), e.g.
        /// `eu-west,us-east`: sessions reaching the wrong region's node are
        /// handed over, still encrypted, to their own region.
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        /// Nodes per region with --regions (1 to 5); with more than one,
        /// each region's nodes form their own Raft group.
        #[arg(long, default_value_t = 1, requires = "regions", value_parser = clap::value_parser!(u8).range(1..=5))]
        nodes: u8,
    },
    /// Log in with the OIDC device authorization flow and cache the tokens.
    Login {
        #[command(flatten)]
        idp: IdpOptions,
    },
    /// Print a valid access token (cached, refreshed, or by client credentials).
    Token {
        #[command(flatten)]
        idp: IdpOptions,
        /// Use the client-credentials flow (machine identities); secret from JURIS_CLIENT_SECRET.
        #[arg(long)]
        client_credentials: bool,
    },
    /// Listen locally for plain PostgreSQL and forward to the gateway over TLS with your token.
    Connect {
        /// Connection name (what you would put in dbname).
        connection: String,
        /// Local port on 127.0.0.1.
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Gateway address host:port; with --config, the endpoint of the
        /// region that owns the connection.
        #[arg(long, env = "JURIS_GATEWAY")]
        gateway: Option<String>,
        /// Deployment file (TOML) to look the connection up in: its owning
        /// region's endpoint, and its directory name as the TLS server name.
        #[arg(long, env = "JURIS_CONFIG")]
        config: Option<PathBuf>,
        /// CA certificate that signs the gateway's certificate.
        #[arg(long, env = "JURIS_CA")]
        ca: Option<PathBuf>,
        /// TLS server name (SNI) of the gateway; defaults to the gateway host.
        #[arg(long, env = "JURIS_SERVER_NAME")]
        server_name: Option<String>,
        #[command(flatten)]
        idp: IdpOptions,
    },
    /// Audit trail: export a region's bundle, verify one offline.
    Audit {
        #[command(subcommand)]
        command: juris_cli::audit_cmd::AuditCommand,
    },
    /// Just-in-time access: request a role on a connection, review requests.
    Access {
        #[command(flatten)]
        control: ControlOptions,
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// Grants: list them, revoke one (its sessions end).
    Grants {
        #[command(flatten)]
        control: ControlOptions,
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// Held commands waiting for review.
    Approvals {
        #[command(flatten)]
        control: ControlOptions,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Sessions through a node.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Show a recorded session: verify its chain and signature, render it.
    Replay(juris_cli::recordings_cmd::ReplayOptions),
    /// The region's Raft group: status and membership.
    Cluster {
        #[command(flatten)]
        control: ControlOptions,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Masking policies.
    Mask {
        #[command(subcommand)]
        command: MaskCommand,
    },
}

#[derive(Subcommand)]
enum MaskCommand {
    /// Dry run: show what a connection's masking policy does to values.
    Test {
        /// Deployment file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Connection whose policy to apply.
        #[arg(long)]
        connection: String,
        /// Treat the values as this source column (schema.table.column) so column rules apply.
        #[arg(long)]
        column: Option<String>,
        /// A file with one value per line.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Values to test.
        values: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JURIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Node { config } => Ok(juris_node::run_from_file(&config).await?),
            Command::Check { config } => {
                juris_config::Deployment::load(&config)?;
                println!("{}: ok", config.display());
                Ok(())
            }
            Command::Demo { port, regions, .. } if regions.is_empty() => {
                Ok(juris_demo::run(port).await?)
            }
            Command::Demo { regions, nodes, .. } => {
                Ok(juris_demo::regions::run(&regions, usize::from(nodes)).await?)
            }
            Command::Audit { command } => juris_cli::audit_cmd::run(command).await,
            Command::Mask {
                command:
                    MaskCommand::Test {
                        config,
                        connection,
                        column,
                        file,
                        values,
                    },
            } => {
                print!(
                    "{}",
                    juris_cli::mask_test::run(&MaskTest {
                        config,
                        connection,
                        column,
                        values,
                        file,
                    })?
                );
                Ok(())
            }
            Command::Access { control, command } => {
                juris_cli::control_cmd::access(&control, command).await
            }
            Command::Grants { control, command } => {
                juris_cli::control_cmd::grants(&control, command).await
            }
            Command::Approvals { control, command } => {
                juris_cli::control_cmd::approvals(&control, command).await
            }
            Command::Cluster { control, command } => {
                juris_cli::control_cmd::cluster(&control, command).await
            }
            Command::Replay(options) => juris_cli::recordings_cmd::replay(&options).await,
            Command::Sessions { command } => juris_cli::control_cmd::sessions(command).await,
            Command::Login { idp } => tokens::login(&idp).await,
            Command::Token {
                idp,
                client_credentials,
            } => {
                let token = if client_credentials {
                    tokens::client_credentials(&idp).await?
                } else {
                    tokens::current(&idp).await?
                };
                println!("{token}");
                Ok(())
            }
            Command::Connect {
                connection,
                port,
                gateway,
                config,
                ca,
                server_name,
                idp,
            } => {
                let (gateway, server_name) =
                    connect::route(&connection, gateway, server_name, config.as_deref())?;
                // Fail now, not at the first session, if there is no usable token.
                tokens::current(&idp).await?;
                let handle = tokio::runtime::Handle::current();
                let source: connect::TokenSource = Arc::new(move || {
                    let idp = idp.clone();
                    tokio::task::block_in_place(|| handle.block_on(tokens::current(&idp)))
                });
                connect::run(
                    ConnectOptions {
                        connection,
                        gateway,
                        server_name,
                        ca_file: ca,
                        port,
                    },
                    source,
                )
                .await
            }
        }
    })
}
