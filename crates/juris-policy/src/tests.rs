use super::*;
use StatementClass::{
    Administration as A, Ddl as D, Read as R, Session as S, Unparseable as U, Write as W,
};

fn classes(sql: &str) -> Vec<StatementClass> {
    classify(sql).iter().map(|c| c.class).collect()
}

const CASES: &[(&str, &[StatementClass])] = &[
    // Read
    ("select 1", &[R]),
    ("SELECT * FROM t WHERE a = 1 ORDER BY b LIMIT 3", &[R]),
    (
        "select count(*), lower(name) from t group by 2 having count(*) > 1",
        &[R],
    ),
    ("values (1), (2)", &[R]),
    ("show search_path", &[R]),
    ("show all", &[R]),
    ("explain select * from t", &[R]),
    ("explain delete from t", &[R]),
    ("explain select nextval('s')", &[R]),
    ("explain (analyze false) delete from t", &[R]),
    ("explain analyze select * from t", &[R]),
    ("fetch 10 from c", &[R]),
    ("move next in c", &[R]),
    ("declare c cursor for select * from t", &[R]),
    ("copy t to stdout", &[R]),
    ("copy (select 1) to stdout", &[R]),
    ("copy t (a, b) to stdout with (format csv)", &[R]),
    (
        "select * from t1 join t2 using (id) union all select * from t3",
        &[R],
    ),
    ("with x as (select 1) select * from x", &[R]),
    ("select case when a then 1 else 2 end from t", &[R]),
    ("select now(), current_user, version()", &[R]),
    ("select 'nextval' as s", &[R]),
    // Session
    ("begin", &[S]),
    ("start transaction isolation level serializable", &[S]),
    ("commit", &[S]),
    ("rollback", &[S]),
    ("savepoint a", &[S]),
    ("release savepoint a", &[S]),
    ("rollback to savepoint a", &[S]),
    ("set search_path = public", &[S]),
    ("set local statement_timeout = '5s'", &[S]),
    ("reset search_path", &[S]),
    ("reset all", &[S]),
    ("reset role", &[S]),
    ("reset session authorization", &[S]),
    ("discard all", &[S]),
    ("deallocate all", &[S]),
    ("deallocate p1", &[S]),
    ("prepare p1 as select $1::int", &[R]),
    ("prepare p2 as delete from t where id = $1", &[W]),
    ("listen ch", &[S]),
    ("unlisten *", &[S]),
    ("close c", &[S]),
    ("set constraints all deferred", &[S]),
    ("select pg_advisory_lock(1)", &[S]),
    ("select set_config('app.tenant', '42', false)", &[S]),
    // Write
    ("insert into t values (1)", &[W]),
    ("update t set a = 1", &[W]),
    ("delete from t", &[W]),
    (
        "merge into t using s on t.id = s.id when matched then delete",
        &[W],
    ),
    ("copy t from stdin", &[W]),
    ("select 1 for update", &[W]),
    ("select * from t for share", &[W]),
    ("select * from t for no key update", &[W]),
    ("select * from (select * from t for update) s", &[W]),
    ("call p(1)", &[W]),
    ("refresh materialized view mv", &[W]),
    ("notify ch, 'x'", &[W]),
    ("lock table t in access exclusive mode", &[W]),
    ("execute p1(1)", &[W]),
    ("prepare transaction 'x'", &[W]),
    ("commit prepared 'x'", &[W]),
    ("analyze t", &[W]),
    ("vacuum t", &[W]),
    ("select nextval('s')", &[W]),
    ("select pg_catalog.NEXTVAL('s')", &[W]),
    ("select \"nextval\"('s')", &[W]),
    ("select setval('s', 10)", &[W]),
    ("select coalesce(null, (nextval('s'))::text)", &[W]),
    ("select * from nextval('s')", &[W]),
    ("select lo_unlink(1)", &[W]),
    ("select pg_notify('ch', 'x')", &[W]),
    (
        "with d as (delete from t returning *) select * from d",
        &[W],
    ),
    (
        "with i as (insert into t values (1) returning id) insert into u select id from i",
        &[W],
    ),
    ("explain analyze delete from t", &[W]),
    ("explain (analyze, buffers) update t set a = 1", &[W]),
    ("copy (delete from t returning *) to stdout", &[W]),
    ("declare c cursor for select * from t for update", &[W]),
    ("select 1 union select nextval('s')", &[W]),
    // DDL
    ("create table t (a int)", &[D]),
    ("create index on t (a)", &[D]),
    ("create view v as select 1", &[D]),
    ("create sequence s", &[D]),
    (
        "create function f() returns int language sql as 'select 1'",
        &[D],
    ),
    ("create type mood as enum ('a')", &[D]),
    ("create schema s", &[D]),
    ("alter table t add column b int", &[D]),
    ("alter table t rename to u", &[D]),
    ("drop table t", &[D]),
    ("drop index i", &[D]),
    ("truncate t", &[D]),
    ("comment on table t is 'x'", &[D]),
    (
        "create trigger tr after insert on t for each row execute function f()",
        &[D],
    ),
    ("create rule r as on insert to t do instead nothing", &[D]),
    ("create policy p on t using (true)", &[D]),
    ("select * into newt from t", &[D]),
    ("create table t2 as select * from t", &[D]),
    ("create materialized view mv as select 1", &[D]),
    ("vacuum full t", &[D]),
    ("vacuum (full, analyze) t", &[D]),
    ("cluster t using i", &[D]),
    ("reindex table t", &[D]),
    ("alter table t owner to bob", &[D]),
    ("select U&\"\\006Eextval\"('s')", &[D]),
    // Administration
    ("create role bob login", &[A]),
    ("create user bob password 'x'", &[A]),
    ("create group g", &[A]),
    ("alter role bob superuser", &[A]),
    ("alter user bob set search_path = x", &[A]),
    ("drop role bob", &[A]),
    ("grant select on t to bob", &[A]),
    ("revoke all on t from bob", &[A]),
    ("grant admin to bob", &[A]),
    ("alter system set work_mem = '1GB'", &[A]),
    ("create database d", &[A]),
    ("alter database d set x = 1", &[A]),
    ("drop database d", &[A]),
    ("create tablespace ts location '/tmp'", &[A]),
    ("drop tablespace ts", &[A]),
    ("create subscription s connection 'x' publication p", &[A]),
    ("create publication p for all tables", &[A]),
    (
        "alter default privileges grant select on tables to bob",
        &[A],
    ),
    ("reassign owned by bob to alice", &[A]),
    ("drop owned by bob", &[A]),
    ("load 'plugin'", &[A]),
    ("checkpoint", &[A]),
    ("copy t to '/tmp/x'", &[A]),
    ("copy t from '/tmp/x'", &[A]),
    ("copy t to program 'rm -rf /'", &[A]),
    ("copy t from program 'curl x'", &[A]),
    ("set role postgres", &[A]),
    ("set local role postgres", &[A]),
    ("set session authorization postgres", &[A]),
    ("create extension dblink", &[A]),
    ("do $$ begin perform 1; end $$", &[A]),
    ("select pg_terminate_backend(1)", &[A]),
    ("select pg_cancel_backend(1)", &[A]),
    ("select pg_reload_conf()", &[A]),
    ("select pg_read_file('/etc/passwd')", &[A]),
    ("select pg_ls_dir('.')", &[A]),
    ("select lo_import('/etc/passwd')", &[A]),
    ("select * from dblink('x', 'select 1') as t(a int)", &[A]),
    ("select set_config('role', 'postgres', false)", &[A]),
    ("select set_config($1, 'x', false)", &[A]),
    ("select pg_create_logical_replication_slot('s', 'p')", &[A]),
    (
        "select 1 where exists (select pg_terminate_backend(pid) from pg_stat_activity)",
        &[A],
    ),
    ("explain analyze select pg_terminate_backend(1)", &[A]),
    // Multi-statement, empty and unparseable
    ("explain analyse delete from t", &[W]),
    ("insert into t values (pg_terminate_backend(1))", &[A]),
    ("set session role postgres", &[A]),
    ("select 1; drop table t", &[R, D]),
    ("drop table t; select nextval('s'); select 1", &[D, W, R]),
    ("begin; insert into t values (1); commit;", &[S, W, S]),
    ("", &[]),
    ("   ", &[]),
    ("-- only a comment", &[]),
    ("/* c */ ;;", &[]),
    ("selec 1", &[U]),
    ("select 1; this is not sql", &[U]),
    ("select 'unterminated", &[U]),
];

