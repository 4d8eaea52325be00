//! auditd's subscriber: its own diagnostics to stderr, and (when it writes audit records)
//! the audit layer beside them.

use anyhow::{Context, Result};
use audit_layer::FilteredAuditLayer;
use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Layer, Registry};

/// Installs the global subscriber. `filter` selects diagnostics (`info`,
/// `info,audit_layer=debug`, ...); audit events are selected by the audit layer itself.
pub fn init(filter: &str, audit: Option<FilteredAuditLayer<Registry>>) -> Result<()> {
    let targets: Targets = filter
        .parse()
        .with_context(|| format!("invalid log filter {filter:?}"))?;
    // Two shapes rather than an `Option` layer: a `None` layer reports a maximum level of
    // OFF, which would silence the console too.
    match audit {
        Some(audit) => tracing_subscriber::registry()
            .with(audit)
            .with(console(targets))
            .try_init(),
        None => tracing_subscriber::registry()
            .with(console(targets))
            .try_init(),
    }
    .context("cannot install the tracing subscriber")
}

fn console<S>(targets: Targets) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Audit events are records, not diagnostics: keep them out of the console. (`Targets`
    // matches by prefix, which would also silence `auditd` and `audit_layer`.)
    let not_audit = filter_fn(|metadata| {
        let target = metadata.target();
        target != audit_layer::DEFAULT_TARGET && !target.starts_with("audit::")
    });
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(targets.and(not_audit))
}

/// Installs the global subscriber with an audit layer writing to `url` beside the
/// console diagnostics, for commands that leave audit records; the handle flushes it.
pub fn audited(url: &str, filter: &str) -> Result<audit_layer::AuditHandle> {
    audited_with(url, filter, None)
}

/// As [`audited`], with the writer's spool in `spool_dir` when given (`auditd serve`).
pub fn audited_with(
    url: &str,
    filter: &str,
    spool_dir: Option<&std::path::Path>,
) -> Result<audit_layer::AuditHandle> {
    let mut builder = audit_layer::AuditLayer::builder().database_url(url);
    if let Some(dir) = spool_dir {
        builder = builder.spool_dir(dir);
    }
    let (audit, handle) = builder.build().context("cannot start the audit writer")?;
    init(filter, Some(audit))?;
    Ok(handle)
}

/// How long the audit writer may take to commit its last records at exit.
const AUDIT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives the audit writer up to 10 s to commit what it holds, and logs the outcome.
pub async fn shutdown_audit(handle: &audit_layer::AuditHandle) {
    match handle.shutdown(AUDIT_SHUTDOWN).await {
        Ok(stats) => tracing::info!(written = stats.written, "audit records committed"),
        Err(e) => tracing::error!(error = %e, "audit records may be lost"),
    }
}
