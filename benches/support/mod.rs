//! What the benchmark binaries share: their flags, database connections, the burst of
//! events the throughput benches emit, and memory readings.
#![allow(dead_code)]

pub mod caller;
pub mod http;

/// The value after `name` on the command line, or `default` (`_` separators allowed).
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// This process's peak resident memory so far, in MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}

/// This process's resident memory now, in MiB.
pub fn rss_mib() -> f64 {
    proc_status_mib("VmRSS:")
}

fn proc_status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A connection to `url`, driven in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// A connection to `url`, with the schema applied first.
pub async fn connect_migrated(url: &str) -> tokio_postgres::Client {
    let client = connect(url).await;
    audit_layer::schema::migrate(&client)
        .await
        .expect("migrate");
    client
}

/// Emits `per_thread` backup events from each of `threads` threads, each inside a request
/// span (user name and IP address), as fast as they go; returns once all are emitted.
pub fn emit_backups(dispatch: &tracing::Dispatch, threads: u64, per_thread: u64) {
    emit_in_requests(dispatch, threads, per_thread, |thread, seq| {
        tracing::info!(
            target: "audit",
            event_type = "benchmark",
            resource_type = "device",
            resource_id = "dev-1",
            thread,
            seq,
            "Device configuration backed up"
        );
    });
}

/// Calls `emit(thread, seq)` `per_thread` times on each of `threads` threads, inside a
/// request span (user name and IP address) and `dispatch`; returns once all are done.
fn emit_in_requests(
    dispatch: &tracing::Dispatch,
    threads: u64,
    per_thread: u64,
    emit: impl Fn(u64, u64) + Sync,
) {
    let emit = &emit;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let dispatch = dispatch.clone();
            scope.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let span = tracing::info_span!(
                        "request",
                        username = "bench",
                        ip_address = "192.0.2.1"
                    );
                    let _guard = span.enter();
                    for seq in 0..per_thread {
                        emit(thread, seq);
                    }
                });
            });
        }
    });
}

/// The values of record `i` in a mix as varied as a deployment's, the same as
/// [`skewed_row_sql`]'s: a user with a tenth of the records, one with 0.1 %, one with five
/// in ten million, 1,000 others; the same for event types (nine common ones), severities
/// and devices (20,000 others). Btrees cost a write more when the values spread.
pub struct Varied {
    pub username: &'static str,
    pub event_type: &'static str,
    pub severity: &'static str,
    pub resource_id: &'static str,
}

pub fn varied(i: u64) -> Varied {
    use std::sync::OnceLock;
    static NAMES: OnceLock<(Vec<String>, Vec<String>)> = OnceLock::new();
    let (users, devices) = NAMES.get_or_init(|| {
        (
            (0..1000).map(|u| format!("user{u}")).collect(),
            (0..20_000).map(|d| format!("dev-{d}")).collect(),
        )
    });
    const EVENT_TYPES: [&str; 9] = [
        "authentication",
        "onboarding",
        "device_management",
        "job_execution",
        "configuration_change",
        "backup",
        "sync",
        "system",
        "login",
    ];
    Varied {
        username: match i {
            _ if i.is_multiple_of(10) => "common-user",
            _ if i % 1000 == 1 => "middling-user",
            _ if i % 2_000_000 == 3 => "rare-user",
            _ => &users[(i * 7919 % 1000) as usize],
        },
        event_type: match i {
            _ if i % 1000 == 7 => "credential_rotation",
            _ if i % 2_000_000 == 11 => "break_glass",
            _ => EVENT_TYPES[(i % 9) as usize],
        },
        severity: match i {
            _ if i % 2_000_000 == 13 => "critical",
            _ if i % 1000 == 17 => "error",
            _ if i % 10 == 5 => "warning",
            _ => "info",
        },
        resource_id: match i {
            _ if i % 10 == 2 => "dev-core",
            _ if i % 1000 == 19 => "dev-middling",
            _ if i % 2_000_000 == 23 => "dev-rare",
            _ => &devices[(i * 31 % 20_000) as usize],
        },
    }
}

/// As [`emit_backups`], with each event's user, event type, severity and device from
/// [`varied`] (event fields win over the request span's user).
pub fn emit_varied(dispatch: &tracing::Dispatch, threads: u64, per_thread: u64) {
    emit_in_requests(dispatch, threads, per_thread, |thread, seq| {
        let v = varied(thread * per_thread + seq);
        tracing::info!(
            target: "audit",
            username = v.username,
            event_type = v.event_type,
            severity = v.severity,
            resource_type = "device",
            resource_id = v.resource_id,
            thread,
            seq,
            "Device configuration backed up"
        );
    });
}

