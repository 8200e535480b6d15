//! PostgreSQL: the connection pool, versioned migrations, and one module per
//! table. Queries live next to the row type they produce, and run through
//! [`Sql`] (each statement a client span of the trace).
//!
//! An adapter: may import only the platform (`error`, `error_code`, `otel`,
//! `tls`, `config`); nothing of the domain or the edge.

pub mod accounts;
pub mod audit;
pub mod batches;
pub mod exports;
pub mod generations;
pub mod holds;
pub mod images;
pub mod ledger;
pub mod models;
pub mod moderation;
pub mod purchases;
mod traced;
pub mod uploads;
pub mod usage;

pub use traced::{Sql, Tx};

/// A position in a newest-first listing: the last item's time and id.
pub type Cursor = (chrono::DateTime<chrono::Utc>, uuid::Uuid);

use std::{str::FromStr, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_postgres::{NoTls, config::SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Error, Result};

mod embedded {
    refinery::embed_migrations!("../infra/migrations");
}

/// Longest a statement may run (PostgreSQL's `statement_timeout`), unless
/// `DATABASE_URL` sets its own `options`.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether connections use TLS (verified against the Mozilla roots, which
/// cover RDS Proxy's ACM certificates, plus `ca_file`). Never a plain-text
/// fallback over a network: `require` always; `prefer` (the default) means
/// `require` for any host but the loopback interface or a Unix socket, where
/// it stays plain (as `disable` does everywhere). `strict` (outside
/// development) also refuses `disable` over a network.
fn wants_tls(pg: &tokio_postgres::Config, strict: bool) -> Result<bool> {
    let local = pg.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    });
    match pg.get_ssl_mode() {
        SslMode::Disable if strict && !local => Err(Error::Internal(
            "DATABASE_URL: sslmode=disable over a network is refused outside development".into(),
        )),
        SslMode::Disable => Ok(false),
        SslMode::Prefer => Ok(!local),
        _ => Ok(true),
    }
}

/// A connection that stops waiting for a peer that no longer acknowledges what
/// it is sent (a network partition, a dead server), or sends nothing when idle.
fn bound_tcp(pg: &mut tokio_postgres::Config) {
    pg.keepalives_idle(Duration::from_secs(30));
    #[cfg(target_os = "linux")]
    pg.tcp_user_timeout(TCP_USER_TIMEOUT);
}

/// How long sent data may stay unacknowledged before the connection is dropped.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

/// A rustls connector trusting the Mozilla roots and the PEM certificates in `ca_file`.
fn tls(ca_file: Option<&str>) -> Result<MakeRustlsConnect> {
    let mut roots = crate::tls::roots();
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Internal(format!("DATABASE_CA_FILE: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| Error::Internal(format!("DATABASE_CA_FILE: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Internal(format!("DATABASE_CA_FILE: {e}")))?;
        }
    }
    let config =
        crate::tls::client_config(roots).map_err(|e| Error::Internal(format!("tls: {e}")))?;
    Ok(MakeRustlsConnect::new(config))
}

fn parse(database_url: &str) -> Result<tokio_postgres::Config> {
    tokio_postgres::Config::from_str(database_url)
        .map_err(|e| Error::Internal(format!("DATABASE_URL: {e}")))
}

/// Builds the pool; connections are opened on first use, not here. `strict`:
/// outside development (see [`wants_tls`]).
pub fn pool(
    database_url: &str,
    max_size: usize,
    ca_file: Option<&str>,
    strict: bool,
) -> Result<Pool> {
    let mut pg = parse(database_url)?;
    pg.connect_timeout(Duration::from_secs(5));
    bound_tcp(&mut pg);
    if pg.get_options().is_none() {
        // No statement runs longer than any function: a stuck query ends as an error.
        pg.options(format!(
            "-c statement_timeout={}",
            STATEMENT_TIMEOUT.as_millis()
        ));
    }
    // Every checkout is checked with a round trip, so a connection broken by a
    // restart or failover is dropped, never handed to a request.
    let cfg = ManagerConfig {
        recycling_method: RecyclingMethod::Verified,
    };
    let manager = if wants_tls(&pg, strict)? {
        pg.ssl_mode(SslMode::Require);
        Manager::from_config(pg, tls(ca_file)?, cfg)
    } else {
        Manager::from_config(pg, NoTls, cfg)
    };
    // Bounded waits: an exhausted pool or an unreachable server is an error, never a hang.
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()
        .map_err(|e| Error::Internal(format!("pool: {e}")))
}

