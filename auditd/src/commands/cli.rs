//! The command line: subcommands, flags, and the environment variables behind them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration::parse_duration;
use crate::seal::Destination;

/// The audit log daemon: serves the audit logs over HTTP (a viewer page at /, and an API to
/// query, export, tail and prove them), keeps the audit_logs schema and its partitions,
/// seals the log under signed checkpoints and verifies it, and runs the demo.
///
/// Without a subcommand it serves, configured by the flags of `auditd serve`.
#[derive(Debug, Parser)]
#[command(
    name = "auditd",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Log filter for auditd's own diagnostics, like `info` or `info,audit_layer=debug`.
    #[arg(long, env = "AUDITD_LOG", default_value = "info", global = true)]
    pub log: String,

    /// The subcommand; without one, auditd serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The flags of `serve`, for running without a subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the viewer page and the HTTP API (the default).
    ///
    /// SIGINT or SIGTERM stops it gracefully; SIGHUP reads the tokens and the TLS
    /// certificate again.
    Serve(Box<ServeArgs>),
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
        /// The database to work on.
        #[command(flatten)]
        database: DatabaseArgs,
        /// How many months after the current one get a partition.
        #[arg(long, env = "AUDITD_MONTHS_AHEAD", default_value_t = audit_layer::schema::DEFAULT_MONTHS_AHEAD)]
        months_ahead: i32,
    },
    /// Create the optional trigram index that makes substring search (`q`) fast.
    ///
    /// It is built partition by partition without blocking writers, and slows every later
    /// write (ingest measured about 40 % slower), so it is not part of the migrations.
    /// Idempotent; a build cut short is finished by the next run. Needs the table owner's
    /// role and the pg_trgm extension (PostgreSQL contrib).
    TextIndex {
        /// The database to work on.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Remove the index instead.
        #[arg(long)]
        remove: bool,
    },
    /// Make a key pair for signing the log's checkpoints: FILE (the signing key, mode
    /// 600; keep it off the database host) and FILE.pub (the public key, for verifiers).
    ///
    /// Refuses to overwrite either file.
    Keygen {
        /// Where to write the signing key; the public key goes to the same path + `.pub`.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The log's name: the origin line of its checkpoints and the key's name. Unique
        /// per log, no spaces or '+'; by convention host/path.
        #[arg(long, env = "AUDITD_LOG_NAME", default_value_t = default_log_name())]
        name: String,
    },
    /// Seal once: append every batch committed since the last seal to the signed log,
    /// in commit order, and sign a checkpoint of it (for cron, when no auditd serve
    /// seals). Safe to run beside auditd serve.
    Seal(SealArgs),
    /// Check every stored record, batch and checkpoint: each record's hash, recomputed
    /// from its row, against its batch's ledger row; each batch's Merkle root; each
    /// sealed batch against its leaf in the signed log; each checkpoint's signature and
    /// root against the log; and the log against published copies of checkpoints.
    ///
    /// Exit status 0 when everything checked is intact, 1 when something is not (each
    /// finding is printed: a record changed, missing or added; a ledger row changed,
    /// missing or added; a checkpoint not matching, not signed, or the log shrunk), 2
    /// when the check could not be made. Rows written without integrity, and batches not
    /// sealed yet, are counted, not reported.
    Verify(VerifyArgs),
    /// Retire whole monthly partitions older than a window: each is written to an
    /// archive (zstd NDJSON) with a signed manifest, the archive is checked against the
    /// signed log from disk, then the partition is detached and dropped. Never the
    /// current month or a later one, nor a partition a legal hold touches. A partition
    /// whose archive fails or does not check stays, and the run says why (exit 1).
    ///
    /// Needs the table owner's role (it detaches and drops partitions), and the log's
    /// signing key (it signs each manifest).
    Retention(RetentionArgs),
    /// Place, list or lift legal holds: a hold keeps every partition it touches from
    /// retention until it is lifted. Placing and lifting are audit records.
    Hold(HoldArgs),
    /// Bring an archive back into audit_logs (its month's partition), for an
    /// investigation, after checking it against its manifest and the log's key. Records
    /// already present are skipped, never doubled. The next retention run retires the
    /// month again unless a legal hold keeps it.
    Restore(RestoreArgs),
    /// The quickstart: write the sample flows of a network-automation backend through
    /// audit-layer, show what was stored, and serve it (viewer and API) until Ctrl-C.
    ///
    /// Without DATABASE_URL it starts a throwaway PostgreSQL from the installed binaries
    /// and removes it on exit.
    Demo(DemoArgs),
}

