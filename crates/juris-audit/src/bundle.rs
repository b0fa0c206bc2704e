//! Audit bundles: a region's sealed segments for a time range in one
//! `tar` archive compressed with zstd, with a manifest, verifiable offline.
//!
//! Layout (in this order):
//! * `manifest.json` — [`Manifest`], canonical JSON;
//! * for each segment, by node then seq: `segments/<segment>.jsonl`,
//!   `segments/<segment>.jsonl.seal.json`, and any
//!   `segments/<segment>.jsonl.torn*` the writer set aside;
//! * other evidence of the region under `recordings/…` (recording
//!   manifests, and chunks when asked for), named by their object-store
//!   keys. This crate checks their hashes against the manifest; their own
//!   signatures and chains are checked by `juris-record` (the CLI does
//!   both).
//!
//! The manifest is an index, not a source of trust: [`verify`] recomputes
//! every hash, link and range from the segments themselves and checks
//! seals against the node keys (the manifest's, or keys the auditor pins).
//! Only sealed segments are exported: an open segment's content can still
//! grow, and a seal is what a node signs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::canonical::{self, sha256_hex};
use crate::event::{GENESIS_HASH, Timestamp};
use crate::seal::Seal;
use crate::segment::{self, Link, SEAL_SUFFIX, TORN_SUFFIX};
use crate::{AuditError, Result, check_name, io_err};

/// `format` of a manifest.
pub const BUNDLE_FORMAT: &str = "juris.audit.bundle/1";
const MANIFEST: &str = "manifest.json";
const SEGMENTS: &str = "segments/";
/// Prefix of the recording entries (store keys start with it too).
pub const RECORDINGS: &str = "recordings/";
/// Largest archive entry the verifier reads (segments are 16 MiB by
/// default); bigger entries are reported instead of exhausting memory.
const MAX_ENTRY_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub region: String,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub created: Timestamp,
    pub nodes: Vec<ManifestNode>,
    pub segments: Vec<ManifestSegment>,
    /// Every other entry of the archive with its hash.
    pub files: Vec<ManifestFile>,
    /// Where the evidence was read from; absent when the bundle was built
    /// from directories rather than from the region's object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Residency>,
}

/// The residency section: the region's store the evidence came from, and
/// the object key of every piece of evidence in the bundle. [`verify`]
/// checks that each key lies under the bundle region's own prefixes
/// (`audit/<region>/…`, `recordings/<region>/…`), that every segment, seal
/// and recording entry is accounted for, and that the store's cloud
/// region is one the jurisdiction allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Residency {
    /// The store, e.g. `s3://evidence-eu` or `file:///var/lib/juris/evidence`.
    pub store: String,
    /// The store's cloud region (S3), if it has one.
    pub cloud_region: Option<String>,
    /// The cloud regions the region's jurisdiction allows (empty: not
    /// constrained).
    pub cloud_regions: Vec<String>,
    /// Every evidence entry with the store key it was read from.
    pub objects: Vec<ResidencyObject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidencyObject {
    /// Path inside the archive.
    pub entry: String,
    /// Object key in the region's store.
    pub key: String,
}

/// The store an export reads from (see [`Residency`]).
#[derive(Debug, Clone)]
pub struct ResidencySource {
    pub store: String,
    pub cloud_region: Option<String>,
    pub cloud_regions: Vec<String>,
}

/// Object key of an audit file of `node` in `region`'s store.
pub fn audit_object_key(region: &str, node: &str, file: &str) -> String {
    format!("audit/{region}/{node}/{file}")
}

/// One node's key and the ends of its part of the chain in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNode {
    pub node: String,
    pub public_key: String,
    pub first_seq: u64,
    pub first_prev_hash: String,
    /// The chain head: the last record in the bundle.
    pub head_seq: u64,
    pub head_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSegment {
    /// Segment file name (inside `segments/`).
    pub name: String,
    pub node: String,
    pub sha256: String,
    pub size: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_prev_hash: String,
    pub last_hash: String,
    pub first_time: Timestamp,
    pub last_time: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the archive.
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Directories holding segments (one per node, or shared).
    pub dirs: Vec<PathBuf>,
    pub region: String,
    /// Segments whose time range overlaps `[since, until]` are included whole.
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// The bundle's creation time (an input, like every time here).
    pub created: Timestamp,
    pub out: PathBuf,
    /// More evidence to include, by archive path (each under
    /// [`RECORDINGS`]).
    pub extra: Vec<(String, Vec<u8>)>,
    /// Set when `dirs` hold segments downloaded from the region's store
    /// (one directory per node, named after it) and `extra` entries are
    /// named by their store keys: the bundle then gets a residency section.
    pub residency: Option<ResidencySource>,
}

/// What an export wrote, and what it left out and why.
#[derive(Debug, Clone, Default)]
pub struct ExportSummary {
    pub segments: usize,
    pub records: u64,
    pub nodes: Vec<String>,
    pub notes: Vec<String>,
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} segments, {} records from {} nodes ({})",
            self.segments,
            self.records,
            self.nodes.len(),
            self.nodes.join(", ")
        )?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

struct Collected {
    name: String,
    seal: Seal,
    seal_bytes: Vec<u8>,
    bytes: Vec<u8>,
    torn: Vec<(String, Vec<u8>)>,
}

