//! The command line: subcommands, flags, and the environment variables behind them.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The audit log daemon: keeps the audit_logs schema, and serves demo data.
#[derive(Debug, Parser)]
#[command(name = "auditd", version, about, long_about = None)]
pub struct Cli {
    /// Log filter for auditd's own diagnostics, like `info` or `info,audit_layer=debug`.
    #[arg(long, env = "AUDITD_LOG", default_value = "info", global = true)]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the schema migrations, then create the partitions ahead of time.
    ///
    /// Needs a role that may create tables (the table owner). Safe to run from several
    /// processes at once.
    Migrate(DatabaseArgs),
    /// Create the monthly partitions for the current month and the next ones.
    ///
    /// Rows that already landed in audit_logs_default for those months are moved into
    /// their partition. Run it from cron if no auditd runs continuously.
    Partitions {
        #[command(flatten)]
        database: DatabaseArgs,
        /// How many months after the current one get a partition.
        #[arg(long, env = "AUDITD_MONTHS_AHEAD", default_value_t = audit_layer::partitions::DEFAULT_MONTHS_AHEAD)]
        months_ahead: i32,
    },
    /// The quickstart: write the sample flows of a network-automation backend through
    /// audit-layer and show what was stored.
    ///
    /// Without DATABASE_URL it starts a throwaway PostgreSQL from the installed binaries
    /// and removes it on exit.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL, like postgres://user:password@host:5432/dbname.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Longest time to wait for a connection or a database call.
    #[arg(long, env = "AUDITD_DB_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub db_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The database to fill; without it, a throwaway cluster is started.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// How many rounds of the sample flows to write (each round is 9 records).
    #[arg(long, default_value_t = 25)]
    pub rounds: u32,

    /// Exit after showing the records instead of waiting for Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// Parses durations such as `250ms`, `30s`, `5m` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 30s or 5m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_common_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
