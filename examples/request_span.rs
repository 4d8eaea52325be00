//! A request span carries the user and the client IP to every audit event inside it,
//! including the user learnt only after authentication (`Span::record`):
//! `cargo run --example request_span`.
//!
//! It also shows the shutdown path a service should have: on Ctrl-C or SIGTERM it stops
//! taking requests, then `shutdown` commits every record before the process exits.

mod common;

use std::time::Duration;

use tracing::{field, info, info_span, warn, Instrument};
use tracing_subscriber::prelude::*;

/// A request as a web framework would hand it over.
struct Request {
    client_ip: &'static str,
    bearer: &'static str,
    path: &'static str,
}

async fn handle_request(request: Request) {
    // The span is opened before anyone is authenticated: username starts empty.
    let span = info_span!(
        "request",
        username = field::Empty,
        user_id = field::Empty,
        ip_address = request.client_ip,
        path = request.path
    );
    async {
        let Some((username, user_id)) = authenticate(request.bearer) else {
            warn!(target: "audit", event_type = "authentication", username = "anonymous",
                  "Rejected request with an invalid token");
            return;
        };
        tracing::Span::current()
            .record("username", username)
            .record("user_id", user_id);
        tokio::time::sleep(Duration::from_millis(5)).await; // the actual work
        info!(target: "audit", event_type = "configuration_change",
              resource_type = "setting", resource_id = "backup.schedule",
              old = "0 2 * * *", new = "30 1 * * *", "Backup schedule changed");
    }
    .instrument(span)
    .await
}

fn authenticate(bearer: &str) -> Option<(&'static str, i64)> {
    match bearer {
        "token-of-carol" => Some(("carol", 4)),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> Result<(), common::Error> {
    let db = common::database().await?;
    let (audit, handle) = audit_layer::AuditLayer::builder()
        .database_url(&db.url)
        .build()?;
    tracing_subscriber::registry().with(audit).init();

    let requests = async {
        handle_request(Request {
            client_ip: "2001:db8::42",
            bearer: "token-of-carol",
            path: "/settings",
        })
        .await;
        handle_request(Request {
            client_ip: "203.0.113.66",
            bearer: "stolen",
            path: "/settings",
        })
        .await;
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = requests => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted: committing audit records"),
        _ = terminate.recv() => eprintln!("terminated: committing audit records"),
    }

    let stats = handle.shutdown(Duration::from_secs(10)).await?;
    eprintln!("{} audit records committed", stats.written);
    common::print_records(&db.url, 10).await
}