/// CPU seconds (user and system) used so far by this process (threads that ended
/// included) and by every `postgres` process on the machine: CPU time is steadier than
/// wall time on a VM whose speed drifts, so a cost shows in it when throughput is too
/// noisy to tell.
pub fn cpu_seconds() -> (f64, f64) {
    // utime and stime; with `children`, also the times of reaped children (a backend that
    // ended is counted in its postmaster's).
    fn stat_seconds(path: &std::path::Path, children: bool) -> f64 {
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let reaped = if children { ticks(13) + ticks(14) } else { 0.0 };
        (ticks(11) + ticks(12) + reaped) / 100.0
    }
    let ours = stat_seconds(std::path::Path::new("/proc/self/stat"), false);
    let mut postgres = 0.0;
    for process in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = process.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            postgres += stat_seconds(&path.join("stat"), true);
        }
    }
    (ours, postgres)
}

/// Loads `rows` records spread over the last 90 days (1,000 users, 9 event types, 10,000
/// devices) into a fresh database, server-side, then `VACUUM ANALYZE`; prints the time.
pub async fn load_spread(url: &str, rows: u64) {
    let client = connect_migrated(url).await;
    let started = std::time::Instant::now();
    load_generated(
        &client,
        rows,
        "INSERT INTO audit_logs (username, user_id, event_type, message, ip_address,
                     resource_type, resource_id, resource_name, severity, metadata, created_at)
                 SELECT 'user' || (i % 1000), i % 1000,
                        (ARRAY['authentication','onboarding','device_management','credential_management',
                               'job_execution','configuration_change','backup','sync','system'])[1 + i % 9],
                        'Device edge-' || (i % 10000) || ' event number ' || i,
                        ('10.' || (i % 200) || '.' || (i % 250) || '.1')::inet,
                        'device', 'dev-' || (i % 10000), 'edge-' || (i % 10000),
                        (ARRAY['info','info','info','info','info','info','warning','warning','error','critical'])[1 + i % 10],
                        jsonb_build_object('site', 'site' || (i % 50), 'attempt', i % 5),
                        now() - ((i::float8 / $2::float8) * interval '90 days')
                 FROM generate_series($1::bigint, $1::bigint + $3::bigint - 1) AS i",
    )
    .await;
    println!(
        "query: loaded {rows} rows in {:.0} s (server-side INSERT ... SELECT, then VACUUM ANALYZE)",
        started.elapsed().as_secs_f64()
    );
}

