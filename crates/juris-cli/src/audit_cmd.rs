//! `juris audit export` and `juris audit verify`: build a region's audit
//! bundle from nodes' segment directories, and check one offline.
//!
//! Both are thin: the work and the formats live in `juris-audit`. The
//! clock is read here (the bundle's creation time) and nowhere below.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Subcommand;
use juris_audit::{ExportOptions, Timestamp};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Bundle a region's sealed audit segments for a time range.
    Export {
        /// Directory of audit segments (repeat for several nodes).
        #[arg(long = "dir", required = true)]
        dirs: Vec<PathBuf>,
        /// Region whose segments to bundle; segments of other regions are left out.
        #[arg(long)]
        region: String,
        /// Start of the range (RFC 3339); segments overlapping the range are included whole.
        #[arg(long)]
        since: Option<String>,
        /// End of the range (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Verify a bundle offline: hashes, chain links, seals, gaps. Exits non-zero on any problem.
    Verify {
        /// The bundle (`.tar.zst`).
        bundle: PathBuf,
        /// Pin a node's public key (NODE=HEX) instead of trusting the bundle's; repeatable.
        #[arg(long = "key", value_name = "NODE=KEY")]
        keys: Vec<String>,
    },
}

/// Run an audit subcommand; what it prints goes to stdout.
pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Export {
            dirs,
            region,
            since,
            until,
            out,
        } => {
            let parse = |flag: &str, value: Option<String>| {
                value
                    .map(|v| Timestamp::parse(&v).with_context(|| format!("--{flag}")))
                    .transpose()
            };
            let since = parse("since", since)?;
            let until = parse("until", until)?;
            if let (Some(s), Some(u)) = (since, until)
                && s > u
            {
                bail!("--since {s} is after --until {u}");
            }
            let summary = juris_audit::export(&ExportOptions {
                dirs,
                region: region.clone(),
                since,
                until,
                created: Timestamp::from_system_time(SystemTime::now())?,
                out: out.clone(),
            })?;
            print!("{}: region {region}, {summary}", out.display());
            Ok(())
        }
        AuditCommand::Verify { bundle, keys } => {
            let mut trusted = BTreeMap::new();
            for pair in keys {
                let Some((node, key)) = pair.split_once('=') else {
                    bail!("--key {pair}: expected NODE=KEY");
                };
                trusted.insert(node.to_string(), key.to_ascii_lowercase());
            }
            let report = juris_audit::verify_with_keys(&bundle, &trusted)?;
            print!("{report}");
            if !report.is_ok() {
                bail!(
                    "{}: verification failed with {} problems",
                    bundle.display(),
                    report.problems.len()
                );
            }
            Ok(())
        }
    }
}
