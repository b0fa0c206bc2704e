//! Segment files: their names and the line-by-line check that both the
//! writer (when it reopens a chain) and the verifier run, so the two can
//! never disagree about what a good segment is.

use crate::event::{AuditRecord, Timestamp, check_line};

pub(crate) const SEGMENT_EXT: &str = ".jsonl";
pub(crate) const SEAL_SUFFIX: &str = ".seal.json";
pub(crate) const TORN_SUFFIX: &str = ".torn";

/// `<node>-<first seq, 20 digits>.jsonl`: 20 digits hold any u64, and
/// zero-padding makes name order equal seq order.
pub(crate) fn file_name(node: &str, first_seq: u64) -> String {
    format!("{node}-{first_seq:020}{SEGMENT_EXT}")
}

/// The node and first seq a segment file name claims.
pub(crate) fn parse_name(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_suffix(SEGMENT_EXT)?;
    let (node, seq) = stem.rsplit_once('-')?;
    if node.is_empty() || seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((node, seq.parse().ok()?))
}

/// The files of one sealed segment in a chain directory: the segment, its
/// seal, and any torn tails the writer set aside next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    pub node: String,
    pub first_seq: u64,
    /// Every file name, the segment first and its seal last (so a copier
    /// that goes in order makes the seal appear only after what it seals).
    pub files: Vec<String>,
}

/// The sealed segments in `dir`, in node and seq order. Open segments (no
/// seal yet) are left out.
pub fn sealed_segments(dir: &std::path::Path) -> std::io::Result<Vec<SealedSegment>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in &names {
        let Some((node, first_seq)) = parse_name(name) else {
            continue;
        };
        let seal = format!("{name}{SEAL_SUFFIX}");
        if !names.contains(&seal) {
            continue;
        }
        let mut files = vec![name.clone()];
        let torn = format!("{name}{TORN_SUFFIX}");
        files.extend(names.iter().filter(|n| n.starts_with(&torn)).cloned());
        files.push(seal);
        out.push(SealedSegment {
            node: node.to_string(),
            first_seq,
            files,
        });
    }
    out.sort_by(|a, b| (&a.node, a.first_seq).cmp(&(&b.node, b.first_seq)));
    Ok(out)
}

/// The chain-relevant facts of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    pub time: Timestamp,
}

impl From<&AuditRecord> for Link {
    fn from(r: &AuditRecord) -> Self {
        Link {
            seq: r.seq,
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
            time: r.time,
        }
    }
}

/// Something wrong at a line of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// 1-based line number.
    pub line: u64,
    pub seq: Option<u64>,
    pub message: String,
}

/// What scanning a segment found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    pub first: Option<Link>,
    pub last: Option<Link>,
    pub records: u64,
    pub findings: Vec<Finding>,
    /// Number of lines, counting an unterminated last one.
    pub lines: u64,
    /// Start of the last line when it is unterminated or not a valid
    /// record on its own: the shape a write cut short by a crash leaves.
    pub bad_tail: Option<usize>,
}

/// Check every line of a segment and the links between its records.
/// `region` is `None` when any region is acceptable (the writer trusts its
/// own configuration); the verifier passes the bundle's region.
pub(crate) fn scan(bytes: &[u8], node: &str, region: Option<&str>, first_seq: u64) -> Scan {
    let mut scan = Scan::default();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let (line, terminated) = match bytes[offset..].iter().position(|&b| b == b'\n') {
            Some(end) => (&bytes[offset..offset + end], true),
            None => (&bytes[offset..], false),
        };
        scan.lines += 1;
        let number = scan.lines;
        let start = offset;
        offset += line.len() + usize::from(terminated);
        let mut finding = |seq: Option<u64>, message: String| {
            scan.findings.push(Finding {
                line: number,
                seq,
                message,
            })
        };
        if !terminated {
            finding(
                None,
                format!("last line is incomplete ({} bytes, no newline)", line.len()),
            );
            scan.bad_tail = Some(start);
            continue;
        }
        let check = check_line(line);
        let Some(record) = check.record else {
            for p in check.problems {
                finding(None, p);
            }
            scan.bad_tail = Some(start);
            continue;
        };
        let seq = Some(record.seq);
        scan.bad_tail = if check.problems.is_empty() {
            None
        } else {
            Some(start)
        };
        for p in check.problems {
            finding(seq, p);
        }
        if record.node != node {
            finding(
                seq,
                format!(
                    "record of node `{}` in a segment of node `{node}`",
                    record.node
                ),
            );
        }
        if let Some(region) = region
            && record.region != region
        {
            finding(
                seq,
                format!(
                    "record of region `{}` in a bundle of region `{region}`",
                    record.region
                ),
            );
        }
        match &scan.last {
            None => {
                if record.seq != first_seq {
                    finding(
                        seq,
                        format!(
                            "first record has seq {} but the segment name says {first_seq}",
                            record.seq
                        ),
                    );
                }
            }
            Some(prev) => {
                if record.seq != prev.seq.wrapping_add(1) {
                    finding(
                        seq,
                        format!(
                            "seq {} follows seq {} (expected {})",
                            record.seq,
                            prev.seq,
                            prev.seq.wrapping_add(1)
                        ),
                    );
                }
                if record.prev_hash != prev.hash {
                    finding(
                        seq,
                        format!(
                            "prev_hash does not match the hash of the record before it (seq {})",
                            prev.seq
                        ),
                    );
                }
                if record.time < prev.time {
                    finding(
                        seq,
                        format!(
                            "time {} is before the previous record's {}",
                            record.time, prev.time
                        ),
                    );
                }
            }
        }
        let link = Link::from(&record);
        if scan.first.is_none() {
            scan.first = Some(link.clone());
        }
        scan.last = Some(link);
        scan.records += 1;
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = file_name("eu-node-1", 42);
        assert_eq!(name, "eu-node-1-00000000000000000042.jsonl");
        assert_eq!(parse_name(&name), Some(("eu-node-1", 42)));
        assert_eq!(parse_name(&file_name("n", u64::MAX)), Some(("n", u64::MAX)));
        assert_eq!(parse_name("n-42.jsonl"), None);
        assert_eq!(parse_name("n-00000000000000000042.jsonl.seal.json"), None);
        assert_eq!(parse_name("-00000000000000000042.jsonl"), None);
    }
}