/// Build a bundle of the region's sealed segments overlapping the range.
pub fn export(options: &ExportOptions) -> Result<ExportSummary> {
    check_name("region name", &options.region)?;
    let mut summary = ExportSummary::default();
    let mut collected: BTreeMap<(String, u64), Collected> = BTreeMap::new();
    let mut other_regions = 0usize;
    for dir in &options.dirs {
        let mut names: Vec<String> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        for name in &names {
            let Some((node, first_seq)) = segment::parse_name(name) else {
                continue;
            };
            let seal_path = dir.join(format!("{name}{SEAL_SUFFIX}"));
            let seal_bytes = match fs::read(&seal_path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    summary.notes.push(format!(
                        "{}: not sealed yet (still open, or awaiting recovery by its node); not included",
                        dir.join(name).display()
                    ));
                    continue;
                }
                Err(e) => return Err(io_err(&seal_path)(e)),
            };
            let seal = Seal::from_file_bytes(&seal_bytes).map_err(|e| AuditError::Corrupt {
                path: seal_path.clone(),
                reason: e.to_string(),
            })?;
            if seal.region != options.region {
                other_regions += 1;
                continue;
            }
            let overlaps = options.since.is_none_or(|s| seal.last_time >= s)
                && options.until.is_none_or(|u| seal.first_time <= u);
            if !overlaps {
                continue;
            }
            let path = dir.join(name);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            if sha256_hex(&bytes) != seal.sha256 {
                // Exported as found: hiding it would hide the evidence of
                // tampering; verify reports it.
                summary.notes.push(format!(
                    "{}: does not match its seal; included as found",
                    path.display()
                ));
            }
            let mut torn = Vec::new();
            for other in &names {
                if other.starts_with(&format!("{name}{TORN_SUFFIX}")) {
                    let p = dir.join(other);
                    torn.push((other.clone(), fs::read(&p).map_err(io_err(&p))?));
                }
            }
            let key = (node.to_string(), first_seq);
            if collected.contains_key(&key) {
                return Err(AuditError::Export(format!(
                    "segment {name} is in more than one of the given directories"
                )));
            }
            summary.records += seal.last_seq.saturating_sub(seal.first_seq) + 1;
            collected.insert(
                key,
                Collected {
                    name: name.clone(),
                    seal,
                    seal_bytes,
                    bytes,
                    torn,
                },
            );
        }
    }
    if other_regions > 0 {
        summary.notes.push(format!(
            "{other_regions} segments of other regions left out (a bundle holds one region)"
        ));
    }

    let mut nodes: Vec<ManifestNode> = Vec::new();
    let mut segments = Vec::new();
    let mut files = Vec::new();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for ((node, _), c) in &collected {
        match nodes.last_mut() {
            Some(n) if &n.node == node => {
                if n.public_key != c.seal.public_key {
                    summary.notes.push(format!(
                        "{}: sealed with key {} but the node's earlier segments with {}",
                        c.name, c.seal.public_key, n.public_key
                    ));
                }
                n.head_seq = c.seal.last_seq;
                n.head_hash = c.seal.last_hash.clone();
            }
            _ => nodes.push(ManifestNode {
                node: node.clone(),
                public_key: c.seal.public_key.clone(),
                first_seq: c.seal.first_seq,
                first_prev_hash: c.seal.first_prev_hash.clone(),
                head_seq: c.seal.last_seq,
                head_hash: c.seal.last_hash.clone(),
            }),
        }
        segments.push(ManifestSegment {
            name: c.name.clone(),
            node: node.clone(),
            sha256: sha256_hex(&c.bytes),
            size: c.bytes.len() as u64,
            first_seq: c.seal.first_seq,
            last_seq: c.seal.last_seq,
            first_prev_hash: c.seal.first_prev_hash.clone(),
            last_hash: c.seal.last_hash.clone(),
            first_time: c.seal.first_time,
            last_time: c.seal.last_time,
        });
        let mut add = |name: String, bytes: &[u8]| {
            files.push(ManifestFile {
                name: name.clone(),
                sha256: sha256_hex(bytes),
                size: bytes.len() as u64,
            });
            entries.push((name, bytes.to_vec()));
        };
        add(format!("{SEGMENTS}{}", c.name), &c.bytes);
        add(format!("{SEGMENTS}{}{SEAL_SUFFIX}", c.name), &c.seal_bytes);
        for (name, bytes) in &c.torn {
            add(format!("{SEGMENTS}{name}"), bytes);
        }
    }
    for (name, bytes) in &options.extra {
        if !is_recording_entry(name) {
            return Err(AuditError::Export(format!(
                "{name}: extra bundle entries live under {RECORDINGS} and have plain path segments"
            )));
        }
        files.push(ManifestFile {
            name: name.clone(),
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
        });
        entries.push((name.clone(), bytes.clone()));
    }
    let residency = options.residency.as_ref().map(|source| Residency {
        store: source.store.clone(),
        cloud_region: source.cloud_region.clone(),
        cloud_regions: source.cloud_regions.clone(),
        objects: files
            .iter()
            .filter_map(|f| {
                let key = expected_key(&options.region, &f.name)?;
                Some(ResidencyObject {
                    entry: f.name.clone(),
                    key,
                })
            })
            .collect(),
    });
    summary.segments = segments.len();
    summary.nodes = nodes.iter().map(|n| n.node.clone()).collect();
    let manifest = Manifest {
        format: BUNDLE_FORMAT.to_string(),
        region: options.region.clone(),
        since: options.since,
        until: options.until,
        created: options.created,
        nodes,
        segments,
        files,
        residency,
    };
    let mut manifest_bytes = canonical::to_string(&serde_json::to_value(&manifest)?).into_bytes();
    manifest_bytes.push(b'\n');
    entries.insert(0, (MANIFEST.to_string(), manifest_bytes));

    // Written beside the target and renamed, so a failed export never
    // leaves a truncated bundle under the requested name.
    let partial = options.out.with_extension("partial");
    let file = File::create(&partial).map_err(io_err(&partial))?;
    let mtime = u64::try_from(options.created.unix_micros() / 1_000_000).unwrap_or(0);
    write_archive(file, &entries, mtime)
        .and_then(|file| file.sync_all())
        .map_err(io_err(&partial))?;
    fs::rename(&partial, &options.out).map_err(io_err(&options.out))?;
    Ok(summary)
}

/// The store key an evidence entry of a `region` bundle is read from:
/// segments (and their seals and torn tails) under `audit/<region>/<node>/`,
/// recording entries under their own names. `None` for anything else.
fn expected_key(region: &str, entry: &str) -> Option<String> {
    if is_recording_entry(entry) {
        return Some(entry.to_string());
    }
    let file = entry.strip_prefix(SEGMENTS)?;
    let segment = file
        .split_once(TORN_SUFFIX)
        .map_or(file, |(segment, _)| segment);
    let segment = segment.strip_suffix(SEAL_SUFFIX).unwrap_or(segment);
    let (node, _) = segment::parse_name(segment)?;
    Some(audit_object_key(region, node, file))
}

/// Check the residency section (see [`Residency`]).
fn check_residency(
    report: &mut Report,
    manifest: &Manifest,
    files: &BTreeMap<String, (String, u64)>,
) {
    let Some(residency) = &manifest.residency else {
        report.residency = Some(
            "none: this bundle was built from directories, not from the region's store".into(),
        );
        return;
    };
    let before = report.problems.len();
    let mut keys: BTreeMap<&str, &str> = BTreeMap::new();
    for object in &residency.objects {
        if keys.insert(&object.entry, &object.key).is_some() {
            report.problem(
                Some(MANIFEST),
                None,
                None,
                format!("residency: {} listed twice", object.entry),
            );
        }
        if !files.contains_key(&object.entry) {
            report.problem(
                Some(&object.entry),
                None,
                None,
                "residency: listed but not in the bundle".into(),
            );
        }
        let own = [
            format!("audit/{}/", manifest.region),
            format!("{RECORDINGS}{}/", manifest.region),
        ];
        if !own
            .iter()
            .any(|prefix| object.key.starts_with(prefix.as_str()))
        {
            report.problem(
                Some(&object.entry),
                None,
                None,
                format!(
                    "residency: read from `{}`, outside region {}'s prefixes ({})",
                    object.key,
                    manifest.region,
                    own.join(", ")
                ),
            );
        }
    }
    for entry in files.keys() {
        let Some(expected) = expected_key(&manifest.region, entry) else {
            continue;
        };
        match keys.get(entry.as_str()) {
            None => report.problem(
                Some(entry),
                None,
                None,
                "residency: evidence without a store key in the residency section".into(),
            ),
            Some(key) if *key != expected => report.problem(
                Some(entry),
                None,
                None,
                format!(
                    "residency: read from `{key}`, which is not under region {}'s `{expected}`",
                    manifest.region
                ),
            ),
            Some(_) => {}
        }
    }
    if !residency.cloud_regions.is_empty() {
        match &residency.cloud_region {
            Some(cloud) if residency.cloud_regions.contains(cloud) => {}
            other => report.problem(
                Some(MANIFEST),
                None,
                None,
                format!(
                    "residency: the store's cloud region {} is not one region {} allows ({})",
                    other.as_deref().unwrap_or("(none)"),
                    manifest.region,
                    residency.cloud_regions.join(", ")
                ),
            ),
        }
    }
    let cloud = residency
        .cloud_region
        .as_ref()
        .map(|c| format!(" in cloud region {c}"))
        .unwrap_or_default();
    report.residency = Some(format!(
        "{} objects read from region {}'s store {}{cloud}: {}",
        residency.objects.len(),
        manifest.region,
        residency.store,
        if report.problems.len() == before {
            "every one under the region's own prefixes"
        } else {
            "PROBLEMS (below)"
        }
    ));
}

