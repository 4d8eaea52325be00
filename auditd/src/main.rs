//! auditd: the audit log daemon.

use anyhow::Result;
use clap::Parser;

use auditd::cli::{Cli, Command};
use auditd::{demo, logging, schema, serve};

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve::run(cli.serve, &cli.log).await,
        Some(Command::Serve(args)) => serve::run(*args, &cli.log).await,
        Some(Command::Migrate(db)) => {
            logging::init(&cli.log, None)?;
            let client = schema::connect(&db.database_url, db.db_timeout).await?;
            schema::migrate(&client, db.db_timeout).await
        }
        Some(Command::Partitions {
            database,
            months_ahead,
        }) => {
            logging::init(&cli.log, None)?;
            let client = schema::connect(&database.database_url, database.db_timeout).await?;
            schema::ensure_partitions(&client, months_ahead, database.db_timeout).await?;
            Ok(())
        }
        Some(Command::TextIndex { database, remove }) => {
            logging::init(&cli.log, None)?;
            let client = schema::connect(&database.database_url, database.db_timeout).await?;
            schema::text_index(&client, remove).await
        }
        Some(Command::Demo(args)) => demo::run(args, &cli.log).await,
    }
}
