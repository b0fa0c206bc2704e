//! The region control plane through the real `juris` CLI: running it
//! against a node's control API, reading ids from its output, waiting for
//! a leader.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use juris_testkit::gateway::{RegionNode, juris_binary};

/// Longest any single CLI call may take: a write waits at most the 5 s
/// Raft write timeout, plus process start and token validation.
pub const CLI_LIMIT: Duration = Duration::from_secs(30);

/// Run the CLI as the holder of `token` against `node`'s control API.
pub async fn cli(node: &RegionNode, token: &str, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let run = tokio::process::Command::new(juris_binary()?)
        .args(args)
        .env("JURIS_TOKEN", token)
        .env("JURIS_CONTROL", &node.control)
        .env("JURIS_CA", &node.gateway.ca_file)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CLI_LIMIT, run)
        .await
        .with_context(|| format!("juris {args:?} took longer than {CLI_LIMIT:?}"))?
        .context("cannot run juris")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

pub async fn cli_ok(node: &RegionNode, token: &str, args: &[&str]) -> anyhow::Result<String> {
    let (ok, text) = cli(node, token, args).await?;
    if !ok {
        bail!(
            "juris {args:?} against node {} failed:\n{text}",
            node.raft_id
        );
    }
    Ok(text)
}

/// The first `ar-N` / `g-N` id printed.
pub fn id_with_prefix(text: &str, prefix: &str) -> anyhow::Result<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(prefix) && w[prefix.len()..].chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .with_context(|| format!("no {prefix}N in:\n{text}"))
}

/// The leader a `juris cluster status` output names ("leader 2 at ..."),
/// `None` for "leader none (no quorum)".
pub fn leader_in(status: &str) -> Option<u64> {
    let words: Vec<&str> = status.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "leader")
        .and_then(|w| w[1].parse().ok())
}

/// Wait until every node in `nodes` names the same leader, one of `nodes`
/// (so a dead leader some node still remembers does not count).
pub async fn wait_for_leader(nodes: &[&RegionNode], token: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        let mut report = String::new();
        for node in nodes {
            let (ok, text) = cli(node, token, &["cluster", "status"]).await?;
            seen.push(if ok { leader_in(&text) } else { None });
            report.push_str(&format!("node {}:\n{text}\n", node.raft_id));
        }
        if let Some(Some(leader)) = seen.first()
            && seen.iter().all(|s| *s == Some(*leader))
            && nodes.iter().any(|n| n.raft_id == *leader)
        {
            return Ok(*leader);
        }
        if Instant::now() > deadline {
            bail!("no agreed leader among the live nodes after 30 s:\n{report}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