/// `recordings/` followed by plain path segments (no empty, `.`, `..` or
/// hidden ones).
fn is_recording_entry(name: &str) -> bool {
    name.strip_prefix(RECORDINGS).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|part| !part.is_empty() && !part.starts_with('.'))
    })
}

/// The `recordings/…` entries of a bundle, each at most the verifier's
/// entry limit, for the recording checks `juris-record` does.
pub fn recording_entries(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut archive = tar::Archive::new(zstd::Decoder::new(file).map_err(io_err(path))?);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        let name = entry
            .path()
            .map_err(io_err(path))?
            .to_string_lossy()
            .into_owned();
        if !is_recording_entry(&name) || entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_ENTRY_BYTES)
            .read_to_end(&mut bytes)
            .map_err(io_err(path))?;
        out.push((name, bytes));
    }
    Ok(out)
}

/// Write `entries` as a zstd-compressed tar archive (with zstd's content
/// checksum, so corruption of the compressed stream is caught on read).
pub(crate) fn write_archive<W: Write>(
    out: W,
    entries: &[(String, Vec<u8>)],
    mtime: u64,
) -> std::io::Result<W> {
    let mut encoder = zstd::Encoder::new(out, 3)?;
    encoder.include_checksum(true)?;
    let mut builder = tar::Builder::new(encoder);
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, name, bytes.as_slice())?;
    }
    builder.into_inner()?.finish()
}

/// Read every regular entry of a bundle (tests use this to tamper).
#[cfg(test)]
pub(crate) fn read_archive(bytes: &[u8]) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut archive = tar::Archive::new(zstd::Decoder::new(bytes)?);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        out.push((name, data));
    }
    Ok(out)
}

/// One finding of [`verify`], with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path inside the bundle (`None`: the bundle as a whole).
    pub file: Option<String>,
    /// 1-based line in that file.
    pub line: Option<u64>,
    pub seq: Option<u64>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file.as_deref().unwrap_or("bundle"))?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One node's chain as found in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node: String,
    pub public_key: Option<String>,
    /// Whether the key was given by the caller rather than read from the bundle.
    pub pinned: bool,
    pub segments: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub region: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub created: Option<Timestamp>,
    pub nodes: Vec<NodeReport>,
    pub segments: usize,
    pub records: u64,
    pub problems: Vec<Problem>,
    /// What the residency section says (see [`Residency`]).
    pub residency: Option<String>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(
        &mut self,
        file: Option<&str>,
        line: Option<u64>,
        seq: Option<u64>,
        message: String,
    ) {
        self.problems.push(Problem {
            file: file.map(str::to_string),
            line,
            seq,
            message,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |t: Option<Timestamp>| t.map_or_else(|| "-".to_string(), |t| t.to_string());
        writeln!(
            f,
            "bundle: region {}, range {} .. {}, created {}",
            self.region.as_deref().unwrap_or("?"),
            show(self.since),
            show(self.until),
            show(self.created)
        )?;
        for n in &self.nodes {
            writeln!(
                f,
                "node {}: seq {}..{} in {} segments ({} records), head {}, key {} ({})",
                n.node,
                n.first_seq.map_or("?".into(), |s| s.to_string()),
                n.head_seq.map_or("?".into(), |s| s.to_string()),
                n.segments,
                n.records,
                n.head_hash.as_deref().unwrap_or("?"),
                n.public_key.as_deref().unwrap_or("none"),
                if n.pinned {
                    "pinned"
                } else {
                    "from the bundle"
                }
            )?;
        }
        writeln!(
            f,
            "{} nodes, {} segments, {} records",
            self.nodes.len(),
            self.segments,
            self.records
        )?;
        if let Some(residency) = &self.residency {
            writeln!(f, "residency: {residency}")?;
        }
        if self.is_ok() {
            writeln!(
                f,
                "VERIFIED: every file hash, record hash, chain link and seal signature checks"
            )?;
            if self.nodes.iter().any(|n| !n.pinned) {
                writeln!(
                    f,
                    "note: keys marked `from the bundle` prove integrity only if they are your nodes' keys; compare them, or pin them with --key NODE=KEY"
                )?;
            }
            Ok(())
        } else {
            writeln!(f, "FAILED: {} problems", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  {p}")?;
            }
            Ok(())
        }
    }
}

/// Verify a bundle file using the public keys it carries.
pub fn verify(path: &Path) -> Result<Report> {
    verify_with_keys(path, &BTreeMap::new())
}

/// Verify a bundle file; `trusted` maps node names to public keys (hex)
/// that override the bundle's own.
pub fn verify_with_keys(path: &Path, trusted: &BTreeMap<String, String>) -> Result<Report> {
    let file = File::open(path).map_err(io_err(path))?;
    Ok(verify_reader(file, trusted))
}

struct SegmentFacts {
    node: String,
    first_seq_by_name: u64,
    sha256: String,
    size: u64,
    scan: segment::Scan,
}

/// Verify a bundle read from `reader`. Never fails: damage of any kind is a
/// problem in the report.
pub fn verify_reader(reader: impl Read, trusted: &BTreeMap<String, String>) -> Report {
    let mut report = Report::default();
    let mut manifest: Option<Manifest> = None;
    // path in archive -> (sha256, size)
    let mut files: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut segments: BTreeMap<String, SegmentFacts> = BTreeMap::new();
    let mut seals: BTreeMap<String, Seal> = BTreeMap::new();

    let decoder = match zstd::Decoder::new(reader) {
        Ok(d) => d,
        Err(e) => {
            report.problem(None, None, None, format!("cannot read zstd stream: {e}"));
            return report;
        }
    };
    let mut archive = tar::Archive::new(decoder);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => {
            report.problem(None, None, None, format!("cannot read archive: {e}"));
            return report;
        }
    };
    for (index, entry) in entries.enumerate() {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                report.problem(None, None, None, format!("archive is damaged: {e}"));
                break;
            }
        };
        let name = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => {
                report.problem(None, None, None, format!("entry {index}: bad path: {e}"));
                continue;
            }
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            report.problem(Some(&name), None, None, "not a regular file".into());
            continue;
        }
        let inner = name.strip_prefix(SEGMENTS);
        let well_named = name == MANIFEST
            || is_recording_entry(&name)
            || inner.is_some_and(|i| !i.is_empty() && !i.contains('/') && !i.starts_with('.'));
        if !well_named {
            report.problem(Some(&name), None, None, "unexpected entry".into());
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_ENTRY_BYTES {
            report.problem(
                Some(&name),
                None,
                None,
                format!("{size} bytes, more than the {MAX_ENTRY_BYTES} this verifier reads"),
            );
            continue;
        }
        let mut bytes = Vec::new();
        if let Err(e) = (&mut entry).take(MAX_ENTRY_BYTES).read_to_end(&mut bytes) {
            report.problem(Some(&name), None, None, format!("archive is damaged: {e}"));
            break;
        }
        if name == MANIFEST {
            if index != 0 || manifest.is_some() {
                report.problem(
                    Some(&name),
                    None,
                    None,
                    "must be the first entry, once".into(),
                );
                continue;
            }
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) if m.format == BUNDLE_FORMAT => {
                    report.region = Some(m.region.clone());
                    report.since = m.since;
                    report.until = m.until;
                    report.created = Some(m.created);
                    manifest = Some(m);
                }
                Ok(m) => {
                    report.problem(
                        Some(&name),
                        None,
                        None,
                        format!("unknown format `{}`", m.format),
                    );
                    return report;
                }
                Err(e) => {
                    report.problem(Some(&name), None, None, format!("unreadable: {e}"));
                    return report;
                }
            }
            continue;
        }
        let Some(m) = &manifest else {
            report.problem(
                None,
                None,
                None,
                "manifest.json is not the first entry".into(),
            );
            return report;
        };
        if files
            .insert(name.clone(), (sha256_hex(&bytes), bytes.len() as u64))
            .is_some()
        {
            report.problem(Some(&name), None, None, "appears more than once".into());
        }
        if is_recording_entry(&name) {
            // Hash checked against the manifest below; content by juris-record.
            continue;
        }
        let inner = inner.unwrap_or_default();
        if let Some((node, first_seq)) = segment::parse_name(inner) {
            let scan = segment::scan(&bytes, node, Some(&m.region), first_seq);
            segments.insert(
                inner.to_string(),
                SegmentFacts {
                    node: node.to_string(),
                    first_seq_by_name: first_seq,
                    sha256: sha256_hex(&bytes),
                    size: bytes.len() as u64,
                    scan,
                },
            );
        } else if let Some(segment_name) = inner.strip_suffix(SEAL_SUFFIX) {
            match Seal::from_file_bytes(&bytes) {
                Ok(seal) => {
                    seals.insert(segment_name.to_string(), seal);
                }
                Err(e) => report.problem(Some(&name), None, None, format!("unreadable seal: {e}")),
            }
        } else if !inner.contains(TORN_SUFFIX) {
            report.problem(Some(&name), None, None, "unexpected entry".into());
        }
    }
    // The tar reader stops at the end-of-archive marker; read the rest of
    // the stream too, so the zstd checksum is checked and nothing (padding
    // included) can be changed unnoticed.
    let mut rest = archive.into_inner();
    let mut tail = [0u8; 8192];
    loop {
        match rest.read(&mut tail) {
            Ok(0) => break,
            Ok(n) if tail[..n].iter().all(|b| *b == 0) => {}
            Ok(_) => {
                report.problem(None, None, None, "data after the end of the archive".into());
                break;
            }
            Err(e) => {
                report.problem(None, None, None, format!("archive is damaged: {e}"));
                break;
            }
        }
    }
    let Some(manifest) = manifest else {
        report.problem(None, None, None, "no manifest.json".into());
        return report;
    };
    check_bundle(&mut report, &manifest, &files, &segments, &seals, trusted);
    check_residency(&mut report, &manifest, &files);
    report
}

