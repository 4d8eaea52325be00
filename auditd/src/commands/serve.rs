//! The `serve` command: from flags to a running server, and a clean stop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use audit_layer::pool::{connect_pool, PoolOptions};
use deadpool_postgres::Pool;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use super::cli::ServeArgs;
use super::{logging, upkeep};
use crate::auth::{TokenStore, Tokens};
use crate::query::commit_notices;
use crate::seal::{publish, seal_periodically, sealer_for, SigningKey};
#[cfg(feature = "tls")]
use crate::server::Certificate;
use crate::server::{self, ServerOptions, TlsAcceptor};
use crate::state::{IngestLimits, Limits};

/// Runs `auditd serve` until SIGINT or SIGTERM, then lets the access-audit writer commit.
pub async fn run(args: ServeArgs, log_filter: &str) -> Result<()> {
    let Some(url) = args.database_url.clone().filter(|u| !u.trim().is_empty()) else {
        bail!("no database: set DATABASE_URL or --database-url (see auditd --help)");
    };
    let tokens = load_tokens(&args)?;
    // A key that cannot be read stops the start, before anything is served.
    if let Some(path) = &args.signing_key {
        SigningKey::load(path)?;
    }
    let write_url = write_url(&args, &url);
    crate::replication::refuse_standby_for_writes(&write_url, args.db_timeout).await?;
    let audit_handle = logging::audited_with(&write_url, log_filter, args.spool_dir.as_deref())?;
    let pool = query_pool(&url, &args)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let audit_handle = Arc::new(audit_handle);
    let served =
        serve_until_signal(listener, pool, &url, tokens, &args, audit_handle.clone()).await;
    logging::shutdown_audit(&audit_handle).await;
    final_seal(&write_url, &args).await;
    served
}

/// Where auditd writes: `--audit-database-url`, else `--database-url`.
fn write_url(args: &ServeArgs, read_url: &str) -> String {
    args.audit_database_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| read_url.to_owned())
}

/// With `--signing-key`, seals once more at exit, so that the records committed while
/// shutting down (the access records of the last reads) do not wait for the next start.
pub async fn final_seal(url: &str, args: &ServeArgs) {
    let Some(key) = &args.signing_key else {
        return;
    };
    let sealed = async {
        let mut sealer = sealer_for(
            SigningKey::load(key)?,
            &args.public_key,
            &args.publish_checkpoints,
        )?;
        let mut client = crate::db::connect(url, args.db_timeout).await?;
        let sealed = tokio::time::timeout(args.db_timeout, sealer.seal(&mut client))
            .await
            .context("the seal took too long")??;
        if let Some(note) = &sealed.note {
            for destination in &args.publish_checkpoints {
                publish(destination, note).await?;
            }
        }
        anyhow::Ok(sealed)
    };
    match sealed.await {
        Ok(sealed) => tracing::info!(
            tree_size = sealed.tree_size,
            batches = sealed.batches,
            "log sealed"
        ),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "the last seal failed; the next seal takes it up"
        ),
    }
}

/// The pool for queries, with every wait bounded and a server-side statement timeout.
pub fn query_pool(url: &str, args: &ServeArgs) -> Result<Pool> {
    pool_of(url, args.pool_size, args)
}

fn pool_of(url: &str, max_size: usize, args: &ServeArgs) -> Result<Pool> {
    connect_pool(
        url,
        &PoolOptions {
            max_size,
            wait_timeout: args.db_timeout,
            create_timeout: args.db_timeout,
            recycle_timeout: args.db_timeout,
            application_name: "auditd".to_owned(),
            statement_timeout: Some(args.statement_timeout),
        },
    )
    .context("invalid database configuration")
}

/// The tokens of `--token-file` and `--tokens` together; warns when there are none.
pub fn load_tokens(args: &ServeArgs) -> Result<Tokens> {
    let mut tokens = Tokens::none();
    if let Some(path) = &args.token_file {
        tokens = tokens.merge(Tokens::from_file(path)?)?;
    }
    if let Some(list) = &args.tokens {
        tokens = tokens
            .merge(Tokens::from_list(list)?)
            .context("AUDITD_TOKENS and the token file")?;
    }
    if tokens.is_empty() {
        tracing::warn!(
            "no bearer tokens configured: anyone who can reach the address may read the audit logs"
        );
    }
    Ok(tokens)
}

