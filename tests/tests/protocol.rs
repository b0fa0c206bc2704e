//! Everything psql, pgbench and drivers do works through the gateway exactly
//! as direct: simple and extended protocol, pipelining, prepared statements,
//! COPY both ways, LISTEN/NOTIFY, notices, transactions with errors, large
//! results in bounded memory, direct TLS, and cancel routing.

mod common;

use std::time::{Duration, Instant};

use common::{CONNECTION, Env, client_config, connect_with, db_error, psql, tls_config};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;
use tokio_postgres::AsyncMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn psql_over_verify_full_reaches_the_real_database_with_the_stored_credential()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let conninfo = env.gateway.conninfo(CONNECTION, "alice", &token);

    let (ok, out, err) = psql(
        &conninfo,
        &[
            "-c",
            "select count(*) from customers",
            "-c",
            "select current_user",
        ],
    )
    .await?;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1000", &env.pg.superuser]);

    // A multi-statement string in one simple Query.
    let (ok, out, err) = psql(&conninfo, &["-c", "select 1; select 'two'"]).await?;
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1", "two"]);

    // The client only ever held its token; the upstream password is nowhere in what it saw.
    let (_, out, err) = psql(&conninfo, &["-c", "show password_encryption"]).await?;
    assert!(!out.contains(&env.pg.password) && !err.contains(&env.pg.password));
    assert!(
        !env.gateway.log().contains(&env.pg.password),
        "upstream password leaked into the node log"
    );
    assert!(
        !env.gateway.log().contains(&token),
        "token leaked into the node log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pgbench_runs_in_simple_extended_and_prepared_mode() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let pgbench = |args: Vec<&str>| {
        let mut command = tokio::process::Command::new("pgbench");
        command
            .args(&args)
            .env("PGHOST", "localhost")
            .env("PGHOSTADDR", env.gateway.address.ip().to_string())
            .env("PGPORT", env.gateway.address.port().to_string())
            .env("PGUSER", "alice")
            .env("PGDATABASE", CONNECTION)
            .env("PGPASSWORD", &token)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &env.gateway.ca_file);
        command.output()
    };
    // Initialisation runs DDL and COPY FROM STDIN through the gateway.
    let init = pgbench(vec!["-i", "-s", "1", "-q"]).await?;
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    for mode in ["simple", "extended", "prepared"] {
        for script in [vec!["-S"], vec![]] {
            let mut args = vec!["-M", mode, "-c", "2", "-t", "25", "-n"];
            args.extend(script.iter().copied());
            let run = pgbench(args.clone()).await?;
            let stdout = String::from_utf8_lossy(&run.stdout);
            assert!(
                run.status.success(),
                "pgbench {args:?}: {stdout} {}",
                String::from_utf8_lossy(&run.stderr)
            );
            assert!(
                stdout.contains("number of transactions actually processed: 50/50"),
                "{args:?}: {stdout}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_protocol_pipelining_and_named_statements_match_direct() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let gateway = env.client(&token).await?;
    let direct = env.direct().await?;

    let sql = "select id, full_name, email from customers where id = $1 or id = $2 order by id";
    let (through, straight) = (gateway.prepare(sql).await?, direct.prepare(sql).await?);
    for (a, b) in [(1i32, 2i32), (10, 500), (999, 1000)] {
        let rows_g = gateway.query(&through, &[&a, &b]).await?;
        let rows_d = direct.query(&straight, &[&a, &b]).await?;
        let render = |rows: &[tokio_postgres::Row]| {
            rows.iter()
                .map(|r| {
                    format!(
                        "{}|{}|{}",
                        r.get::<_, i32>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2)
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(render(&rows_g), render(&rows_d));
    }

    // Many queries in flight at once on one connection: tokio-postgres pipelines them.
    let queries = (1..=50).map(|i| {
        let gateway = &gateway;
        async move {
            gateway
                .query_one("select $1::int * 2", &[&i])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    let results = futures_util::future::try_join_all(queries).await?;
    assert_eq!(results, (1..=50).map(|i| i * 2).collect::<Vec<_>>());

    // Binary and text result formats, NULLs, and an empty query.
    let row = gateway
        .query_one("select null::text, 1.5::float8, 'x'::bytea", &[])
        .await?;
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, f64>(1), 1.5);
    assert_eq!(row.get::<_, Vec<u8>>(2), b"x");
    let empty = gateway.simple_query("").await?;
    assert!(
        !empty
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_in_and_out_and_transactions_with_errors_behave_like_postgres() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let client = env.client(&token).await?;
    client
        .batch_execute("create table copied (id int primary key, note text)")
        .await?;

    let sink = client.copy_in("copy copied from stdin").await?;
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!("{i}\tnote {i}\n"));
    }
    sink.send(bytes::Bytes::from(data.clone())).await?;
    assert_eq!(sink.finish().await?, 10_000);

    let out = client
        .copy_out("copy (select * from copied order by id) to stdout")
        .await?;
    let chunks: Vec<bytes::Bytes> = out.try_collect().await?;
    assert_eq!(chunks.concat(), data.as_bytes());

    // An error inside a transaction aborts it exactly as PostgreSQL does.
    client.batch_execute("begin").await?;
    client
        .execute("insert into copied values (-1, 'in txn')", &[])
        .await?;
    let err = client.execute("select 1/0", &[]).await.unwrap_err();
    assert_eq!(db_error(&err).unwrap().0, "22012");
    let err = client.execute("select 1", &[]).await.unwrap_err();
    assert_eq!(db_error(&err).unwrap().0, "25P02");
    client.batch_execute("rollback").await?;
    let count: i64 = client
        .query_one("select count(*) from copied where id = -1", &[])
        .await?
        .get(0);
    assert_eq!(count, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listen_notify_and_notices_reach_the_client() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&env.gateway)?);
    let (listener, mut connection) = client_config(&env.gateway, CONNECTION, "alice", &token)
        .connect(tls)
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            let _ = tx.send(message);
        }
    });
    listener.batch_execute("listen juris_events").await?;
    let notifier = env.client(&token).await?;
    notifier
        .batch_execute("notify juris_events, 'hello through the gateway'")
        .await?;
    listener
        .batch_execute("do $$ begin raise notice 'a notice for you'; end $$")
        .await?;

    let (mut got_notification, mut got_notice) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(got_notification && got_notice) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await? {
            Some(AsyncMessage::Notification(n)) => {
                assert_eq!(
                    (n.channel(), n.payload()),
                    ("juris_events", "hello through the gateway")
                );
                got_notification = true;
            }
            Some(AsyncMessage::Notice(notice)) => {
                assert_eq!(notice.message(), "a notice for you");
                got_notice = true;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(
        got_notification && got_notice,
        "notification {got_notification}, notice {got_notice}"
    );
    Ok(())
}

fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_rows_stream_through_in_bounded_memory() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let client = env.client(&token).await?;
    client.query_one("select 1", &[]).await?;
    let pid = env.gateway.pid().unwrap();
    let before = peak_kib(pid);

    // ~1M rows x ~200 bytes = ~200 MB through the gateway.
    let rows = client
        .query_raw(
            "select g, repeat('x', 190) from generate_series(1, 1000000) g",
            Vec::<i32>::new(),
        )
        .await?;
    futures_util::pin_mut!(rows);
    let (mut count, mut sum) = (0u64, 0i64);
    while let Some(row) = rows.try_next().await? {
        count += 1;
        sum += i64::from(row.get::<_, i32>(0));
    }
    assert_eq!(count, 1_000_000);
    assert_eq!(sum, 500_000_500_000);
    let growth_mib = peak_kib(pid).saturating_sub(before) / 1024;
    // Typically under 10 MiB: the relay's buffers, the recorder's batches
    // and the open recording chunk (1 MiB), whatever the result's size. A
    // buffer that grew with the result went to 80 MiB here.
    assert!(
        growth_mib < 32,
        "gateway peak memory grew by {growth_mib} MiB while streaming ~200 MB"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_tls_with_alpn_works_like_the_sslrequest_flow() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("bob").await?;
    let mut config = client_config(&env.gateway, CONNECTION, "bob", &token);
    config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
    let client = connect_with(&env.gateway, config).await?;
    let n: i64 = client
        .query_one("select count(*) from customers", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_reaches_only_the_session_that_owns_the_key() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("alice").await?;
    let client = env.client(&token).await?;

    // A forged key cancels nothing: the sleep runs to completion.
    let slow = {
        let client = env.client(&token).await?;
        tokio::spawn(async move {
            client
                .query_one("select pg_sleep(1.5)", &[])
                .await
                .map(|_| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (pid, secret) in [(1i32, 1i32), (i32::MAX, -7), (12345, 0)] {
        let mut tcp = tokio::net::TcpStream::connect(env.gateway.address).await?;
        let mut packet = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
        packet.extend(pid.to_be_bytes());
        packet.extend(secret.to_be_bytes());
        tcp.write_all(&packet).await?;
    }
    slow.await?
        .map_err(|e| anyhow::anyhow!("forged cancel key interrupted a query: {e}"))?;

    // The real key cancels the owner's running statement.
    let cancel = client.cancel_token();
    let running = tokio::spawn(async move { client.query_one("select pg_sleep(30)", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&env.gateway)?);
    cancel.cancel_query(tls).await?;
    let err = running.await?.unwrap_err();
    assert_eq!(
        db_error(&err).map(|e| e.0).as_deref(),
        Some("57014"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_results_to_slow_readers_complete_without_stalling() -> anyhow::Result<()> {
    // Regression: when the client's socket was full, the tail of a result
    // could sit encrypted in the gateway's TLS buffer, unflushed, while the
    // client waited for it. A slow reader keeps the socket full.
    let env = Env::start().await?;
    let token = env.oidc.user_token("bob").await?;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(env.client(&token).await?);
    }
    let runs = clients.iter().map(|client| async move {
        for _ in 0..3 {
            let rows = client
                .query_raw(
                    "select g, repeat('y', 200) from generate_series(1, 20000) g",
                    Vec::<i32>::new(),
                )
                .await?;
            futures_util::pin_mut!(rows);
            let mut count = 0;
            while let Some(_row) = rows.try_next().await? {
                count += 1;
                if count % 2000 == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            assert_eq!(count, 20_000);
        }
        Ok::<_, tokio_postgres::Error>(())
    });
    tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::try_join_all(runs),
    )
    .await
    .map_err(|_| anyhow::anyhow!("large results stalled"))??;
    Ok(())
}
