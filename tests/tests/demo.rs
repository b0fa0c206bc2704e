//! The README's first command, `juris demo`, and its multi-region form, run
//! as a newcomer would: start it, paste the psql commands it prints, stop it
//! with a signal.

mod common;

use std::time::Duration;

use common::psql;
use juris_testkit::gateway::juris_binary;
use juris_testkit::regions::scrape;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// Start `juris demo <args>` and read what it prints until it is ready.
async fn start_demo(args: &[&str]) -> anyhow::Result<(Child, Vec<String>)> {
    let mut child = tokio::process::Command::new(juris_binary()?)
        .arg("demo")
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut printed = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the demo exited early:\n{}", printed.join("\n")))?;
        let ready = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if ready {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, printed))
}

/// The conninfo strings of the `psql "…"` lines.
fn conninfos(printed: &[String]) -> Vec<String> {
    printed
        .iter()
        .filter_map(|l| l.trim().strip_prefix("psql \"")?.strip_suffix('"'))
        .map(str::to_string)
        .collect()
}

/// SIGTERM, then the demo must stop cleanly.
async fn stop_demo(mut child: Child) -> anyhow::Result<()> {
    let pid = child.id().expect("running").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    assert!(status.success(), "the demo exited with {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_masks_for_bob_and_not_for_dora() -> anyhow::Result<()> {
    let (child, printed) = start_demo(&[]).await?;
    let people = conninfos(&printed);
    assert_eq!(people.len(), 4, "{printed:?}");
    let as_user = |user: &str| {
        people
            .iter()
            .find(|c| c.contains(&format!("user={user} ")))
            .cloned()
            .unwrap_or_default()
    };
    let query = "select ssn from customers order by id limit 1";
    let (ok, masked, err) = psql(&as_user("bob"), &["-c", query]).await?;
    assert!(ok, "{err}");
    let (ok, clear, err) = psql(&as_user("dora"), &["-c", query]).await?;
    assert!(ok, "{err}");
    let (masked, clear) = (masked.trim(), clear.trim());
    assert!(
        masked.starts_with("***-**-") && masked.ends_with(&clear[clear.len() - 4..]),
        "bob saw {masked}, dora {clear}"
    );
    assert_ne!(masked, clear);
    let (ok, _, err) = psql(&as_user("bob"), &["-c", "delete from customers"]).await?;
    assert!(!ok && err.contains("permission denied"), "{err}");
    stop_demo(child).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_regions_demo_with_three_nodes_per_region_serves_every_printed_command()
-> anyhow::Result<()> {
    let (child, printed) = start_demo(&["--regions", "eu-west,us-east", "--nodes", "3"]).await?;
    // Each connection through its own region's node and through the other
    // region's node.
    let commands = conninfos(&printed);
    assert_eq!(commands.len(), 4, "{printed:?}");
    for conninfo in &commands {
        let (ok, out, err) = psql(conninfo, &["-c", "select count(*) from customers"]).await?;
        assert!(ok, "{conninfo}: {err}");
        assert_eq!(out.trim(), "1000");
    }
    // Six nodes, each with its metrics; two of them handed a session over.
    let metrics: Vec<String> = printed
        .iter()
        .filter_map(|l| l.split("curl http://").nth(1)?.split("/metrics").next())
        .map(str::to_string)
        .collect();
    assert_eq!(metrics.len(), 6, "{printed:?}");
    let mut handed_over = 0;
    for address in &metrics {
        handed_over += scrape(address).await?["juris_handovers_out_total"];
    }
    assert_eq!(handed_over, 2);
    assert!(
        printed.iter().filter(|l| l.contains("control API")).count() == 6,
        "{printed:?}"
    );
    stop_demo(child).await
}
