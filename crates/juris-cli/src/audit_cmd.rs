//! `juris audit export` and `juris audit verify`: build a region's audit
//! bundle (from the region's object store, or from nodes' segment
//! directories), with the region's recording manifests (and chunks, on
//! request), and check one offline.
//!
//! Both are thin: the formats and checks live in `juris-audit` (segments,
//! seals, the bundle) and `juris-record` (recordings). The clock is read
//! here (the bundle's creation time) and nowhere below.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Subcommand;
use futures_util::StreamExt;
use juris_audit::{ExportOptions, Timestamp};
use juris_config::{Deployment, StoreConfig};
use object_store::{ObjectStore, ObjectStoreExt};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Bundle a region's sealed audit segments for a time range.
    Export {
        /// Deployment file whose `[[region]] store` holds the region's
        /// uploaded audit segments and recordings.
        #[arg(long, short, required_unless_present = "dirs")]
        config: Option<PathBuf>,
        /// Directory of audit segments (repeat for several nodes); with
        /// `--config`, added to what the store holds.
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// Include the recordings' chunks, not only their signed manifests.
        #[arg(long)]
        recordings: bool,
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
pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Export {
            config,
            mut dirs,
            recordings,
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
            let downloads = tempfile::tempdir()?;
            let mut extra = Vec::new();
            let mut residency = None;
            if let Some(config) = &config {
                let deployment = Deployment::load(config)?;
                let store = crate::recordings_cmd::open_region_store(config, &deployment, &region)?;
                // Only a bundle read wholly from the region's store can say
                // where each piece of evidence lives.
                if dirs.is_empty() {
                    residency = residency_source(&deployment, &region);
                }
                dirs.extend(download_segments(&*store, &region, downloads.path()).await?);
                extra = recording_files(&*store, &region, since, until, recordings).await?;
            }
            let manifests = extra
                .iter()
                .filter(|(name, _)| name.ends_with("/manifest.json"))
                .count();
            let summary = juris_audit::export(&ExportOptions {
                dirs,
                region: region.clone(),
                since,
                until,
                created: Timestamp::from_system_time(SystemTime::now())?,
                out: out.clone(),
                extra,
                residency,
            })?;
            print!("{}: region {region}, {summary}", out.display());
            if config.is_some() {
                println!(
                    "{manifests} recording manifests{}",
                    if recordings { " with their chunks" } else { "" }
                );
            }
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
            let entries = juris_audit::recording_entries(&bundle)?;
            let recordings = verify_recordings(entries, &report, &trusted).await?;
            print!("{recordings}");
            let problems = report.problems.len() + recordings.problems.len();
            if problems > 0 {
                bail!(
                    "{}: verification failed with {problems} problems",
                    bundle.display()
                );
            }
            Ok(())
        }
    }
}

/// How the bundle's residency section names `region`'s store.
fn residency_source(deployment: &Deployment, region: &str) -> Option<juris_audit::ResidencySource> {
    let config = deployment.region(region)?;
    let (store, cloud_region) = match config.store.as_ref()? {
        StoreConfig::Local { path } => (format!("file://{}", path.display()), None),
        StoreConfig::S3 { bucket, region, .. } => (format!("s3://{bucket}"), Some(region.clone())),
    };
    Some(juris_audit::ResidencySource {
        store,
        cloud_region,
        cloud_regions: config.cloud_regions.clone(),
    })
}

/// Fetch the region's uploaded segments into `dir/<node>/`; returns the
/// node directories.
async fn download_segments(
    store: &dyn ObjectStore,
    region: &str,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = object_store::path::Path::from(juris_record::audit_prefix(region));
    let mut listing = store.list(Some(&prefix));
    let mut nodes = BTreeMap::new();
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let parts: Vec<_> = meta.location.parts().collect();
        // audit/<region>/<node>/<file>
        let [_, _, node, file] = parts.as_slice() else {
            continue;
        };
        let node_dir = dir.join(node.as_ref());
        std::fs::create_dir_all(&node_dir)?;
        let bytes = store.get(&meta.location).await?.bytes().await?;
        std::fs::write(node_dir.join(file.as_ref()), &bytes)?;
        nodes.insert(node.as_ref().to_string(), node_dir);
    }
    Ok(nodes.into_values().collect())
}