/// The connection flags of the schema commands.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL, like postgres://user:password@host:5432/dbname.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Longest time to wait for a connection or a database call.
    #[arg(long, env = "AUDITD_DB_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub db_timeout: Duration,
}

/// The flags of `auditd seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// The database to seal.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The signing key (from `auditd keygen`).
    #[arg(long, env = "AUDITD_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: PathBuf,
    /// Where to publish each new checkpoint, comma-separated: `-` (standard output), a
    /// file path (replaced atomically), or an http:// URL (POST). The first file that
    /// exists is also the anchor: the seal is refused unless the log extends it.
    #[arg(long, env = "AUDITD_PUBLISH_CHECKPOINTS", value_delimiter = ',')]
    pub publish: Vec<Destination>,
    /// Public keys of earlier signing keys (after a rotation), comma-separated files:
    /// the log's existing checkpoints must be signed by one of them or by this key.
    #[arg(
        long,
        env = "AUDITD_PUBLIC_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub public_key: Vec<PathBuf>,
}

/// The flags of `auditd verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The database to check, like postgres://user:password@host:5432/dbname.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        required_unless_present_any = ["bundle", "archive"]
    )]
    pub database_url: Option<String>,
    /// Longest time to wait for a connection or a database call.
    #[arg(long, env = "AUDITD_DB_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub db_timeout: Duration,
    /// Check a proof bundle (from GET /api/v1/logs/bundle) instead of a database: each
    /// record against the signed checkpoint, with nothing but --public-key.
    #[arg(long, value_name = "FILE", conflicts_with = "checkpoint")]
    pub bundle: Option<PathBuf>,
    /// Check a retention archive (`.ndjson.zst`) against its manifest and signature
    /// beside it, offline: the file's hash, every record against its batch, every batch
    /// in the signed log, with nothing but --public-key.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["checkpoint", "bundle"])]
    pub archive: Option<PathBuf>,
    /// Files of public keys (from `auditd keygen`, one key per line: every key that
    /// has signed, for rotations), comma-separated. Without one, checkpoint signatures
    /// are not checked, and verify says so.
    #[arg(
        long,
        env = "AUDITD_PUBLIC_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub public_key: Vec<PathBuf>,
    /// Published checkpoints (kept outside the database) to check the log against.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Vec<PathBuf>,
    /// Check without the public key: the checkpoints are compared with the log but their
    /// signatures are not checked, which proves nothing against whoever can write them.
    /// Without it, a database with checkpoints and no --public-key is not checked (exit 2).
    #[arg(long)]
    pub no_signatures: bool,
    /// Check only the records of batches committed at or after this time: an RFC 3339
    /// time, or a duration before now (`24h`). The log and the ledger are still checked
    /// whole (they are small); rows forged outside any batch are found by a full check.
    #[arg(long, value_name = "TIME", value_parser = parse_moment, conflicts_with = "bundle")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Check only the records of batches committed before this time (as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_moment, conflicts_with = "bundle")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Check incrementally: FILE is a checkpoint verified before (signed by a key given
    /// with --public-key); the log must extend it, and only the records of batches
    /// sealed after it (or not sealed yet) are read.
    #[arg(long, value_name = "FILE", conflicts_with = "bundle")]
    pub since_checkpoint: Option<PathBuf>,
}

