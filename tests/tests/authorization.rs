//! Authorization v1: roles bind IdP groups to read / write / admin on a
//! connection; every statement is classified with PostgreSQL's own grammar;
//! a statement beyond the role gets 42501 naming role and class, and the
//! session goes on exactly as PostgreSQL would after its own error.

mod common;

use common::{CONNECTION, Env, db_error, psql};

fn denied(err: &tokio_postgres::Error) -> String {
    let (code, message) = db_error(err).unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(code, "42501", "{message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_may_read_but_not_write_or_change_schema() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let direct = env.direct().await?;
    let bob = env.client(&env.oidc.user_token("bob").await?).await?;

    let n: i64 = bob
        .query_one("select count(*) from customers", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000);

    let message = denied(&bob.batch_execute("drop table customers").await.unwrap_err());
    assert!(
        message.contains("\"analysts\"") && message.contains("read") && message.contains("ddl"),
        "{message}"
    );
    // The session continues.
    assert_eq!(
        bob.query_one("select 41 + 1", &[]).await?.get::<_, i32>(0),
        42
    );

    // Simple protocol, multi-statement: one write makes the whole string refused.
    let message = denied(
        &bob.batch_execute("select 1; delete from customers")
            .await
            .unwrap_err(),
    );
    assert!(message.contains("write"), "{message}");
    // Extended protocol: refused at Parse.
    let message = denied(
        &bob.prepare("update customers set email = $1 where id = 1")
            .await
            .unwrap_err(),
    );
    assert!(message.contains("write"), "{message}");
    // A data-modifying CTE and a sequence bump are writes too.
    denied(
        &bob.batch_execute("with d as (delete from customers returning *) select count(*) from d")
            .await
            .unwrap_err(),
    );
    // Unparseable counts as the most privileged class (fail closed), not a syntax error.
    let message = denied(&bob.batch_execute("selec 1 frm nowhere").await.unwrap_err());
    assert!(message.contains("unparseable"), "{message}");

    // Inside a transaction the refusal aborts it, as PostgreSQL's own 42501 would.
    bob.batch_execute("begin").await?;
    bob.query_one("select 1", &[]).await?;
    denied(&bob.batch_execute("truncate customers").await.unwrap_err());
    let err = bob.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(db_error(&err).unwrap().0, "25P02");
    bob.batch_execute("rollback").await?;

    let n: i64 = direct
        .query_one("select count(*) from customers", &[])
        .await?
        .get(0);
    assert_eq!(n, 1000, "nothing was deleted upstream");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_may_modify_data_but_not_schema_and_an_admin_may_do_both() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let carol = env.client(&env.oidc.user_token("carol").await?).await?;
    let alice = env.client(&env.oidc.user_token("alice").await?).await?;

    assert_eq!(
        carol
            .execute(
                "update customers set phone = '+1-555-0100' where id = 1",
                &[]
            )
            .await?,
        1
    );
    let message = denied(
        &carol
            .batch_execute("alter table customers add column x int")
            .await
            .unwrap_err(),
    );
    assert!(
        message.contains("\"developers\"")
            && message.contains("write access")
            && message.contains("ddl"),
        "{message}"
    );
    denied(
        &carol
            .batch_execute("create role intruder login superuser")
            .await
            .unwrap_err(),
    );
    denied(&carol.batch_execute("set role postgres").await.unwrap_err());

    alice
        .batch_execute("create table admin_made (id int); drop table admin_made")
        .await?;
    // For an admin, an unparseable statement reaches PostgreSQL, which reports its own syntax error.
    let err = alice.batch_execute("selec 1").await.unwrap_err();
    assert_eq!(db_error(&err).unwrap().0, "42601");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_denials_keep_responses_in_order() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let bob = env.client(&env.oidc.user_token("bob").await?).await?;
    // Three statements in flight at once; the middle one is refused.
    let (a, b, c) = tokio::join!(
        bob.query_one("select 1::int", &[]),
        bob.execute("delete from customers where id = 1", &[]),
        bob.query_one("select 3::int", &[]),
    );
    assert_eq!(a?.get::<_, i32>(0), 1);
    denied(&b.unwrap_err());
    assert_eq!(c?.get::<_, i32>(0), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_principal_without_a_role_is_refused_at_connect() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let token = env.oidc.user_token("dave").await?;
    let (ok, _, err) = psql(
        &env.gateway.conninfo(CONNECTION, "dave", &token),
        &["-c", "select 1"],
    )
    .await?;
    assert!(!ok);
    assert!(
        err.contains("holds no role on connection \"billing\""),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jit_role_counts_only_with_a_grant_and_fails_closed_without_a_control_plane()
-> anyhow::Result<()> {
    // carol (developers) holds nothing standing; her only role must be
    // requested. This node has no control plane, so nobody can vouch for a
    // grant: she is refused with 57P03 and a reason, never let in.
    let env = Env::start_with(juris_testkit::postgres::UpstreamAuth::ScramSha256, |spec| {
        spec.roles.retain(|r| r.name != "developers");
        let mut jit =
            juris_testkit::gateway::RoleSpec::new("oncall", "developers", CONNECTION, "write");
        jit.settings.push("access = \"jit\"".into());
        jit.settings
            .push("review = { reviewers = [\"dba\"] }".into());
        spec.roles.push(jit);
    })
    .await?;
    let err = env
        .client(&env.oidc.user_token("carol").await?)
        .await
        .unwrap_err();
    let (code, message) = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(db_error)
        .unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(code, "57P03", "{message}");
    assert!(message.contains("no control plane"), "{message}");
    // bob's standing role is untouched by the jit role next to it.
    let bob = env.client(&env.oidc.user_token("bob").await?).await?;
    bob.simple_query("select 1").await?;
    Ok(())
}