/// The region's recording manifests (and chunks when asked) of sessions
/// that overlap the range, as bundle entries named by their store keys.
async fn recording_files(
    store: &dyn ObjectStore,
    region: &str,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    chunks: bool,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let ms = |t: Option<Timestamp>| t.map(|t| u64::try_from(t.unix_micros() / 1000).unwrap_or(0));
    let filter = juris_record::ListFilter {
        since_ms: ms(since),
        until_ms: ms(until),
        ..Default::default()
    };
    let mut out = Vec::new();
    for session in juris_record::list_sessions(store, region, &filter).await? {
        let Some(prefix) = session.manifest_key.strip_suffix("manifest.json") else {
            continue;
        };
        let mut listing = store.list(Some(&object_store::path::Path::from(prefix)));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let key = meta.location.to_string();
            if key == session.manifest_key || chunks {
                let bytes = store.get(&meta.location).await?.bytes().await?;
                out.push((key, bytes.to_vec()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What the recording checks of a bundle found.
#[derive(Debug, Default)]
struct RecordingsReport {
    manifests: usize,
    with_chunks: usize,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl std::fmt::Display for RecordingsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.manifests == 0 {
            return writeln!(f, "recordings: none in this bundle");
        }
        writeln!(
            f,
            "recordings: {} manifests ({} with their chunks): {}",
            self.manifests,
            self.with_chunks,
            if self.problems.is_empty() {
                "VERIFIED"
            } else {
                "NOT VERIFIED"
            }
        )?;
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        for problem in &self.problems {
            writeln!(f, "  problem: {problem}")?;
        }
        Ok(())
    }
}

/// Check every recording manifest in a bundle: its signature against the
/// recording node's key (pinned, else the key the bundle's audit chain
/// has for that node), and, when its chunks are in the bundle, every
/// chunk's hash and chain link.
async fn verify_recordings(
    entries: Vec<(String, Vec<u8>)>,
    audit: &juris_audit::Report,
    trusted: &BTreeMap<String, String>,
) -> anyhow::Result<RecordingsReport> {
    let mut report = RecordingsReport::default();
    let store = object_store::memory::InMemory::new();
    let mut manifests = Vec::new();
    let names: std::collections::BTreeSet<String> =
        entries.iter().map(|(name, _)| name.clone()).collect();
    for (name, bytes) in entries {
        if name.ends_with("/manifest.json") {
            manifests.push((name.clone(), bytes.clone()));
        }
        store
            .put(&object_store::path::Path::from(name.as_str()), bytes.into())
            .await?;
    }
    let limits = juris_record::DecodeLimits::default();
    for (name, bytes) in manifests {
        report.manifests += 1;
        let manifest =
            match juris_record::Manifest::from_file_bytes(&bytes, limits.max_manifest_bytes) {
                Ok(m) => m,
                Err(e) => {
                    report
                        .problems
                        .push(format!("{name}: unreadable manifest: {e}"));
                    continue;
                }
            };
        let chain_key = audit
            .nodes
            .iter()
            .find(|n| n.node == manifest.node)
            .and_then(|n| n.public_key.clone());
        let key = match (trusted.get(&manifest.node), &chain_key) {
            (Some(pinned), _) => pinned.clone(),
            (None, Some(chain)) => chain.clone(),
            (None, None) => {
                report.notes.push(format!(
                    "{name}: node {} has no audit segments in this bundle; its signature is checked against the key the manifest names",
                    manifest.node
                ));
                manifest.public_key.clone()
            }
        };
        if audit.region.as_ref().is_some_and(|r| *r != manifest.region) {
            report.problems.push(format!(
                "{name}: a recording of region {}, in a bundle of region {}",
                manifest.region,
                audit.region.as_deref().unwrap_or("?")
            ));
        }
        if manifest.public_key != key {
            report.problems.push(format!(
                "{name}: signed with key {}, but node {}'s key is {key}",
                manifest.public_key, manifest.node
            ));
        }
        let has_chunks = manifest.chunks.iter().any(|c| names.contains(&c.key));
        if has_chunks {
            report.with_chunks += 1;
            let recording = juris_record::open_recording_at(&store, &name, Some(&key)).await?;
            for problem in recording.verification.problems {
                report.problems.push(format!("{name}: {problem}"));
            }
        } else if let Err(e) = manifest.verify(&key) {
            report.problems.push(format!("{name}: {e}"));
        }
    }
    Ok(report)
}
