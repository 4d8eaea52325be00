//! The HTTP server: accepting connections (plain, or TLS with the `tls` feature), serving
//! each with hyper through the router (`connection`), shutting down gracefully (in-flight
//! requests finish, streams are told to end, all within a cap).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use audit_layer::AuditHandle;
use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Dispatch;

use crate::auth::TokenStore;
use crate::query::CommitNotices;
use crate::state::{App, Limits};
use connection::serve_connection;

mod connection;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tls")]
pub use tls::Certificate;
#[cfg(feature = "tls")]
pub use tokio_rustls::TlsAcceptor;

/// Without the `tls` feature no acceptor can exist: [`ServerOptions::tls`] is always
/// `None`, and auditd serves plain HTTP.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub enum TlsAcceptor {}

/// How the server behaves, beyond its listener and pool.
pub struct ServerOptions {
    /// The bearer tokens; replaceable while serving (`TokenStore::replace`).
    pub tokens: Arc<TokenStore>,
    /// The timeouts, bounds and intervals of the API.
    pub limits: Limits,
    /// Longest wait for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Where access records go (`None`: the global subscriber).
    pub access_audit: Option<Dispatch>,
    /// The access-audit writer, whose counters /metrics shows.
    pub audit_handle: Option<Arc<AuditHandle>>,
    /// Commit notices ([`crate::commit_notices`]), which wake tails before their next
    /// poll; `None` to rely on polling.
    pub commit_notices: Option<CommitNotices>,
    /// The primary's pool, when the query pool serves reads from a hot standby: the
    /// ingest's idempotency lookups go to it, and /metrics shows how far the standby runs
    /// behind it (`crate::replication`). `None`: the query pool's database takes both.
    pub write_pool: Option<Pool>,
    /// Serve HTTPS with this ([`Certificate::acceptor`]); `None` for plain HTTP.
    pub tls: Option<TlsAcceptor>,
}

/// Serves until `shutdown` completes, then shuts down gracefully.
///
/// Refuses to serve a non-loopback address without tokens: the audit log is sensitive.
pub async fn serve(
    listener: TcpListener,
    pool: Pool,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let local = listener.local_addr()?;
    if options.tokens.current().is_empty() && !local.ip().is_loopback() {
        bail!(
            "refusing to serve the audit log on {local} without bearer tokens: configure \
             --token-file or AUDITD_TOKENS, or listen on a loopback address"
        );
    }
    let (stop_streams, stopping) = watch::channel(false);
    let app = Arc::new(App::new(
        (pool, options.write_pool),
        options.tokens,
        options.limits,
        stopping,
        options.access_audit,
        options.audit_handle,
        options.commit_notices,
    ));
    let sampler = tokio::spawn(crate::query::renew_periodically(
        app.pool.clone(),
        app.text_sample.clone(),
        app.limits.text_sample_interval,
    ));
    let replication = tokio::spawn(crate::replication::watch(
        app.pool.clone(),
        app.write_pool.clone(),
        app.replication.clone(),
        app.limits.replication_sample_interval,
    ));
    #[cfg(feature = "tls")]
    let handshakes = tls::handshake_slots();
    let mut shutdown = std::pin::pin!(shutdown);
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(address = %local, scheme, "auditd is serving");
    if options.tls.is_none() && !local.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on a network address: bearer tokens and audit records cross \
             the network in clear text; use --tls-cert and --tls-key, or a TLS-terminating proxy"
        );
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, usually: wait instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(slot) = app.connections.admit(peer.ip()) else {
                    // Closed before a byte is read; counted in /metrics.
                    tracing::debug!(%peer, "connection bound reached; connection closed");
                    continue;
                };
                match &options.tls {
                    None => serve_connection(&app, stream, peer, slot),
                    #[cfg(not(feature = "tls"))]
                    Some(never) => match *never {},
                    #[cfg(feature = "tls")]
                    Some(tls) => tls::serve_tls_connection(
                        &app,
                        tls,
                        &handshakes,
                        stream,
                        peer,
                        slot,
                    ),
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    sampler.abort();
    replication.abort();
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_streams.send(true);
    tokio::select! {
        () = async {
            app.connections.all_closed().await;
            app.streams_finished().await;
        } => tracing::info!("all connections closed"),
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!(grace = ?options.shutdown_grace, "connections still open after the grace period are cut when auditd exits");
        }
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn termination_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