/// A connection being opened in the background.
type Opening = tokio::task::JoinHandle<Result<Object, PoolError>>;

/// The pool, and the connection an instance's first request opens early, in
/// the background, while it checks the caller ([`Db::open_early`]).
#[derive(Debug)]
pub struct Db {
    pool: Pool,
    early: std::sync::Mutex<Option<Opening>>,
}

impl Db {
    pub fn new(pool: Pool) -> Db {
        Db {
            pool,
            early: std::sync::Mutex::new(None),
        }
    }

    /// The pool itself.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Starts opening a connection in the background, so that the first
    /// checkout finds it open or on its way instead of starting to connect.
    /// Nothing fails here: the first [`Db::get`] takes the outcome.
    pub fn open_early(&self) {
        let pool = self.pool.clone();
        let task = tokio::spawn(async move { pool.get().await });
        if let Some(previous) = self.lock_early().replace(task) {
            previous.abort();
        }
    }

    /// A connection from the pool. The first call after [`Db::open_early`]
    /// waits for that connection if it is still being opened, and gets its
    /// error if it cannot be (one wait, not two in a row: the next call tries
    /// again). One opened earlier goes back to the pool first, so it is
    /// checked like any idle connection before it is handed out.
    pub async fn get(&self) -> Result<Object, PoolError> {
        let early = self.lock_early().take();
        if let Some(early) = early
            && !early.is_finished()
            && let Ok(opened) = early.await
        {
            return opened;
        }
        // One that had finished is dropped by now: its connection is back in
        // the pool (its failure is retried here).
        self.pool.get().await
    }

    fn lock_early(&self) -> std::sync::MutexGuard<'_, Option<Opening>> {
        // Poisoned only if a holder panicked; the handle inside is still usable.
        self.early.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Applies pending migrations (idempotent); returns the versions applied now.
pub async fn migrate(database_url: &str, ca_file: Option<&str>) -> Result<Vec<String>> {
    let mut pg = parse(database_url)?;
    pg.connect_timeout(Duration::from_secs(10));
    bound_tcp(&mut pg);
    let mut client = if wants_tls(&pg, false)? {
        pg.ssl_mode(SslMode::Require);
        let (client, conn) = pg.connect(tls(ca_file)?).await?;
        tokio::spawn(conn);
        client
    } else {
        let (client, conn) = pg.connect(NoTls).await?;
        tokio::spawn(conn);
        client
    };
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|e| Error::Internal(format!("migrations: {e}")))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_over_any_network_and_never_a_plain_fallback() {
        let tls_for = |url: &str, strict| wants_tls(&parse(url).unwrap(), strict);
        // Loopback: as asked (plain by default).
        assert!(!tls_for("postgres://u@localhost/db", true).unwrap());
        assert!(!tls_for("postgres://u@127.0.0.1:5433/db", true).unwrap());
        assert!(!tls_for("postgres://u@localhost/db?sslmode=disable", true).unwrap());
        assert!(tls_for("postgres://u@127.0.0.1/db?sslmode=require", false).unwrap());
        // A network: `prefer` (the default) is `require`; `disable` only in development.
        assert!(tls_for("postgres://u@proxy.example.com/db", false).unwrap());
        assert!(tls_for("postgres://u@10.0.0.5/db?sslmode=prefer", true).unwrap());
        assert!(tls_for("postgres://u@proxy.example.com/db?sslmode=require", true).unwrap());
        assert!(!tls_for("postgres://u@10.88.0.1/db?sslmode=disable", false).unwrap());
        assert!(tls_for("postgres://u@proxy.example.com/db?sslmode=disable", true).is_err());
        assert!(tls(None).is_ok());
        assert!(tls(Some("/nonexistent/ca.pem")).is_err());
    }
}
