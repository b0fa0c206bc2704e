//! `relay-compare`: pgbench select-only against PostgreSQL directly, the
//! node of the region that owns the connection, and a node of another
//! region that hands the session over to it, side by side (issue 6: relaying
//! adds at most 10 % latency). The benchmark itself is
//! [`juris_testkit::relay_bench`].
//!
//! Usage: `relay-compare [--rounds N] [--seconds S] [--only WORKLOAD-SUBSTRING]`.

use juris_testkit::pgbench::{Options, until_interrupted};
use juris_testkit::relay_bench::{USAGE, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1), USAGE)?;
    until_interrupted(run(options)).await
}
