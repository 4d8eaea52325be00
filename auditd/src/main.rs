//! auditd: the audit log daemon.

use anyhow::Result;
use clap::Parser;

#[tokio::main]
async fn main() -> Result<()> {
    auditd::commands::run(auditd::commands::Cli::parse()).await
}
