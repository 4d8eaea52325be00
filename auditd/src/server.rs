//! The HTTP server: accepting connections, serving them with hyper, shutting down
//! gracefully (in-flight requests finish, streams are told to end, all within a cap).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use audit_layer::AuditHandle;
use deadpool_postgres::Pool;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Dispatch;

use crate::app::{App, Limits};
use crate::auth::Tokens;

/// How the server behaves, beyond its listener and pool.
pub struct ServerOptions {
    pub tokens: Tokens,
    pub limits: Limits,
    /// Longest wait for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Where access records go (`None`: the global subscriber).
    pub access_audit: Option<Dispatch>,
    pub audit_handle: Option<Arc<AuditHandle>>,
    /// Commit notices ([`crate::listen::commit_notices`]), which wake tails before their
    /// next poll; `None` to rely on polling.
    pub commit_notices: Option<crate::listen::CommitNotices>,
}

/// Serves until `shutdown` completes, then shuts down gracefully.
///
/// Refuses to serve a non-loopback address without tokens: the audit log is sensitive.
pub async fn run(
    listener: TcpListener,
    pool: Pool,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let local = listener.local_addr()?;
    if options.tokens.is_empty() && !local.ip().is_loopback() {
        bail!(
            "refusing to serve the audit log on {local} without bearer tokens: configure \
             --token-file or AUDITD_TOKENS, or listen on a loopback address"
        );
    }
    let (stop_streams, stopping) = watch::channel(false);
    let app = Arc::new(App::new(
        pool,
        options.tokens,
        options.limits,
        stopping,
        options.access_audit,
        options.audit_handle,
        options.commit_notices,
    ));
    let sampler = tokio::spawn(crate::text_search::renew_periodically(
        app.pool.clone(),
        app.text_sample.clone(),
        app.limits.text_sample_interval,
    ));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(address = %local, "auditd is serving");
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
                serve_connection(&app, &graceful, stream, peer);
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    sampler.abort();
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_streams.send(true);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!(grace = ?options.shutdown_grace, "connections still open after the grace period; closing them");
        }
    }
    Ok(())
}

fn serve_connection(
    app: &Arc<App>,
    graceful: &GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let app = app.clone();
    let service = service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(request, peer).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // A client that never finishes its headers does not hold a connection forever.
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    });
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