#[test]
fn classification_table() {
    let mut failures = Vec::new();
    for (sql, expected) in CASES {
        let got = classes(sql);
        if got != *expected {
            failures.push(format!("{sql:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(CASES.len() >= 80);
    assert!(
        failures.is_empty(),
        "{} misclassified:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn summaries() {
    let cases = [
        ("select 1", "SELECT"),
        ("values (1)", "VALUES"),
        ("drop table t", "DROP TABLE"),
        ("copy t from stdin", "COPY FROM"),
        ("copy t to stdout", "COPY TO"),
        ("set role x", "SET ROLE"),
        ("explain analyze delete from t", "EXPLAIN ANALYZE"),
        ("grant select on t to x", "GRANT"),
        ("selec", "UNPARSEABLE"),
    ];
    for (sql, summary) in cases {
        assert_eq!(classify(sql)[0].summary, summary, "{sql}");
    }
}

#[test]
fn spans_and_fingerprints() {
    let sql = "select 1;  SELECT 2 ; drop table t";
    let stmts = classify(sql);
    assert_eq!(stmts.len(), 3);
    assert_eq!(stmts[2].text(sql).trim(), "drop table t");
    let (a, b) = (stmts[0].fingerprint(sql), stmts[1].fingerprint(sql));
    assert!(a.is_some());
    assert_eq!(a, b, "literals do not change the fingerprint");
    assert_ne!(a, stmts[2].fingerprint(sql));
    assert_eq!(a.as_deref().map(str::len), Some(16));
    assert_eq!(fingerprint("select 42"), a);
    assert_eq!(fingerprint("selec"), None);
    let bad = classify("selec 1");
    assert_eq!(bad[0].fingerprint("selec 1"), None);
}

#[test]
fn required_level_is_the_maximum() {
    assert_eq!(required_level(&[]), AccessLevel::Read);
    assert_eq!(
        required_level(&classify("begin; select 1")),
        AccessLevel::Read
    );
    assert_eq!(
        required_level(&classify("select 1; delete from t")),
        AccessLevel::Write
    );
    assert_eq!(
        required_level(&classify(
            "select 1; drop table t; insert into t values (1)"
        )),
        AccessLevel::Admin
    );
    assert_eq!(required_level(&classify("garbage !")), AccessLevel::Admin);
}

#[test]
fn authorize_read_level() {
    let l = AccessLevel::Read;
    assert_eq!(
        authorize(l, &classify("select 1; set x = 1; begin")),
        Decision::Allow
    );
    assert_eq!(
        authorize(l, &classify("select 1; update t set a = 1; drop table t")),
        Decision::Deny {
            class: W,
            summary: "UPDATE"
        }
    );
    assert_eq!(
        authorize(l, &classify("select nextval('s')")),
        Decision::Deny {
            class: W,
            summary: "SELECT"
        }
    );
    assert_eq!(authorize(l, &[]), Decision::Allow);
}

#[test]
fn authorize_write_level() {
    let l = AccessLevel::Write;
    assert_eq!(
        authorize(
            l,
            &classify("insert into t values (1); select 1; copy t from stdin")
        ),
        Decision::Allow
    );
    assert_eq!(
        authorize(l, &classify("truncate t")),
        Decision::Deny {
            class: D,
            summary: "TRUNCATE"
        }
    );
    assert_eq!(
        authorize(l, &classify("set role postgres")),
        Decision::Deny {
            class: A,
            summary: "SET ROLE"
        }
    );
    assert_eq!(
        authorize(l, &classify("nonsense")),
        Decision::Deny {
            class: U,
            summary: "UNPARSEABLE"
        }
    );
}

#[test]
fn authorize_admin_level() {
    let l = AccessLevel::Admin;
    for (sql, _) in CASES {
        assert_eq!(authorize(l, &classify(sql)), Decision::Allow, "{sql}");
    }
}

#[test]
fn nul_bytes_are_unparseable() {
    assert_eq!(classes("select 1\0; drop table t"), vec![U]);
}

proptest::proptest! {
    #[test]
    fn arbitrary_strings_never_panic(sql in "\\PC{0,200}") {
        let stmts = classify(&sql);
        for s in &stmts {
            let _ = s.text(&sql);
        }
        let _ = authorize(AccessLevel::Read, &stmts);
    }

    #[test]
    fn sql_like_strings_never_panic(sql in "(select|insert|;|'|\"|\\$\\$|for|update|nextval|\\(|\\)|U&|é| |1|t|--|\n){0,30}") {
        let stmts = classify(&sql);
        for s in &stmts {
            let _ = s.fingerprint(&sql);
        }
    }
}