/// The flags of `auditd retention`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The database to work on (as the table owner).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// How long records stay online: months (`13months`) or days (`400d`). Partitions
    /// entirely older go.
    #[arg(long, env = "AUDITD_RETENTION_KEEP", value_parser = parse_keep)]
    pub keep: crate::retention::Keep,
    /// Where archives go: one `.ndjson.zst` file per partition, with its
    /// `.manifest.json` and `.manifest.sig` beside it.
    #[arg(
        long,
        env = "AUDITD_ARCHIVE_DIR",
        value_name = "DIR",
        required_unless_present = "dry_run"
    )]
    pub archive_dir: Option<PathBuf>,
    /// List what would be retired and what stays (and why), and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The log's signing key (from `auditd keygen`, the key that seals the log): signs
    /// each manifest, through which alone a retirement counts.
    #[arg(
        long,
        env = "AUDITD_SIGNING_KEY",
        value_name = "FILE",
        required_unless_present = "dry_run"
    )]
    pub signing_key: Option<PathBuf>,
    /// Public keys of earlier signing keys (after a rotation), comma-separated files.
    #[arg(
        long,
        env = "AUDITD_PUBLIC_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub public_key: Vec<PathBuf>,
    /// The longest a detach waits for its lock (writers queue behind it meanwhile);
    /// it is tried again, up to 10 times, before the partition is left for the next run.
    #[arg(long, env = "AUDITD_RETENTION_LOCK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
}

/// The flags of `auditd hold`.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The database to work on (as the table owner).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: HoldAction,
}

/// What `auditd hold` does.
#[derive(Debug, Subcommand)]
pub enum HoldAction {
    /// Place a hold.
    Place {
        /// Its name: letters, digits, `.`, `_`, `-`; never reused.
        name: String,
        /// The records it keeps were created from this time (RFC 3339, or a duration
        /// before now: `400d`).
        #[arg(long, value_parser = parse_moment)]
        from: chrono::DateTime<chrono::Utc>,
        /// ... to before this time (default: now).
        #[arg(long, value_parser = parse_moment)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only partitions holding a record of this user in the range.
        #[arg(long)]
        user: Option<String>,
        /// Only partitions holding a record of this resource type in the range.
        #[arg(long)]
        resource_type: Option<String>,
        /// Only partitions holding a record of this resource id in the range.
        #[arg(long)]
        resource_id: Option<String>,
        /// Why (a case number, a request): kept with the hold and in its audit record.
        #[arg(long)]
        reason: String,
        /// Who places it (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Lift a hold in force.
    Lift {
        /// Its name.
        name: String,
        /// Why: in the audit record.
        #[arg(long)]
        reason: String,
        /// Who lifts it (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// List every hold, in force or lifted, newest first.
    List,
}

/// The flags of `auditd restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The database to restore into (as the table owner).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The archive (`.ndjson.zst`); its manifest and signature beside it.
    #[arg(long, value_name = "FILE")]
    pub archive: PathBuf,
    /// The log's public keys, to check the archive before restoring it.
    #[arg(
        long,
        env = "AUDITD_PUBLIC_KEY",
        value_delimiter = ',',
        value_name = "FILE",
        required_unless_present = "no_signatures"
    )]
    pub public_key: Vec<PathBuf>,
    /// Restore without checking signatures (the archive is still checked against its
    /// manifest).
    #[arg(long)]
    pub no_signatures: bool,
    /// Who restores it (default: $USER), for the audit record.
    #[arg(long)]
    pub by: Option<String>,
}

fn parse_keep(text: &str) -> Result<crate::retention::Keep, String> {
    text.parse()
}

/// An RFC 3339 time, or a duration before now (`24h`, `7d`).
fn parse_moment(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&chrono::Utc));
    }
    let ago = parse_duration(text).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-11-27T08:00:00Z) nor a duration (24h)")
    })?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| chrono::Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{text:?} is too long ago"))
}

/// `<host name>/audit-log`, the default log name.
fn default_log_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| crate::seal::valid_key_name(h))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/audit-log")
}

/// The flags of `auditd demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The database to fill; without it, a throwaway cluster is started.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// How many rounds of the sample flows to write (each round is 9 records), spread
    /// over the last 14 days in working hours, beside two incidents (a burst of failed
    /// logins, an onboarding outage).
    #[arg(long, default_value_t = 300)]
    pub rounds: u32,

    /// Exit after showing the records instead of serving them.
    #[arg(long)]
    pub exit: bool,

    /// Where to serve the viewer and the API.
    #[arg(long, env = "AUDITD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// The flags of `auditd serve`, also accepted without the subcommand.
