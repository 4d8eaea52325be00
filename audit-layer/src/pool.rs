//! Connection pools with every wait bounded.
//!
//! deadpool's timeouts default to none, so `Pool::get` can wait forever; tokio-postgres has
//! no connect timeout unless asked. Both the writer and auditd build their pools here.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::NoTls;

use crate::error::Error;

/// How a pool connects and how long it may wait.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_size: usize,
    /// Longest wait for a free connection.
    pub wait_timeout: Duration,
    /// Longest time to open a new connection (TCP, TLS and authentication).
    pub create_timeout: Duration,
    /// Longest time to check a returned connection before reuse.
    pub recycle_timeout: Duration,
    /// `application_name` shown in `pg_stat_activity`, unless the URL sets one.
    pub application_name: String,
    /// Server-side `statement_timeout` for every connection (none by default). The writer
    /// also times out each call itself, so it never depends on this.
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 4,
            wait_timeout: Duration::from_secs(5),
            create_timeout: Duration::from_secs(5),
            recycle_timeout: Duration::from_secs(5),
            application_name: "audit-layer".to_owned(),
            statement_timeout: None,
        }
    }
}

/// Builds a pool for a `postgres://` URL or `key=value` connection string.
///
/// No connection is opened here: the pool connects on first use, so an application can
/// start while the database is unreachable. Connections use TCP keepalives, so a peer that
/// vanished is noticed.
///
/// ```
/// use audit_layer::pool::{connect_pool, PoolOptions};
///
/// # fn main() -> Result<(), audit_layer::Error> {
/// let pool = connect_pool("postgres://app@localhost/app", &PoolOptions::default())?;
/// assert_eq!(pool.status().size, 0); // nothing opened yet
/// # Ok(()) }
/// ```
pub fn connect_pool(url: &str, options: &PoolOptions) -> Result<Pool, Error> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| Error::Config(format!("invalid database URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name(&options.application_name);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.create_timeout);
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let mut builder = Pool::builder(manager).max_size(options.max_size);
    if let Some(timeout) = options.statement_timeout {
        // Set on each new connection rather than sent in the startup packet's `options`,
        // which PgBouncer (before 1.20) refuses: this way the pool works through it in
        // session mode too (in transaction mode a SET lands on whichever server
        // connection runs it, which is why the README recommends session mode).
        let set = format!("SET statement_timeout = {}", timeout.as_millis());
        builder = builder.post_create(Hook::async_fn(move |client, _| {
            let set = set.clone();
            Box::pin(async move { client.batch_execute(&set).await.map_err(HookError::Backend) })
        }));
    }
    builder
        .timeouts(Timeouts {
            wait: Some(options.wait_timeout),
            create: Some(options.create_timeout),
            recycle: Some(options.recycle_timeout),
        })
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| Error::Config(format!("cannot build the connection pool: {e}")))
}
