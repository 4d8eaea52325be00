//! What the benchmark binaries share: their flags, database connections, the burst of
//! events the throughput benches emit, and memory readings.
#![allow(dead_code)]

pub mod caller;

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
                        tracing::info!(
                            target: "audit",
                            event_type = "benchmark",
                            resource_type = "device",
                            resource_id = "dev-1",
                            thread,
                            seq,
                            "Device configuration backed up"
                        );
                    }
                });
            });
        }
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
