//! Real PostgreSQL servers for tests: the demo's throwaway server,
//! re-exported, plus a seeded-server shortcut. (PgBouncer lives in
//! [`crate::pgbouncer`].)

pub use juris_demo::postgres::{
    DEFAULT_CUSTOMERS, FakeCustomer, ServerTls, TempPostgres, TempPostgresOptions, UpstreamAuth,
    fake_customer, luhn_valid, seed_customers, ssn_valid,
};

/// A server with `auth` over TCP, a random superuser password, and
/// [`DEFAULT_CUSTOMERS`] rows in `public.customers`.
pub async fn start_seeded(auth: UpstreamAuth) -> anyhow::Result<TempPostgres> {
    let pg = TempPostgres::start(TempPostgresOptions {
        auth,
        ..TempPostgresOptions::default()
    })
    .await?;
    seed_customers(&pg, DEFAULT_CUSTOMERS).await?;
    Ok(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_seeded_has_the_customers() -> anyhow::Result<()> {
        let pg = start_seeded(UpstreamAuth::Md5).await?;
        let count = pg.psql("select count(*) from public.customers").await?;
        assert_eq!(count.trim(), DEFAULT_CUSTOMERS.to_string());
        assert_eq!(pg.auth(), UpstreamAuth::Md5);
        assert!(!pg.password.is_empty());
        pg.stop().await?;
        Ok(())
    }
}