#[derive(Debug, Clone, Parser)]
pub struct ServeArgs {
    /// PostgreSQL connection URL for the queries, like postgres://auditd:secret@db:5432/app.
    /// Its role needs SELECT on audit_logs (see the README for the GRANTs). It may name a
    /// hot standby when --audit-database-url names the primary.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where auditd writes: its access records (each read of the logs is audited),
    /// ingested records, seals, partitions and retention; defaults to --database-url.
    /// Must reach the primary (a standby is refused at start); a multi-host URL with
    /// target_session_attrs=read-write follows a failover. Its role needs what any writer
    /// needs: INSERT on audit_logs, audit_logs_rejected and audit_writer_batches, SELECT
    /// on audit_writer_batches.
    #[arg(long, env = "AUDITD_AUDIT_DATABASE_URL", hide_env_values = true)]
    pub audit_database_url: Option<String>,

    /// Address to listen on. A non-loopback address requires tokens.
    #[arg(long, env = "AUDITD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// File of bearer tokens, one per line: `name:secret` (the name is who the access
    /// records name) or just `secret`. Secrets are at least 16 characters.
    #[arg(long, env = "AUDITD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Bearer tokens, comma-separated, in the same format as the token file.
    #[arg(long, env = "AUDITD_TOKENS", hide_env_values = true)]
    pub tokens: Option<String>,

    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first);
    /// needs --tls-key. Without it auditd serves plain HTTP (fine on loopback or behind
    /// a TLS-terminating proxy).
    #[arg(long, env = "AUDITD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "AUDITD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Most database connections for queries.
    #[arg(long, env = "AUDITD_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,

    /// Longest wait for a database connection.
    #[arg(long, env = "AUDITD_DB_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub db_timeout: Duration,

    /// Server-side statement_timeout for every query.
    #[arg(long, env = "AUDITD_STATEMENT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub statement_timeout: Duration,

    /// Longest time to answer a request (streams: to start answering).
    #[arg(long, env = "AUDITD_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Requests served at once; beyond it, 503 at once. Health, metrics and the OpenAPI
    /// document are not counted.
    #[arg(long, env = "AUDITD_MAX_CONCURRENT_REQUESTS", default_value_t = 64)]
    pub max_concurrent_requests: usize,

    /// Exports and event streams open at once (each holds a database connection while it
    /// runs); beyond it, 503. Keep it below --pool-size.
    #[arg(long, env = "AUDITD_MAX_STREAMS", default_value_t = 8)]
    pub max_streams: usize,

    /// HTTP connections open at once. At the bound, the one open longest without a
    /// request in progress is asked to close to make room; when every one is busy, a new
    /// one is closed at once. Keep it below the file descriptor limit (ulimit -n).
    #[arg(long, env = "AUDITD_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// HTTP connections open at once from one client address (a proxy in front counts
    /// as one address: raise it, or bound clients there).
    #[arg(long, env = "AUDITD_MAX_CONNECTIONS_PER_IP", default_value_t = 512)]
    pub max_connections_per_ip: usize,

    /// Longest a client may take to send a request's headers, and longest a keep-alive
    /// connection may stay idle between requests.
    #[arg(long, env = "AUDITD_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Longest wait for in-flight requests when shutting down.
    #[arg(long, env = "AUDITD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Seal the log with this signing key (from `auditd keygen`): every --seal-interval,
    /// committed batches are appended to the signed log and a checkpoint is signed.
    /// Without it auditd does not seal (run `auditd seal` from cron instead).
    #[arg(long, env = "AUDITD_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,

    /// How often to seal (SIGUSR1 seals at once); the longest a committed record waits to
    /// be sealed is about this plus the longest open transaction.
    #[arg(long, env = "AUDITD_SEAL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub seal_interval: Duration,

    /// Where to publish each new checkpoint, comma-separated: `-` (standard output), a
    /// file path (replaced atomically), or an http:// URL (POST).
    #[arg(
        long,
        env = "AUDITD_PUBLISH_CHECKPOINTS",
        value_delimiter = ',',
        requires = "signing_key"
    )]
    pub publish_checkpoints: Vec<Destination>,

    /// With --signing-key: public keys of earlier signing keys (after a rotation),
    /// comma-separated files, trusted for the log's existing checkpoints.
    #[arg(
        long,
        env = "AUDITD_PUBLIC_KEY",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub public_key: Vec<PathBuf>,

    /// Run retention every --retention-interval, keeping this window online (`13months`,
    /// `400d`); needs --archive-dir, --signing-key and the table owner's role. Without it
    /// nothing is retired.
    #[arg(long, env = "AUDITD_RETENTION_KEEP", value_parser = parse_keep, requires = "archive_dir")]
    pub retention: Option<crate::retention::Keep>,

    /// Where retention writes its archives.
    #[arg(long, env = "AUDITD_ARCHIVE_DIR", value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,

    /// How often retention runs (the first run a minute after the start).
    #[arg(long, env = "AUDITD_RETENTION_INTERVAL", default_value = "6h", value_parser = parse_duration)]
    pub retention_interval: Duration,

    /// How often to create partitions ahead of time; 0 disables (when the role may not).
    #[arg(long, env = "AUDITD_UPKEEP_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub upkeep_interval: Duration,

    /// How often to count new records for the overview (the viewer's histogram and facets);
    /// 0 disables it, when the role may not write the counts. Without it the overview stays
    /// exact, and costs a pass over every record of its window.
    #[arg(long, env = "AUDITD_COUNTS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub counts_interval: Duration,

    /// A directory where auditd's writer keeps batches the database cannot take yet (down,
    /// or slower than the senders): access records, and records sent to POST
    /// /api/v1/events, which are then answered 202 "spooled" once on disk. Recommended
    /// whenever producers write through auditd; one auditd process per directory.
    #[arg(long, env = "AUDITD_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Largest body of POST /api/v1/events, in bytes (K, M, G suffixes: powers of 1024).
    #[arg(long, env = "AUDITD_INGEST_MAX_BODY", default_value = "16M", value_parser = parse_bytes)]
    pub ingest_max_body: usize,

    /// Most records in one POST /api/v1/events.
    #[arg(long, env = "AUDITD_INGEST_MAX_RECORDS", default_value_t = 10_000)]
    pub ingest_max_records: usize,

    /// Records a second each token may send to POST /api/v1/events (beyond it, 429 with
    /// Retry-After); 0 for no limit.
    #[arg(long, env = "AUDITD_INGEST_RATE", default_value_t = 50_000)]
    pub ingest_rate: u64,

    /// Writes to POST /api/v1/events handled at once (apart from --max-concurrent-requests,
    /// which bounds reads); beyond it, 503 with Retry-After. Each holds its body and its
    /// records in memory while it is handled.
    #[arg(long, env = "AUDITD_INGEST_MAX_CONCURRENT", default_value_t = 16)]
    pub ingest_max_concurrent: usize,

    /// How far ahead of auditd's clock a sent record's created_at may be; beyond it the
    /// record is stamped with the time received (a fix-up, noted in the record).
    #[arg(long, env = "AUDITD_INGEST_MAX_AHEAD", default_value = "5m", value_parser = parse_duration)]
    pub ingest_max_ahead: Duration,

    /// How far behind auditd's clock it may be (a sender that held records through an
    /// outage); beyond it, stamped with the time received, noted.
    #[arg(long, env = "AUDITD_INGEST_MAX_BEHIND", default_value = "24h", value_parser = parse_duration)]
    pub ingest_max_behind: Duration,
}

/// A size in bytes: `65536`, `64K`, `16M`, `1G` (powers of 1024).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{text:?}: give bytes, or a number with K, M or G")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size in bytes above 0"))
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
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        for bad in ["", "0", "M", "12X", "-1"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
