//! `juris sessions list` and `juris replay`: recordings read straight from
//! a region's object store (the deployment file names it and the
//! credentials to reach it), verified on the way. Whoever can read the
//! store can read the recordings; these commands add no access of their
//! own.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use juris_config::Deployment;
use juris_record::{AsciicastOptions, ListFilter, SessionSummary};

use crate::control_cmd::time;

/// Which region's store to read.
#[derive(Debug, Args)]
pub struct StoreOptions {
    /// Deployment file that declares the region and its store.
    #[arg(long, short, env = "JURIS_CONFIG")]
    pub config: PathBuf,
    /// Region whose store to read; defaults to the file's `node.region`.
    #[arg(long)]
    pub region: Option<String>,
}

impl StoreOptions {
    fn open(
        &self,
    ) -> anyhow::Result<(
        Deployment,
        String,
        std::sync::Arc<dyn object_store::ObjectStore>,
    )> {
        let deployment = Deployment::load(&self.config)?;
        let region = self
            .region
            .clone()
            .unwrap_or_else(|| deployment.node.region.clone());
        let store = open_region_store(&self.config, &deployment, &region)?;
        Ok((deployment, region, store))
    }
}

/// The object store of `region` as `deployment` (read from `config`)
/// declares it.
pub(crate) fn open_region_store(
    config: &Path,
    deployment: &Deployment,
    region: &str,
) -> anyhow::Result<std::sync::Arc<dyn object_store::ObjectStore>> {
    let (key, store_config) = deployment.region_store(region).with_context(|| {
        format!(
            "{}: region `{region}` is not declared under [[region]] with a `store`",
            config.display()
        )
    })?;
    Ok(juris_record::open_store(store_config, &key)?)
}

