//! Onboarding devices to Nautobot, once successfully and once failing, as the original
//! design's `log_device_onboarding` recorded them: `cargo run --example device_onboarding`.

mod common;

use std::time::Duration;

use tracing::{error, info, info_span};
use tracing_subscriber::prelude::*;

#[derive(Debug)]
struct NautobotError(String);

impl std::fmt::Display for NautobotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NautobotError {}

/// Stands in for the Nautobot API call.
fn create_device(name: &str) -> Result<String, NautobotError> {
    if name.starts_with("edge-") {
        Ok(format!("{:08x}", name.len() * 0x1f2e3d))
    } else {
        Err(NautobotError("device type 'unknown' does not exist".into()))
    }
}

fn onboard_device(name: &str) {
    match create_device(name) {
        Ok(device_id) => info!(
            target: "audit",
            event_type = "onboarding",
            resource_type = "device",
            resource_id = %device_id,
            resource_name = name,
            "Device '{name}' onboarded to Nautobot"
        ),
        Err(e) => error!(
            target: "audit",
            event_type = "onboarding",
            resource_type = "device",
            resource_name = name,
            error = &e as &dyn std::error::Error,
            "Device '{name}' onboarded to Nautobot - Error: {e}"
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), common::Error> {
    let db = common::database().await?;
    let (audit, handle) = audit_layer::AuditLayer::builder()
        .database_url(&db.url)
        .build()?;
    tracing_subscriber::registry().with(audit).init();

    // Who is onboarding comes from the authenticated request, carried by its span.
    info_span!(
        "request",
        username = "alice",
        user_id = 2,
        ip_address = "198.51.100.23"
    )
    .in_scope(|| {
        onboard_device("edge-fra1-01");
        onboard_device("mystery-box-9");
    });

    handle.shutdown(Duration::from_secs(10)).await?;
    common::print_records(&db.url, 10).await
}
