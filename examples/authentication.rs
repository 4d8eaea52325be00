//! Login, logout and a failed login, as the original design's `log_auth_event` recorded
//! them: `cargo run --example authentication`.
//!
//! The password travels in a field named `password`, as careless code might pass it: the
//! layer stores `[REDACTED]` instead.

mod common;

use std::time::Duration;

use tracing::{info, warn};
use tracing_subscriber::prelude::*;

fn login(username: &str, password: &str, ip: &str) -> Option<i64> {
    let user_id = (password == "correct horse").then_some(42);
    match user_id {
        Some(id) => info!(
            target: "audit",
            event_type = "authentication",
            username,
            user_id = id,
            ip_address = ip,
            "User login"
        ),
        None => warn!(
            target: "audit",
            event_type = "authentication",
            username,
            ip_address = ip,
            password,
            "User login_failed"
        ),
    }
    user_id
}

fn logout(username: &str, user_id: i64, ip: &str) {
    info!(
        target: "audit",
        event_type = "authentication",
        username,
        user_id,
        ip_address = ip,
        "User logout"
    );
}

#[tokio::main]
async fn main() -> Result<(), common::Error> {
    let db = common::database().await?;
    let (audit, handle) = audit_layer::AuditLayer::builder()
        .database_url(&db.url)
        .build()?;
    tracing_subscriber::registry().with(audit).init();

    login("admin", "wrong guess", "203.0.113.66");
    if let Some(user_id) = login("admin", "correct horse", "192.0.2.10") {
        logout("admin", user_id, "192.0.2.10");
    }

    handle.shutdown(Duration::from_secs(10)).await?;
    common::print_records(&db.url, 10).await
}
