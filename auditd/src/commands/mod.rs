//! The command line and what each command does: `serve` (the default), `migrate`,
//! `partitions`, `text-index`, `keygen`, `seal`, `verify`, `retention`, `hold`,
//! `restore`, `demo`.

mod cli;
mod demo;
mod keygen;
mod logging;
mod retention;
mod schema;
mod seal;
mod serve;
mod upkeep;
mod verify;

use std::process::ExitCode;

use anyhow::Result;

pub use cli::{
    Cli, Command, DatabaseArgs, DemoArgs, HoldAction, HoldArgs, RestoreArgs, RetentionArgs,
    SealArgs, ServeArgs, VerifyArgs,
};

/// Runs the command `cli` names, with auditd's own diagnostics filtered by `--log`, and
/// says how the process should exit.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let done = |result: Result<()>| result.map(|()| ExitCode::SUCCESS);
    match cli.command {
        None => done(serve::run(cli.serve, &cli.log).await),
        Some(Command::Serve(args)) => done(serve::run(*args, &cli.log).await),
        Some(Command::Migrate(db)) => {
            logging::init(&cli.log, None)?;
            let client = schema::connect(&db.database_url, db.db_timeout).await?;
            done(schema::migrate(&client, db.db_timeout).await)
        }
        Some(Command::Partitions {
            database,
            months_ahead,
        }) => {
            logging::init(&cli.log, None)?;
            let client = schema::connect(&database.database_url, database.db_timeout).await?;
            schema::ensure_partitions(&client, months_ahead, database.db_timeout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::TextIndex { database, remove }) => {
            logging::init(&cli.log, None)?;
            let client = schema::connect(&database.database_url, database.db_timeout).await?;
            done(schema::text_index(&client, remove).await)
        }
        Some(Command::Keygen { out, name }) => done(keygen::run(&out, &name)),
        Some(Command::Seal(args)) => {
            logging::init(&cli.log, None)?;
            done(seal::run(&args).await)
        }
        Some(Command::Verify(args)) => {
            logging::init(&cli.log, None)?;
            Ok(verify::run(&args).await)
        }
        Some(Command::Retention(args)) => retention::run_retention(&args, &cli.log).await,
        Some(Command::Hold(args)) => done(retention::run_hold(&args, &cli.log).await),
        Some(Command::Restore(args)) => done(retention::run_restore(&args, &cli.log).await),
        Some(Command::Demo(args)) => done(demo::run(args, &cli.log).await),
    }
}
