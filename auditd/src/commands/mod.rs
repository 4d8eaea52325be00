//! The command line and what each command does: `serve` (the default), `migrate`,
//! `partitions`, `text-index`, `demo`.

mod cli;
mod demo;
mod logging;
mod schema;
mod serve;
mod upkeep;

use anyhow::Result;

pub use cli::{Cli, Command, DatabaseArgs, DemoArgs, ServeArgs};

/// Runs the command `cli` names, with auditd's own diagnostics filtered by `--log`.
pub async fn run(cli: Cli) -> Result<()> {
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