fn check_bundle(
    report: &mut Report,
    manifest: &Manifest,
    files: &BTreeMap<String, (String, u64)>,
    segments: &BTreeMap<String, SegmentFacts>,
    seals: &BTreeMap<String, Seal>,
    trusted: &BTreeMap<String, String>,
) {
    // Every file against the manifest's list, both ways.
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    for f in &manifest.files {
        match files.get(&f.name) {
            None => report.problem(
                Some(&f.name),
                None,
                None,
                "listed in the manifest but missing".into(),
            ),
            Some((sha, size)) => {
                if *sha != f.sha256 || *size != f.size {
                    report.problem(
                        Some(&f.name),
                        None,
                        None,
                        format!("sha256 {sha} ({size} bytes) does not match the manifest's {} ({} bytes)", f.sha256, f.size),
                    );
                }
            }
        }
    }
    for name in files.keys() {
        if !listed.contains(name.as_str()) {
            report.problem(Some(name), None, None, "not listed in the manifest".into());
        }
    }

    // Keys: pinned ones win; the bundle's own are reported as such.
    let mut keys: BTreeMap<&str, (String, bool)> = BTreeMap::new();
    for n in &manifest.nodes {
        match trusted.get(&n.node) {
            Some(pinned) => {
                if *pinned != n.public_key {
                    report.problem(
                        Some(MANIFEST),
                        None,
                        None,
                        format!(
                            "node {}: public key {} is not the pinned key {pinned}",
                            n.node, n.public_key
                        ),
                    );
                }
                keys.insert(&n.node, (pinned.clone(), true));
            }
            None => {
                keys.insert(&n.node, (n.public_key.clone(), false));
            }
        }
    }
    for node in trusted.keys() {
        if !keys.contains_key(node.as_str()) {
            keys.insert(node, (trusted[node].clone(), true));
        }
    }

    let manifest_segments: BTreeMap<&str, &ManifestSegment> = manifest
        .segments
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    for s in &manifest.segments {
        if !segments.contains_key(&s.name)
            && !listed.contains(format!("{SEGMENTS}{}", s.name).as_str())
        {
            report.problem(
                Some(&format!("{SEGMENTS}{}", s.name)),
                None,
                None,
                "segment in the manifest but missing".into(),
            );
        }
    }
    for name in seals.keys() {
        if !segments.contains_key(name) {
            report.problem(
                Some(&format!("{SEGMENTS}{name}{SEAL_SUFFIX}")),
                None,
                None,
                "seal of a segment that is not in the bundle".into(),
            );
        }
    }

    // Per segment: its lines, its seal, its manifest entry, its range.
    let mut by_node: BTreeMap<&str, Vec<(&str, &SegmentFacts)>> = BTreeMap::new();
    for (name, facts) in segments {
        let path = format!("{SEGMENTS}{name}");
        let file = Some(path.as_str());
        by_node
            .entry(facts.node.as_str())
            .or_default()
            .push((name, facts));
        report.segments += 1;
        report.records += facts.scan.records;
        for finding in &facts.scan.findings {
            report.problem(
                file,
                Some(finding.line),
                finding.seq,
                finding.message.clone(),
            );
        }
        let (Some(first), Some(last)) = (&facts.scan.first, &facts.scan.last) else {
            report.problem(file, None, None, "holds no records".into());
            continue;
        };
        let actual = ManifestSegment {
            name: name.clone(),
            node: facts.node.clone(),
            sha256: facts.sha256.clone(),
            size: facts.size,
            first_seq: first.seq,
            last_seq: last.seq,
            first_prev_hash: first.prev_hash.clone(),
            last_hash: last.hash.clone(),
            first_time: first.time,
            last_time: last.time,
        };
        match manifest_segments.get(name.as_str()) {
            None => report.problem(
                file,
                None,
                None,
                "not listed in the manifest's segments".into(),
            ),
            Some(listed) => {
                for diff in differences(listed, &actual) {
                    report.problem(file, None, None, format!("manifest says {diff}"));
                }
            }
        }
        let seal_path = format!("{path}{SEAL_SUFFIX}");
        match seals.get(name) {
            None => report.problem(file, None, None, "has no seal".into()),
            Some(seal) => check_seal(
                report,
                &seal_path,
                seal,
                &actual,
                &manifest.region,
                keys.get(facts.node.as_str()),
            ),
        }
        let in_range = manifest.since.is_none_or(|s| last.time >= s)
            && manifest.until.is_none_or(|u| first.time <= u);
        if !in_range {
            report.problem(file, None, None, "outside the bundle's time range".into());
        }
    }

    // Across segments of one node: seq contiguity, hash links, time order.
    for (node, mut list) in by_node {
        list.sort_by_key(|(_, f)| f.first_seq_by_name);
        let (key, pinned) = match keys.get(node) {
            Some((k, p)) => (Some(k.clone()), *p),
            None => {
                report.problem(
                    Some(MANIFEST),
                    None,
                    None,
                    format!("no public key for node {node}"),
                );
                (None, false)
            }
        };
        let mut previous: Option<(&str, &Link)> = None;
        let mut first_link: Option<&Link> = None;
        for (name, facts) in &list {
            let file = format!("{SEGMENTS}{name}");
            let (Some(first), Some(last)) = (&facts.scan.first, &facts.scan.last) else {
                continue;
            };
            if first_link.is_none() {
                first_link = Some(first);
                if first.seq == 1 && first.prev_hash != GENESIS_HASH {
                    report.problem(
                        Some(&file),
                        Some(1),
                        Some(1),
                        "first record of the chain must have the all-zero prev_hash".into(),
                    );
                }
            }
            if let Some((prev_name, prev)) = previous {
                let expected = prev.seq.saturating_add(1);
                if first.seq > expected {
                    report.problem(
                        Some(&file),
                        Some(1),
                        Some(first.seq),
                        format!(
                            "gap: seq {expected}..{} of node {node} missing after {prev_name}",
                            first.seq - 1
                        ),
                    );
                } else if first.seq < expected {
                    report.problem(
                        Some(&file),
                        Some(1),
                        Some(first.seq),
                        format!("overlaps {prev_name}: seq {} again", first.seq),
                    );
                }
                if first.prev_hash != prev.hash {
                    report.problem(
                        Some(&file),
                        Some(1),
                        Some(first.seq),
                        format!(
                            "prev_hash does not match the last hash of {prev_name} (seq {})",
                            prev.seq
                        ),
                    );
                }
                if first.time < prev.time {
                    report.problem(
                        Some(&file),
                        Some(1),
                        Some(first.seq),
                        format!("time goes back from {prev_name}"),
                    );
                }
            }
            previous = Some((name, last));
        }
        if let Some(m) = manifest.nodes.iter().find(|n| n.node == node) {
            if let Some(first) = first_link
                && (m.first_seq != first.seq || m.first_prev_hash != first.prev_hash)
            {
                report.problem(
                    Some(MANIFEST),
                    None,
                    None,
                    format!("node {node}: first record does not match the manifest"),
                );
            }
            if let Some((_, last)) = previous
                && (m.head_seq != last.seq || m.head_hash != last.hash)
            {
                report.problem(
                    Some(MANIFEST),
                    None,
                    Some(last.seq),
                    format!(
                        "node {node}: chain head is seq {} {} but the manifest says seq {} {}",
                        last.seq, last.hash, m.head_seq, m.head_hash
                    ),
                );
            }
        } else {
            report.problem(
                Some(MANIFEST),
                None,
                None,
                format!("node {node} is not listed"),
            );
        }
        report.nodes.push(NodeReport {
            node: node.to_string(),
            public_key: key,
            pinned,
            segments: list.len(),
            records: list.iter().map(|(_, f)| f.scan.records).sum(),
            first_seq: first_link.map(|l| l.seq),
            head_seq: previous.map(|(_, l)| l.seq),
            head_hash: previous.map(|(_, l)| l.hash.clone()),
        });
    }
    for n in &manifest.nodes {
        if !report.nodes.iter().any(|r| r.node == n.node) {
            report.problem(
                Some(MANIFEST),
                None,
                None,
                format!("node {} has no segment in the bundle", n.node),
            );
        }
    }
}

