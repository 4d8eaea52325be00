//! auditd: the audit log daemon, as a library so that tests and benches can run its server
//! in-process.
//!
//! A request travels through these folders, in this order:
//!
//! | step | module |
//! |---|---|
//! | connections accepted (plain or TLS), served by hyper, shut down gracefully | `server/` |
//! | the route found; method, token, bound on reads at once, timeout; metrics after | `router/` |
//! | the handler of the route: a plain async function taking what it needs | `handlers/` |
//! | parameters into parameterised SQL; rows back into JSON and CSV; cursors; commit notices | `query/` |
//! | the answer, and the access record every read leaves (`audit_access`) | `access` |
//!
//! Features: `tls` (on by default) serves HTTPS through rustls; without it auditd serves
//! plain HTTP only, for a TLS-terminating proxy in front.
//!
//! Beside them: `admission` (how many connections, in all and per address), `state` (what
//! handlers share), `auth/` (bearer tokens, their scopes, and signed download links),
//! `idempotency` and `rate` (what keeps `POST /api/v1/events` from writing a retry twice,
//! or one sender from crowding out the rest), `metrics` (the request counters), `seal/` (the signed log: sealing, proofs,
//! checking), `retention/` (old partitions into provable archives, legal holds, restore),
//! `commands/` (the command line: `serve`, `migrate`, `partitions`, `text-index`, `keygen`,
//! `seal`, `verify`, `retention`, `hold`, `restore`, `demo`), and small codecs (`hex`,
//! `query_string`, `duration`).
//!
//! Serving in-process, as the tests do:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use std::sync::Arc;
//!
//! let pool = audit_layer::pool::connect_pool(
//!     "postgres://auditd@localhost/app",
//!     &audit_layer::pool::PoolOptions::default(),
//! )?;
//! let tokens = auditd::Tokens::parse(["ops:a-secret-of-16-chars-or-more"])?;
//! let options = auditd::ServerOptions {
//!     tokens: Arc::new(auditd::TokenStore::new(tokens)),
//!     limits: auditd::Limits::default(),
//!     shutdown_grace: std::time::Duration::from_secs(10),
//!     access_audit: None,
//!     audit_handle: None,
//!     commit_notices: None,
//!     write_pool: None,
//!     tls: None,
//! };
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! auditd::serve(listener, pool, options, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

#![warn(missing_docs)]

mod access;
mod admission;
mod auth;
pub mod commands;
mod counts;
mod db;
mod duration;
mod handlers;
mod hex;
mod http;
mod idempotency;
mod metrics;
mod query;

mod query_string;
mod rate;
mod replaceable;
pub mod replication;
pub mod retention;
mod router;
pub mod seal;
mod server;
mod state;

pub use auth::{Scope, Scopes, TokenStore, Tokens};
pub use duration::parse_duration;
pub use query::{commit_notices, CommitNotices, PageCursor, TailCursor};
pub use query_string::encode as encode_query_value;
pub use router::{Methods, Route, RouteId, ROUTES};
#[cfg(feature = "tls")]
pub use server::Certificate;
pub use server::{serve, ServerOptions, TlsAcceptor};
pub use state::{IngestLimits, Limits};