/// Serves (with partition upkeep, and sealing with `--signing-key`, alongside) until
/// SIGINT or SIGTERM; on SIGHUP, reads the tokens and the TLS certificate again.
///
/// Queries go to `pool` (`read_url`'s); everything that writes goes to
/// `--audit-database-url` when it is given, which lets `read_url` be a hot standby.
pub async fn serve_until_signal(
    listener: TcpListener,
    pool: Pool,
    read_url: &str,
    tokens: Tokens,
    args: &ServeArgs,
    audit_handle: Arc<audit_layer::AuditHandle>,
) -> Result<()> {
    let database_url = &write_url(args, read_url);
    // One for each write handled at once (its idempotency lookup), and a few for upkeep
    // and the replication sample.
    let write_pool = if database_url == read_url {
        None
    } else {
        Some(pool_of(database_url, args.ingest_max_concurrent + 2, args)?)
    };
    let upkeep = (!args.upkeep_interval.is_zero()).then(|| {
        tokio::spawn(upkeep::run(
            write_pool.clone().unwrap_or_else(|| pool.clone()),
            args.upkeep_interval,
            audit_layer::schema::DEFAULT_MONTHS_AHEAD,
            database_url.clone(),
        ))
    });
    let counting = (!args.counts_interval.is_zero()).then(|| {
        tokio::spawn(crate::counts::keep_counting(
            write_pool.clone().unwrap_or_else(|| pool.clone()),
            args.counts_interval,
        ))
    });
    let retention = match super::retention::serve_options(args)? {
        Some(options) => {
            tracing::info!(keep = %options.keep, dir = %options.archive_dir.display(), every = ?args.retention_interval, "retention on");
            Some(tokio::spawn(super::retention::retain_periodically(
                database_url.to_owned(),
                args.db_timeout,
                options,
                args.retention_interval,
            )))
        }
        None => None,
    };
    let (certificate, tls) = tls_from_args(args)?;
    let sealing = match &args.signing_key {
        Some(path) => {
            let sealer = sealer_for(
                SigningKey::load(path)?,
                &args.public_key,
                &args.publish_checkpoints,
            )?;
            tracing::info!(
                log = sealer.key().name(),
                interval = ?args.seal_interval,
                "sealing the log"
            );
            Some(tokio::spawn(seal_periodically(
                database_url.to_owned(),
                args.db_timeout,
                sealer,
                args.seal_interval,
                args.publish_checkpoints.clone(),
            )))
        }
        None => None,
    };
    let tokens = Arc::new(TokenStore::new(tokens));
    let reloads = tokio::spawn(reload_on_hangup(
        args.clone(),
        listener.local_addr()?,
        tokens.clone(),
        certificate,
    ));
    let options = ServerOptions {
        tokens,
        limits: Limits {
            request_timeout: args.request_timeout,
            max_concurrent_requests: args.max_concurrent_requests,
            max_streams: args.max_streams,
            max_connections: args.max_connections,
            max_connections_per_ip: args.max_connections_per_ip,
            header_read_timeout: args.header_timeout,
            ingest: IngestLimits {
                max_body_bytes: args.ingest_max_body,
                max_records: args.ingest_max_records,
                records_per_second: args.ingest_rate,
                max_ahead: args.ingest_max_ahead,
                max_behind: args.ingest_max_behind,
                max_concurrent: args.ingest_max_concurrent,
            },
            ..Limits::default()
        },
        shutdown_grace: args.shutdown_grace,
        access_audit: None,
        audit_handle: Some(audit_handle),
        // A standby refuses LISTEN; the primary announces commits as they happen (a
        // standby's tail may look a moment early, and looks again at its next poll).
        commit_notices: Some(commit_notices(database_url)),
        write_pool,
        tls,
    };
    let result = server::serve(listener, pool, options, server::termination_signal()).await;
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    // A catch-up cut short rolls back; the next one counts the same rows.
    if let Some(counting) = counting {
        counting.abort();
    }
    // A run cut short drops nothing it has not recorded: the drop and its record commit
    // together.
    if let Some(retention) = retention {
        retention.abort();
    }
    // A seal cut short rolls back; `final_seal` seals what the shutdown commits.
    if let Some(sealing) = sealing {
        sealing.abort();
    }
    reloads.abort();
    result
}

/// The certificate of `--tls-cert` and `--tls-key`, and its acceptor; neither without them.
#[cfg(feature = "tls")]
fn tls_from_args(args: &ServeArgs) -> Result<(Option<Arc<Certificate>>, Option<TlsAcceptor>)> {
    let certificate = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Certificate::load(cert, key)?),
        _ => None,
    };
    let tls = certificate
        .as_ref()
        .map(Certificate::acceptor)
        .transpose()?;
    Ok((certificate, tls))
}

/// Built without TLS: a certificate is an error rather than quietly serving plain HTTP.
#[cfg(not(feature = "tls"))]
fn tls_from_args(args: &ServeArgs) -> Result<(Option<Arc<Certificate>>, Option<TlsAcceptor>)> {
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        bail!(
            "--tls-cert and --tls-key need auditd built with the `tls` feature (on by default); \
             rebuild without --no-default-features, or terminate TLS in a proxy"
        );
    }
    Ok((None, None))
}

/// Without the `tls` feature there is no certificate to reload.
#[cfg(not(feature = "tls"))]
enum Certificate {}

#[cfg(not(feature = "tls"))]
impl Certificate {
    fn reload(&self) -> Result<()> {
        match *self {}
    }
}

/// On each SIGHUP, reads the tokens (file and `AUDITD_TOKENS`) and the TLS certificate
/// again. What fails to load is reported and the old stays in force, so a typo in the
/// token file never locks everyone out.
async fn reload_on_hangup(
    args: ServeArgs,
    local: SocketAddr,
    tokens: Arc<TokenStore>,
    certificate: Option<Arc<Certificate>>,
) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reloading needs a restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the tokens and the TLS certificate");
        match load_tokens(&args) {
            Ok(fresh) if fresh.is_empty() && !local.ip().is_loopback() => tracing::error!(
                "tokens not reloaded: none are configured now, and {local} is not loopback"
            ),
            Ok(fresh) => {
                let count = fresh.len();
                tokens.replace(fresh);
                tracing::info!(tokens = count, "tokens reloaded");
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "tokens not reloaded; the old stay"
            ),
        }
        if let Some(certificate) = &certificate {
            match certificate.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "TLS certificate not reloaded; the old stays"
                ),
            }
        }
    }
}