fn check_seal(
    report: &mut Report,
    seal_path: &str,
    seal: &Seal,
    actual: &ManifestSegment,
    region: &str,
    key: Option<&(String, bool)>,
) {
    let file = Some(seal_path);
    match key {
        Some((key, _)) => {
            if let Err(e) = seal.verify(key) {
                report.problem(file, None, None, format!("seal: {e} (key {key})"));
            }
            if seal.public_key != *key {
                report.problem(
                    file,
                    None,
                    None,
                    format!("sealed with key {}, not the node's {key}", seal.public_key),
                );
            }
        }
        None => report.problem(file, None, None, "no key to check the seal with".into()),
    }
    let mut claims = Vec::new();
    let mut claim = |what: &str, sealed: String, found: String| {
        if sealed != found {
            claims.push(format!(
                "seal says {what} {sealed}, the segment has {found}"
            ));
        }
    };
    claim("segment", seal.segment.clone(), actual.name.clone());
    claim("node", seal.node.clone(), actual.node.clone());
    claim("region", seal.region.clone(), region.to_string());
    claim("sha256", seal.sha256.clone(), actual.sha256.clone());
    claim("size", seal.size.to_string(), actual.size.to_string());
    claim(
        "first_seq",
        seal.first_seq.to_string(),
        actual.first_seq.to_string(),
    );
    claim(
        "last_seq",
        seal.last_seq.to_string(),
        actual.last_seq.to_string(),
    );
    claim(
        "first_prev_hash",
        seal.first_prev_hash.clone(),
        actual.first_prev_hash.clone(),
    );
    claim(
        "last_hash",
        seal.last_hash.clone(),
        actual.last_hash.clone(),
    );
    claim(
        "first_time",
        seal.first_time.to_string(),
        actual.first_time.to_string(),
    );
    claim(
        "last_time",
        seal.last_time.to_string(),
        actual.last_time.to_string(),
    );
    for c in claims {
        report.problem(file, None, None, c);
    }
}

