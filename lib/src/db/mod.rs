//! PostgreSQL: the connection pool, versioned migrations, and one module per
//! table. Queries live next to the row type they produce.

pub mod generations;
pub mod images;
pub mod models;

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::{Error, Result};

mod embedded {
    refinery::embed_migrations!("../infra/migrations");
}

/// Builds the pool; connections are opened on first use, not here.
pub fn pool(database_url: &str, max_size: usize) -> Result<Pool> {
    let pg = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| Error::Internal(format!("DATABASE_URL: {e}")))?;
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(|e| Error::Internal(format!("pool: {e}")))
}

/// Applies pending migrations (idempotent); returns the versions applied now.
pub async fn migrate(database_url: &str) -> Result<Vec<String>> {
    let (mut client, conn) = tokio_postgres::connect(database_url, NoTls).await?;
    let driver = tokio::spawn(conn);
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|e| Error::Internal(format!("migrations: {e}")))?;
    drop(client);
    let _ = driver.await;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}