/// Fills audit_logs (its partitions from three months ago) with `rows` rows made by the
/// server, a million at a time: `insert` is an `INSERT ... SELECT` over
/// `generate_series($1, $1 + $3 - 1) AS i`, where `$2` is `rows` (as float8, to spread
/// times); then VACUUM ANALYZE.
pub async fn load_generated(client: &tokio_postgres::Client, rows: u64, insert: &str) {
    client
        .execute(
            "SELECT audit_logs_ensure_partitions(now() - interval '3 months', 4)",
            &[],
        )
        .await
        .expect("partitions");
    let started = std::time::Instant::now();
    let chunk = 1_000_000u64;
    let mut done = 0;
    while done < rows {
        let n = chunk.min(rows - done);
        client
            .execute(insert, &[&(done as i64), &(rows as f64), &(n as i64)])
            .await
            .expect("load");
        done += n;
        eprintln!(
            "loaded {done} rows in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    client
        .batch_execute("VACUUM ANALYZE audit_logs")
        .await
        .expect("analyze");
}

/// auditd serving `url` in this process on a loopback port, its access records going to
/// `access_url` (so that they do not grow the measured table): its address, and what
/// stops it.
pub async fn serve_in_process(
    url: &str,
    access_url: &str,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    Serving,
) {
    serve_in_process_with(url, access_url, auditd::Tokens::none()).await
}

/// As [`serve_in_process`], with `tokens`; its writer (access records, and what is posted
/// to `/api/v1/events`) writes to `access_url`, and no rate limit applies.
pub async fn serve_in_process_with(
    url: &str,
    access_url: &str,
    tokens: auditd::Tokens,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    Serving,
) {
    use std::time::Duration;
    use tracing_subscriber::prelude::*;
    let pool = audit_layer::pool::connect_pool(
        url,
        &audit_layer::pool::PoolOptions {
            max_size: 8,
            statement_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    )
    .expect("pool");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    connect_migrated(access_url).await;
    let (layer, audit) = audit_layer::AuditLayer::builder()
        .database_url(access_url)
        .build()
        .expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let audit = std::sync::Arc::new(audit);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(auditd::serve(
        listener,
        pool,
        auditd::ServerOptions {
            tokens: std::sync::Arc::new(auditd::TokenStore::new(tokens)),
            limits: auditd::Limits {
                ingest: auditd::IngestLimits {
                    records_per_second: 0,
                    ..auditd::IngestLimits::default()
                },
                ..auditd::Limits::default()
            },
            shutdown_grace: Duration::from_secs(5),
            access_audit: Some(dispatch),
            audit_handle: Some(audit.clone()),
            commit_notices: None,
            write_pool: None,
            tls: None,
        },
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop, Serving { server, audit })
}

/// An in-process auditd, until stopped.
pub struct Serving {
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Its writer: access records, and records posted to it.
    pub audit: std::sync::Arc<audit_layer::AuditHandle>,
}

impl Serving {
    /// Stops it, and waits.
    pub async fn stop(self, stop: tokio::sync::oneshot::Sender<()>) {
        let _ = stop.send(());
        self.server.await.expect("server").expect("server ran");
        drop(self.audit);
    }
}

/// The PostgreSQL to measure against: `DATABASE_URL`'s server when set, otherwise a
/// throwaway cluster with default durability on this machine.
pub async fn postgres() -> pg_provision::Postgres {
    tokio::task::spawn_blocking(|| {
        pg_provision::Postgres::from_env_or_throwaway(&pg_provision::ClusterOptions::durable())
    })
    .await
    .expect("provision")
    .expect("a PostgreSQL to measure against")
}

/// The value of `kind` at `selectivity` (common: a tenth of the rows; middling: 0.1 %;
/// rare: five rows in ten million).
pub fn skewed_value(kind: &str, selectivity: &str) -> &'static str {
    match (kind, selectivity) {
        ("user", "common") => "common-user",
        ("user", "middling") => "middling-user",
        ("user", _) => "rare-user",
        ("event", "common") => "backup",
        ("event", "middling") => "credential_rotation",
        ("event", _) => "break_glass",
        ("severity", "common") => "warning",
        ("severity", "middling") => "error",
        ("severity", _) => "critical",
        ("severities", "common") => "info",
        ("severities", "middling") => "error,critical",
        ("severities", _) => "critical",
        ("resource", "common") => "dev-core",
        ("resource", "middling") => "dev-middling",
        _ => "dev-rare",
    }
}

/// One row of the skewed load for `i` (a `generate_series` value), as SQL expressions.
pub fn skewed_row_sql() -> &'static str {
    "CASE WHEN i % 10 = 0 THEN 'common-user' WHEN i % 1000 = 1 THEN 'middling-user' \
          WHEN i % 2000000 = 3 THEN 'rare-user' ELSE 'user' || (i * 7919 % 1000) END, \
     CASE WHEN i % 1000 = 7 THEN 'credential_rotation' WHEN i % 2000000 = 11 THEN 'break_glass' \
          ELSE (ARRAY['authentication','onboarding','device_management','job_execution', \
                      'configuration_change','backup','sync','system','login'])[1 + i % 9] END, \
     CASE WHEN i % 2000000 = 13 THEN 'critical' WHEN i % 1000 = 17 THEN 'error' \
          WHEN i % 10 = 5 THEN 'warning' ELSE 'info' END, \
     'device', \
     CASE WHEN i % 10 = 2 THEN 'dev-core' WHEN i % 1000 = 19 THEN 'dev-middling' \
          WHEN i % 2000000 = 23 THEN 'dev-rare' ELSE 'dev-' || (i * 31 % 20000) END"
}

/// Loads `rows` skewed records over the last 90 days (see [`skewed_value`]) into `client`'s
/// migrated database, its secondary indexes dropped first (each index design builds its
/// own; [`build_secondary_indexes`] puts the schema's back).
pub async fn load_skewed(client: &tokio_postgres::Client, rows: u64) {
    client
        .batch_execute(DROP_SECONDARY_INDEXES)
        .await
        .expect("drop indexes");
    let insert = format!(
        "INSERT INTO audit_logs (username, event_type, severity, resource_type, \
             resource_id, message, ip_address, created_at) \
         SELECT {}, 'Event number ' || i, ('10.' || (i % 200) || '.' || (i % 250) || '.1')::inet, \
                now() - ((i::float8 / $2::float8) * interval '90 days') \
         FROM generate_series($1::bigint, $1::bigint + $3::bigint - 1) AS i",
        skewed_row_sql()
    );
    load_generated(client, rows, &insert).await;
}

/// Drops the schema's secondary indexes on `audit_logs`, as migrated.
pub const DROP_SECONDARY_INDEXES: &str = "DROP INDEX audit_logs_username_idx, \
     audit_logs_event_type_idx, audit_logs_severity_partial, audit_logs_above_info, \
     audit_logs_resource_idx";

/// Builds the schema's secondary indexes (migrations 0001 and 0011) where they are missing,
/// then `VACUUM ANALYZE`.
pub async fn build_secondary_indexes(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE INDEX IF NOT EXISTS audit_logs_username_idx ON audit_logs (username, created_at DESC, id DESC); \
             CREATE INDEX IF NOT EXISTS audit_logs_event_type_idx ON audit_logs (event_type, created_at DESC, id DESC); \
             CREATE INDEX IF NOT EXISTS audit_logs_severity_partial ON audit_logs (severity, created_at DESC, id DESC) WHERE severity <> 'info'; \
             CREATE INDEX IF NOT EXISTS audit_logs_above_info ON audit_logs (created_at DESC, id DESC) WHERE severity <> 'info'; \
             CREATE INDEX IF NOT EXISTS audit_logs_resource_idx ON audit_logs (resource_type, resource_id, created_at DESC, id DESC)",
        )
        .await
        .expect("the schema's indexes");
    // (Apart: VACUUM cannot run in the transaction a multi-statement batch is.)
    client
        .batch_execute("VACUUM ANALYZE audit_logs")
        .await
        .expect("vacuum");
}