/// `juris sessions list` filters.
#[derive(Debug, Args)]
pub struct ListOptions {
    #[command(flatten)]
    pub store: StoreOptions,
    #[arg(long)]
    pub connection: Option<String>,
    /// A principal's name or subject.
    #[arg(long)]
    pub user: Option<String>,
    /// Sessions running at or after this time: RFC 3339 (`2026-11-24T08:00:00Z`) or an age (`2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Sessions started before this time (same forms).
    #[arg(long)]
    pub until: Option<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Output of `juris replay`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReplayFormat {
    /// Statements with timing and the results as the user saw them.
    Text,
    /// The recorded events, one JSON object per line.
    Json,
    /// asciicast v2, for asciinema players.
    Asciicast,
}

/// `juris replay` arguments.
#[derive(Debug, Args)]
pub struct ReplayOptions {
    /// Session id (32 hex digits, as `juris sessions list` shows it).
    pub session: String,
    #[command(flatten)]
    pub store: StoreOptions,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReplayFormat,
    /// The recording node's public key (hex) to check the signature
    /// against; without it the key the manifest names is used, which
    /// proves integrity but not which node wrote it.
    #[arg(long)]
    pub key: Option<String>,
}

fn parse_time(flag: &str, value: &str) -> anyhow::Result<u64> {
    let at = match humantime::parse_duration(value) {
        Ok(age) => SystemTime::now()
            .checked_sub(age)
            .with_context(|| format!("--{flag} {value}: too far back"))?,
        Err(_) => humantime::parse_rfc3339_weak(value).with_context(|| {
            format!("--{flag} {value}: expected RFC 3339 (2026-11-24T08:00:00Z) or an age (2h)")
        })?,
    };
    Ok(at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64)
}

/// List the recordings of a region: those in its store, and, when the
/// deployment's `node.data_dir` is on this machine, those still in the
/// node's spool (recording, waiting for upload, or quarantined).
pub async fn list(options: &ListOptions) -> anyhow::Result<()> {
    let (deployment, region, store) = options.store.open()?;
    let filter = ListFilter {
        since_ms: options
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until_ms: options
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
        connection: options.connection.clone(),
        user: options.user.clone(),
    };
    // An unreachable store does not hide what the spool knows: the
    // listing shows it, and the command still fails at the end.
    let (mut sessions, store_error) =
        match juris_record::list_sessions(&*store, &region, &filter).await {
            Ok(sessions) => (sessions, None),
            Err(e) => (Vec::new(), Some(e)),
        };
    if let Some(dir) = &deployment.node.data_dir {
        let spool = dir.join("spool");
        if spool.is_dir() && deployment.node.region == region {
            merge_spool(&mut sessions, &spool, &filter)?;
        }
    }
    sessions
        .sort_by(|a, b| (a.started_at_ms, &a.session_id).cmp(&(b.started_at_ms, &b.session_id)));
    if sessions.is_empty() && !options.json && store_error.is_none() {
        println!("no recordings in region {region}");
    }
    for s in &sessions {
        if options.json {
            println!("{}", serde_json::to_string(s)?);
            continue;
        }
        let status = s.status.map_or("recording", |st| st.as_str());
        let mut line = format!(
            "{}  {} on {}  {} → {}  {}  {} events  node {}",
            s.session_id,
            s.user,
            s.connection,
            time(s.started_at_ms),
            s.ended_at_ms.map_or_else(|| "…".into(), time),
            status,
            s.event_count,
            s.node,
        );
        if let Some(pending) = s.pending_files.filter(|n| *n > 0) {
            line.push_str(&format!("  {pending} file(s) not uploaded yet"));
        }
        if let Some(quarantined) = s.quarantined_files.filter(|n| *n > 0) {
            line.push_str(&format!(
                "  {quarantined} file(s) QUARANTINED (upload keeps failing; retried)"
            ));
        }
        println!("{line}");
    }
    match store_error {
        Some(e) => {
            bail!("cannot read region {region}'s store (only the local spool is listed above): {e}")
        }
        None => Ok(()),
    }
}

/// Spool entries replace or join the store's: a session still being
/// uploaded is shown once, with what it still has to upload.
fn merge_spool(
    sessions: &mut Vec<SessionSummary>,
    spool: &Path,
    filter: &ListFilter,
) -> anyhow::Result<()> {
    for local in juris_record::list_spool_sessions(spool, filter)? {
        match sessions
            .iter_mut()
            .find(|s| s.session_id == local.session_id)
        {
            Some(stored) => {
                stored.pending_files = local.pending_files;
                stored.quarantined_files = local.quarantined_files;
            }
            None => sessions.push(local),
        }
    }
    Ok(())
}

/// Fetch, verify and render one recording. The rendering goes to stdout;
/// the verdict to stderr. Exits non-zero (an error) when verification
/// found a problem, after showing what could be read.
pub async fn replay(options: &ReplayOptions) -> anyhow::Result<()> {
    let (_, region, store) = options.store.open()?;
    let recording = juris_record::open_recording(
        &*store,
        Some(&region),
        &options.session,
        options.key.as_deref(),
    )
    .await?;
    let out = match options.format {
        ReplayFormat::Text => juris_record::render_text(&recording.events),
        ReplayFormat::Json => juris_record::render_json(&recording.events),
        ReplayFormat::Asciicast => {
            juris_record::render_asciicast(&recording.events, &AsciicastOptions::default())
        }
    };
    print!("{out}");
    let m = &recording.manifest;
    let v = &recording.verification;
    if v.ok {
        eprintln!(
            "verified: {} events in {} chunk(s), hash chain intact, manifest signed by node {} ({} key {}), status {}",
            m.event_count,
            m.chunks.len(),
            m.node,
            if v.key_was_given {
                "given"
            } else {
                "manifest's"
            },
            v.checked_key,
            m.status.as_str(),
        );
        Ok(())
    } else {
        for problem in &v.problems {
            eprintln!("verification problem: {problem}");
        }
        bail!(
            "recording {} does NOT verify ({} problem(s)); what could be read is shown above",
            options.session,
            v.problems.len()
        )
    }
}
