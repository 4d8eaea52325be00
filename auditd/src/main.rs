//! auditd: the audit log daemon.
//!
//! Today it keeps the schema (`migrate`, `partitions`) and runs the quickstart (`demo`).

mod cli;
mod demo;
mod logging;
mod schema;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command};

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate(db) => {
            logging::init(&cli.log, None)?;
            let client = schema::connect(&db.database_url, db.db_timeout).await?;
            schema::migrate(&client, db.db_timeout).await
        }
        Command::Partitions {
            database,
            months_ahead,
        } => {
            logging::init(&cli.log, None)?;
            let client = schema::connect(&database.database_url, database.db_timeout).await?;
            schema::ensure_partitions(&client, months_ahead, database.db_timeout).await?;
            Ok(())
        }
        Command::Demo(args) => demo::run(args, &cli.log).await,
    }
}