/// Human-readable differences between a manifest's segment entry and the
/// segment as found.
fn differences(listed: &ManifestSegment, actual: &ManifestSegment) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what} {a}, the segment has {b}"));
        }
    };
    cmp("node", listed.node.clone(), actual.node.clone());
    cmp("sha256", listed.sha256.clone(), actual.sha256.clone());
    cmp("size", listed.size.to_string(), actual.size.to_string());
    cmp(
        "first_seq",
        listed.first_seq.to_string(),
        actual.first_seq.to_string(),
    );
    cmp(
        "last_seq",
        listed.last_seq.to_string(),
        actual.last_seq.to_string(),
    );
    cmp(
        "first_prev_hash",
        listed.first_prev_hash.clone(),
        actual.first_prev_hash.clone(),
    );
    cmp(
        "last_hash",
        listed.last_hash.clone(),
        actual.last_hash.clone(),
    );
    cmp(
        "first_time",
        listed.first_time.to_string(),
        actual.first_time.to_string(),
    );
    cmp(
        "last_time",
        listed.last_time.to_string(),
        actual.last_time.to_string(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{key, t, write_chain};
    use proptest::prelude::*;

    type Entries = Vec<(String, Vec<u8>)>;

    fn export_dirs(dirs: &[&Path], region: &str, out: &Path) -> ExportSummary {
        export(&ExportOptions {
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
            region: region.into(),
            since: None,
            until: None,
            created: t(1000),
            out: out.to_path_buf(),
            extra: Vec::new(),
            residency: None,
        })
        .unwrap()
    }

    /// A two-node bundle: n1 with 7 records in segments of 3 (1-3, 4-6,
    /// 7), n2 with 4 records in one segment.
    fn two_node_bundle() -> (tempfile::TempDir, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));
        write_chain(&d1, "n1", "eu-west", 1, 7, 3);
        write_chain(&d2, "n2", "eu-west", 2, 4, 10);
        let out = tmp.path().join("bundle.tar.zst");
        let summary = export_dirs(&[&d1, &d2], "eu-west", &out);
        assert_eq!((summary.segments, summary.records), (4, 11));
        let bytes = fs::read(&out).unwrap();
        (tmp, bytes)
    }

    fn check(bytes: &[u8]) -> Report {
        verify_reader(bytes, &BTreeMap::new())
    }

    fn manifest_of(entries: &Entries) -> Manifest {
        serde_json::from_slice(&entries[0].1).unwrap()
    }

    /// Tamper like an attacker who rebuilds the archive and, to hide the
    /// change, updates every file and segment hash in the manifest (the
    /// manifest is unsigned, so this is always possible).
    fn tamper(bundle: &[u8], edit: impl FnOnce(&mut Entries, &mut Manifest)) -> Report {
        let mut entries = read_archive(bundle).unwrap();
        let mut manifest = manifest_of(&entries);
        edit(&mut entries, &mut manifest);
        manifest
            .files
            .retain(|f| entries.iter().any(|(n, _)| *n == f.name));
        for f in &mut manifest.files {
            let bytes = &entries.iter().find(|(n, _)| *n == f.name).unwrap().1;
            f.sha256 = sha256_hex(bytes);
            f.size = bytes.len() as u64;
        }
        for s in &mut manifest.segments {
            let name = format!("{SEGMENTS}{}", s.name);
            if let Some((_, bytes)) = entries.iter().find(|(n, _)| *n == name) {
                s.sha256 = sha256_hex(bytes);
                s.size = bytes.len() as u64;
            }
        }
        entries[0].1 = serde_json::to_vec(&manifest).unwrap();
        let out = write_archive(Vec::new(), &entries, 0).unwrap();
        check(&out)
    }

    fn entry<'a>(entries: &'a mut Entries, name: &str) -> &'a mut Vec<u8> {
        &mut entries.iter_mut().find(|(n, _)| n == name).unwrap().1
    }

    const S4: &str = "segments/n1-00000000000000000004.jsonl";
    const S7: &str = "segments/n1-00000000000000000007.jsonl";

    fn messages(report: &Report) -> String {
        report.problems.iter().map(|p| format!("{p}\n")).collect()
    }

    #[test]
    fn a_two_node_bundle_verifies() {
        let (_tmp, bundle) = two_node_bundle();
        let report = check(&bundle);
        assert!(report.is_ok(), "{report}");
        assert_eq!((report.segments, report.records), (4, 11));
        let n1 = &report.nodes[0];
        assert_eq!(
            (n1.node.as_str(), n1.first_seq, n1.head_seq),
            ("n1", Some(1), Some(7))
        );
        assert_eq!(n1.public_key, Some(key(1).public_key_hex()));
        assert!(!n1.pinned);
        assert_eq!(report.nodes[1].head_seq, Some(4));
        let text = report.to_string();
        assert!(text.contains("VERIFIED"), "{text}");
        assert!(text.contains("from the bundle"), "{text}");
        // The untampered rebuild used by the tamper tests also verifies.
        let rebuilt = tamper(&bundle, |_, _| {});
        assert!(rebuilt.is_ok(), "{rebuilt}");
    }

    #[test]
    fn recording_entries_are_hashed_listed_and_given_back() {
        let tmp = tempfile::tempdir().unwrap();
        let d1 = tmp.path().join("n1");
        write_chain(&d1, "n1", "eu-west", 1, 4, 3);
        let out = tmp.path().join("bundle.tar.zst");
        let manifest_key = "recordings/eu-west/2026/01/01/0123/manifest.json";
        let mut options = ExportOptions {
            dirs: vec![d1],
            region: "eu-west".into(),
            since: None,
            until: None,
            created: t(1000),
            out: out.clone(),
            extra: vec![(manifest_key.into(), b"{\"signed\":true}".to_vec())],
            residency: None,
        };
        export(&options).unwrap();
        let bundle = fs::read(&out).unwrap();
        assert!(check(&bundle).is_ok(), "{}", check(&bundle));
        assert_eq!(
            recording_entries(&out).unwrap(),
            vec![(manifest_key.to_string(), b"{\"signed\":true}".to_vec())]
        );
        // A replaced recording file is caught by its hash.
        let mut entries = read_archive(&bundle).unwrap();
        *entry(&mut entries, manifest_key) = b"{\"signed\":false}".to_vec();
        let text = messages(&check(&write_archive(Vec::new(), &entries, 0).unwrap()));
        assert!(
            text.contains(manifest_key) && text.contains("does not match"),
            "{text}"
        );
        // Only plain paths under recordings/ are accepted.
        options.extra = vec![("recordings/../x".into(), Vec::new())];
        assert!(export(&options).is_err());
        options.extra = vec![("elsewhere/x".into(), Vec::new())];
        assert!(export(&options).is_err());
    }

    #[test]
    fn the_residency_section_accounts_for_every_piece_of_evidence() {
        let tmp = tempfile::tempdir().unwrap();
        let d1 = tmp.path().join("n1");
        write_chain(&d1, "n1", "eu-west", 1, 4, 3);
        let out = tmp.path().join("bundle.tar.zst");
        let recording = "recordings/eu-west/2026/01/01/0123/manifest.json";
        let mut options = ExportOptions {
            dirs: vec![d1],
            region: "eu-west".into(),
            since: None,
            until: None,
            created: t(1000),
            out: out.clone(),
            extra: vec![(recording.into(), b"{}".to_vec())],
            residency: Some(ResidencySource {
                store: "s3://evidence-eu".into(),
                cloud_region: Some("eu-west-1".into()),
                cloud_regions: vec!["eu-west-1".into()],
            }),
        };
        export(&options).unwrap();
        let bundle = fs::read(&out).unwrap();
        let report = check(&bundle);
        assert!(report.is_ok(), "{report}");
        let text = report.to_string();
        assert!(
            text.contains("residency: 5 objects read from region eu-west's store s3://evidence-eu in cloud region eu-west-1: every one under the region's own prefixes"),
            "{text}"
        );
        let objects = manifest_of(&read_archive(&bundle).unwrap())
            .residency
            .unwrap()
            .objects;
        assert!(objects.iter().any(|o| o.entry == S4 && o.key == "audit/eu-west/n1/n1-00000000000000000004.jsonl"), "{objects:?}");

        // Evidence read from another region's prefix is reported.
        let moved = tamper(&bundle, |_, manifest| {
            let residency = manifest.residency.as_mut().unwrap();
            residency.objects[0].key = residency.objects[0].key.replace("eu-west", "us-east");
        });
        let text = messages(&moved);
        assert!(
            text.contains("which is not under region eu-west's"),
            "{text}"
        );
        assert!(text.contains("outside region eu-west's prefixes"), "{text}");
        // So is evidence without a key, and a store outside the jurisdiction.
        let unaccounted = tamper(&bundle, |_, manifest| {
            let residency = manifest.residency.as_mut().unwrap();
            residency.objects.retain(|o| o.entry != recording);
            residency.cloud_region = Some("us-east-1".into());
        });
        let text = messages(&unaccounted);
        assert!(
            text.contains(&format!(
                "{recording}: residency: evidence without a store key"
            )),
            "{text}"
        );
        assert!(
            text.contains("cloud region us-east-1 is not one region eu-west allows"),
            "{text}"
        );

        // Built from directories: no section, and verify says so.
        options.residency = None;
        export(&options).unwrap();
        let text = check(&fs::read(&out).unwrap()).to_string();
        assert!(text.contains("residency: none"), "{text}");
    }

    #[test]
    fn pinned_keys_are_enforced() {
        let (_tmp, bundle) = two_node_bundle();
        let mut pins = BTreeMap::new();
        pins.insert("n1".to_string(), key(1).public_key_hex());
        let report = verify_reader(bundle.as_slice(), &pins);
        assert!(report.is_ok(), "{report}");
        assert!(report.nodes[0].pinned);
        pins.insert("n2".to_string(), key(9).public_key_hex());
        let report = verify_reader(bundle.as_slice(), &pins);
        let text = messages(&report);
        assert!(text.contains("is not the pinned key"), "{text}");
        assert!(text.contains("signature does not verify"), "{text}");
    }

    /// Whether a changed bundle file still decodes to exactly the same
    /// archive. zstd's encoding has slack (a window size hint, table
    /// descriptions with unused bits): such a change alters no byte of
    /// evidence, so it is not tampering; every other change must be caught.
    fn same_content(original: &[u8], changed: &[u8]) -> bool {
        match (zstd::decode_all(original), zstd::decode_all(changed)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    #[test]
    fn a_flip_at_any_position_of_the_bundle_file_is_detected() {
        // Exhaustive over positions (the property tests sample positions and
        // masks): the tail of the compressed stream, past the tar's
        // end-of-archive marker, counts too.
        let (_tmp, bundle) = two_node_bundle();
        let mut checked = 0;
        for i in 0..bundle.len() {
            let mut flipped = bundle.clone();
            flipped[i] ^= 0x20;
            if same_content(&bundle, &flipped) {
                continue;
            }
            checked += 1;
            assert!(
                !check(&flipped).is_ok(),
                "flip at {i} of {} undetected",
                bundle.len()
            );
        }
        assert!(
            checked > bundle.len() * 9 / 10,
            "{checked} of {}",
            bundle.len()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_byte_flip_in_a_segment_is_detected(pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
            let (_tmp, bundle) = two_node_bundle();
            let mut at = (String::new(), 0usize);
            let report = tamper(&bundle, |entries, _| {
                let bytes = entry(entries, S4);
                let i = pos.index(bytes.len());
                bytes[i] ^= mask;
                at = (S4.to_string(), i);
            });
            prop_assert!(!report.is_ok(), "flip at {:?} undetected", at);
            prop_assert!(report.problems.iter().any(|p| p.file.as_deref() == Some(S4)
                || p.file.as_deref() == Some(S7)), "{}", report);
        }

        #[test]
        fn every_byte_flip_in_a_seal_is_detected(pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
            let (_tmp, bundle) = two_node_bundle();
            let seal = format!("{S4}{SEAL_SUFFIX}");
            let report = tamper(&bundle, |entries, _| {
                let bytes = entry(entries, &seal);
                let i = pos.index(bytes.len());
                bytes[i] ^= mask;
            });
            prop_assert!(!report.is_ok());
        }

        #[test]
        fn every_byte_flip_in_the_bundle_file_is_detected(pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
            let (_tmp, mut bundle) = two_node_bundle();
            let i = pos.index(bundle.len());
            let original = bundle.clone();
            bundle[i] ^= mask;
            prop_assume!(!same_content(&original, &bundle));
            let report = check(&bundle);
            prop_assert!(!report.is_ok(), "flip at {} undetected", i);
        }
    }

    #[test]
    fn swapping_two_records_is_detected() {
        let (_tmp, bundle) = two_node_bundle();
        let report = tamper(&bundle, |entries, _| {
            let bytes = entry(entries, S4);
            let text = String::from_utf8(bytes.clone()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            *bytes = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1]).into_bytes();
        });
        let text = messages(&report);
        assert!(
            text.contains(&format!("{S4}:2 (seq 6): seq 6 follows seq 4")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{S4}:3 (seq 5): seq 5 follows seq 6")),
            "{text}"
        );
        assert!(text.contains("prev_hash does not match"), "{text}");
    }

    #[test]
    fn deleting_the_middle_segment_is_detected() {
        let (_tmp, bundle) = two_node_bundle();
        let report = tamper(&bundle, |entries, manifest| {
            entries.retain(|(n, _)| !n.starts_with(S4));
            manifest
                .segments
                .retain(|s| s.name != "n1-00000000000000000004.jsonl");
        });
        let text = messages(&report);
        assert!(
            text.contains(&format!(
                "{S7}:1 (seq 7): gap: seq 4..6 of node n1 missing after n1-00000000000000000001.jsonl"
            )),
            "{text}"
        );
        assert!(
            text.contains("prev_hash does not match the last hash of"),
            "{text}"
        );
        // An honest-looking manifest does not help.
        assert_eq!(report.segments, 3);
    }

    #[test]
    fn truncating_the_last_record_is_detected() {
        let (_tmp, bundle) = two_node_bundle();
        let report = tamper(&bundle, |entries, manifest| {
            let bytes = entry(entries, S4);
            let text = String::from_utf8(bytes.clone()).unwrap();
            let keep: Vec<&str> = text.lines().take(2).collect();
            *bytes = format!("{}\n", keep.join("\n")).into_bytes();
            let seg = manifest
                .segments
                .iter_mut()
                .find(|s| s.name == "n1-00000000000000000004.jsonl")
                .unwrap();
            seg.last_seq = 5;
        });
        let text = messages(&report);
        assert!(
            text.contains(&format!(
                "{S4}{SEAL_SUFFIX}: seal says last_seq 6, the segment has 5"
            )),
            "{text}"
        );
        assert!(text.contains("gap: seq 6..6 of node n1 missing"), "{text}");
    }

    #[test]
    fn truncating_the_chain_head_is_detected_by_the_seal() {
        let (_tmp, bundle) = two_node_bundle();
        let report = tamper(&bundle, |entries, _| {
            let bytes = entry(entries, "segments/n2-00000000000000000001.jsonl");
            let text = String::from_utf8(bytes.clone()).unwrap();
            let keep: Vec<&str> = text.lines().take(3).collect();
            *bytes = format!("{}\n", keep.join("\n")).into_bytes();
        });
        let text = messages(&report);
        assert!(
            text.contains("seal says last_seq 4, the segment has 3"),
            "{text}"
        );
    }

    #[test]
    fn an_edited_record_with_a_recomputed_hash_is_detected() {
        let (_tmp, bundle) = two_node_bundle();
        let report = tamper(&bundle, |entries, _| {
            let bytes = entry(entries, S4);
            let text = String::from_utf8(bytes.clone()).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let mut record: crate::AuditRecord = serde_json::from_str(&lines[1]).unwrap();
            if let crate::AuditEvent::Statement(s) = &mut record.event {
                s.text = "SELECT 'nothing to see'".into();
            }
            record.hash = record.compute_hash().unwrap();
            lines[1] = record.to_line().unwrap().trim_end().to_string();
            *bytes = format!("{}\n", lines.join("\n")).into_bytes();
        });
        let text = messages(&report);
        assert!(
            text.contains(&format!(
                "{S4}:3 (seq 6): prev_hash does not match the hash of the record before it (seq 5)"
            )),
            "{text}"
        );
        assert!(text.contains("seal says sha256"), "{text}");
        assert!(
            !text.contains(&format!("{S4}:2")),
            "the edited line itself is consistent: {text}"
        );
    }

    #[test]
    fn a_replaced_seal_is_detected() {
        let (_tmp, bundle) = two_node_bundle();
        let seal_name = format!("{S4}{SEAL_SUFFIX}");
        // Forged with another key, over the true content.
        let report = tamper(&bundle, |entries, _| {
            let bytes = entry(entries, &seal_name);
            let seal = Seal::from_file_bytes(bytes).unwrap();
            *bytes = seal.sign(&key(66)).unwrap().to_file_bytes().unwrap();
        });
        let text = messages(&report);
        assert!(
            text.contains(&format!("{seal_name}: seal: signature does not verify")),
            "{text}"
        );
        assert!(text.contains("not the node's"), "{text}");
        // Or keeping the node's public key but with a forged signature.
        let report = tamper(&bundle, |entries, _| {
            let bytes = entry(entries, &seal_name);
            let mut seal = Seal::from_file_bytes(bytes).unwrap();
            let forged = seal.clone().sign(&key(66)).unwrap();
            seal.signature = forged.signature;
            *bytes = seal.to_file_bytes().unwrap();
        });
        assert!(messages(&report).contains("signature does not verify"));
    }

    #[test]
    fn a_whole_forged_node_is_caught_by_a_pinned_key() {
        let (_tmp, bundle) = two_node_bundle();
        // The attacker re-signs every seal of n2 and swaps the manifest key:
        // consistent in itself, so only a pinned key can tell.
        let forger = key(66);
        let tampered = {
            let mut entries = read_archive(&bundle).unwrap();
            let mut manifest = manifest_of(&entries);
            let name = format!("segments/n2-00000000000000000001.jsonl{SEAL_SUFFIX}");
            let bytes = entry(&mut entries, &name);
            let seal = Seal::from_file_bytes(bytes).unwrap();
            *bytes = seal.sign(&forger).unwrap().to_file_bytes().unwrap();
            let new = sha256_hex(bytes);
            let len = bytes.len() as u64;
            let f = manifest.files.iter_mut().find(|f| f.name == name).unwrap();
            (f.sha256, f.size) = (new, len);
            manifest.nodes[1].public_key = forger.public_key_hex();
            entries[0].1 = serde_json::to_vec(&manifest).unwrap();
            write_archive(Vec::new(), &entries, 0).unwrap()
        };
        assert!(check(&tampered).is_ok());
        let mut pins = BTreeMap::new();
        pins.insert("n2".to_string(), key(2).public_key_hex());
        let report = verify_reader(tampered.as_slice(), &pins);
        assert!(!report.is_ok());
        assert!(messages(&report).contains("is not the pinned key"));
    }

    #[test]
    fn a_record_of_another_region_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let us = tmp.path().join("us");
        write_chain(&us, "u1", "us-east", 3, 2, 10);
        let out = tmp.path().join("us.tar.zst");
        export_dirs(&[&us], "us-east", &out);
        let report = tamper(&fs::read(&out).unwrap(), |_, manifest| {
            manifest.region = "eu-west".into();
        });
        let text = messages(&report);
        assert!(
            text.contains(
                "segments/u1-00000000000000000001.jsonl:1 (seq 1): record of region `us-east` in a bundle of region `eu-west`"
            ),
            "{text}"
        );
        assert!(text.contains("seal says region us-east"), "{text}");
    }

    #[test]
    fn export_takes_one_region_whole_segments_in_range_and_only_sealed_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let eu = tmp.path().join("eu");
        let us = tmp.path().join("us");
        // n1: records at seconds 0..9 in segments of 3: [0-2] [3-5] [6-8] [9]
        write_chain(&eu, "n1", "eu-west", 1, 10, 3);
        write_chain(&us, "u1", "us-east", 3, 2, 10);
        // An open segment of another node in the same directory.
        let (mut open, _) = crate::ChainWriter::open(
            crate::testing::config(&eu, "n9", "eu-west", 10),
            key(9),
            t(0),
        )
        .unwrap();
        crate::testing::append(&mut open, 0, 1);
        let out = tmp.path().join("b.tar.zst");
        let summary = export(&ExportOptions {
            dirs: vec![eu.clone(), us.clone()],
            region: "eu-west".into(),
            since: Some(t(4)),
            until: Some(t(6)),
            created: t(1000),
            out: out.clone(),
            extra: Vec::new(),
            residency: None,
        })
        .unwrap();
        assert_eq!(summary.nodes, ["n1"]);
        assert_eq!((summary.segments, summary.records), (2, 6));
        let notes = summary.notes.join("\n");
        assert!(
            notes.contains("n9-00000000000000000001.jsonl: not sealed yet"),
            "{notes}"
        );
        assert!(
            notes.contains("1 segments of other regions left out"),
            "{notes}"
        );
        let report = verify(&out).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.nodes[0].first_seq, Some(4));
        assert_eq!(report.nodes[0].head_seq, Some(9));
        assert!(!out.with_extension("partial").exists());
    }

    #[test]
    fn torn_tails_travel_with_their_segment_and_the_chain_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n1");
        let (mut w, _) = crate::ChainWriter::open(
            crate::testing::config(&dir, "n1", "eu-west", 10),
            key(1),
            t(0),
        )
        .unwrap();
        crate::testing::append(&mut w, 0, 3);
        drop(w);
        let seg = dir.join("n1-00000000000000000001.jsonl");
        let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"event\":").unwrap();
        let (w, _) = crate::ChainWriter::open(
            crate::testing::config(&dir, "n1", "eu-west", 10),
            key(1),
            t(50),
        )
        .unwrap();
        w.close().unwrap();
        let out = tmp.path().join("b.tar.zst");
        export_dirs(&[&dir], "eu-west", &out);
        let report = verify(&out).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 4);
        let entries = read_archive(&fs::read(&out).unwrap()).unwrap();
        assert!(
            entries
                .iter()
                .any(|(n, b)| n.ends_with(".jsonl.torn") && b == b"{\"event\":")
        );
    }

    #[test]
    fn garbage_is_a_failed_report_not_an_error() {
        assert!(!check(b"not a bundle").is_ok());
        assert!(!check(b"").is_ok());
        let (_tmp, bundle) = two_node_bundle();
        assert!(!check(&bundle[..bundle.len() / 2]).is_ok());
    }
}
