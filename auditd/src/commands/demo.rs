//! The quickstart: the sample flows of the original design, written through audit-layer
//! exactly as an application would, then read back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc, Weekday};

use anyhow::{Context, Result};
use audit_layer::{AuditLayer, AuditLog, RECORD_COLUMNS};
use pg_provision::{Cluster, ClusterOptions};
use tracing::{error, info, info_span, warn};

use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;

use super::cli::{DemoArgs, ServeArgs};
use super::{logging, schema, serve};
use crate::seal::{Sealer, SigningKey};

const DB_TIMEOUT: Duration = Duration::from_secs(30);

/// The demo's clock, in microseconds since the epoch; 0 for the real one. The demo moves
/// it to spread its records over the last 14 days as a real system's would be.
static DEMO_NOW: AtomicI64 = AtomicI64::new(0);

/// The time the audit layer stamps on each demo record: the demo's clock, advanced a few
/// seconds per record, so that the events of one flow follow each other.
fn demo_clock() -> DateTime<Utc> {
    // Only the demo's own thread moves the clock, and only before serving; auditd's
    // access records, from any thread, see 0 and the real time.
    if DEMO_NOW.load(Ordering::Relaxed) == 0 {
        return Utc::now();
    }
    let at = DEMO_NOW.fetch_add(3_000_000, Ordering::Relaxed);
    DateTime::from_timestamp_micros(at).unwrap_or_else(Utc::now)
}

fn set_demo_time(at: DateTime<Utc>) {
    DEMO_NOW.store(at.timestamp_micros(), Ordering::Relaxed);
}

/// When round `round` of `rounds` happens: spread over the last 14 days, in working hours
/// (08:00 to 18:00 UTC), fewer at weekends, the last ones just now.
fn round_time(round: u32, rounds: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    let days_ago = 13 - i64::from(round) * 14 / i64::from(rounds.max(1));
    let day = (now - TimeDelta::days(days_ago)).date_naive();
    let weekend = matches!(day.weekday(), Weekday::Sat | Weekday::Sun);
    // At weekends, only the on-call few: late morning.
    let hour = if weekend {
        10 + round % 3
    } else {
        8 + (round * 7) % 10
    };
    let at = day
        .and_hms_opt(hour, (round * 13) % 60, (round * 29) % 60)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    // Today's working hours may not have come yet: the last rounds happen just now.
    if at > now - TimeDelta::minutes(5) || (days_ago == 0 && now.hour() < 8) {
        now - TimeDelta::seconds(i64::from(rounds - round) * 30)
    } else {
        at
    }
}

const USERS: &[(&str, i64, &str)] = &[
    ("admin", 1, "192.0.2.10"),
    ("alice", 2, "198.51.100.23"),
    ("bob", 3, "203.0.113.5"),
    ("carol", 4, "2001:db8::42"),
];

const DEVICES: &[(&str, &str)] = &[
    ("edge-fra1-01", "5f0c1a2e"),
    ("core-ams2-03", "9b7d4c11"),
    ("access-lon1-12", "27e8f3a9"),
];

/// Runs `auditd demo`: writes the sample flows, shows what was stored, then serves it until
/// a signal (unless `--exit`). Without a database URL it starts a throwaway cluster.
pub async fn run(args: DemoArgs, log_filter: &str) -> Result<()> {
    // Diagnostics start once the audit layer can be installed with them, so progress up to
    // then goes straight to stderr.
    // An empty DATABASE_URL means none, as for the tests.
    let (url, cluster) = match args.database_url.filter(|u| !u.trim().is_empty()) {
        Some(url) => (url, None),
        None => {
            eprintln!("auditd demo: no DATABASE_URL, starting a throwaway PostgreSQL...");
            let cluster =
                tokio::task::spawn_blocking(|| Cluster::start_new(&ClusterOptions::default()))
                    .await
                    .context("cluster start-up panicked")?
                    .context("cannot start a throwaway PostgreSQL")?;
            eprintln!(
                "auditd demo: PostgreSQL is up on 127.0.0.1:{}",
                cluster.port()
            );
            (cluster.url("postgres"), Some(cluster))
        }
    };
    let client = schema::connect(&url, DB_TIMEOUT).await?;
    let (audit, handle) = AuditLayer::builder()
        .database_url(&url)
        .clock(demo_clock)
        .build()
        .context("cannot start the audit layer")?;
    logging::init(log_filter, Some(audit))?;
    schema::migrate(&client, DB_TIMEOUT).await?;

    tracing::info!(
        rounds = args.rounds,
        "writing the sample flows through audit-layer"
    );
    let now = Utc::now();
    for round in 0..args.rounds {
        set_demo_time(round_time(round, args.rounds, now));
        sample_flows(round);
    }
    incidents(now);
    // From here on (auditd's own access records), the real clock.
    DEMO_NOW.store(0, Ordering::Relaxed);
    tokio::time::timeout(DB_TIMEOUT, handle.flush())
        .await
        .context("the audit records were not committed in time")??;
    let stats = handle.stats();
    tracing::info!(
        written = stats.written,
        fixups = stats.fixups,
        dropped = stats.dropped,
        "sample flows committed"
    );

    show(&client).await?;
    println!();
    println!("The records are in PostgreSQL:");
    println!(
        "  psql '{url}' -c 'SELECT * FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT 20'"
    );
    // On its own throwaway database the demo seals the log with a throwaway key, so the
    // proofs can be tried; a database of the user's is left to the user's own key.
    let keys = match &cluster {
        Some(_) => Some(DemoKeys::create()?),
        None => None,
    };
    if let Some(keys) = &keys {
        let mut sealer = Sealer::new(SigningKey::load(&keys.signing)?);
        let mut sealing = schema::connect(&url, DB_TIMEOUT).await?;
        let sealed = sealer.seal(&mut sealing).await?;
        println!();
        println!(
            "The log is sealed: {} records in {} batches under a checkpoint signed with a throwaway key.",
            sealed.records, sealed.batches
        );
        println!("Check every record, batch and checkpoint:");
        println!(
            "  auditd verify --database-url '{url}' --public-key {}",
            keys.public.display()
        );
    }

    let handle = Arc::new(handle);
    if !args.exit {
        let listen = args.listen.to_string();
        let mut serve_flags = vec!["serve", "--database-url", &url, "--listen", &listen];
        let signing = keys
            .as_ref()
            .map(|k| k.signing.to_string_lossy().into_owned());
        if let Some(signing) = &signing {
            serve_flags.extend(["--signing-key", signing, "--seal-interval", "2s"]);
        }
        let serve_args = ServeArgs::parse_from(serve_flags);
        let listener = TcpListener::bind(args.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (choose another with --listen)",
                args.listen
            )
        })?;
        let base = format!("http://{}", listener.local_addr()?);
        println!();
        println!("See them in a browser: {base}/");
        println!(
            "The API serves them too (no token needed on loopback unless AUDITD_TOKENS is set):"
        );
        println!("  curl '{base}/api/v1/logs?username=admin&limit=5'");
        println!("  curl '{base}/api/v1/logs?event_type=authentication&severity=warning'");
        println!("  curl '{base}/api/v1/logs?min_severity=error'");
        println!("  curl '{base}/api/v1/stats'");
        println!("  curl '{base}/api/v1/logs/export?format=csv' -o audit_logs.csv");
        println!("  curl -N '{base}/api/v1/logs/stream'        # live tail (Server-Sent Events)");
        println!("  curl '{base}/api/v1/openapi.json'          # every route and parameter");
        if keys.is_some() {
            println!("  curl '{base}/api/v1/logs/1/proof'          # a record's proof up to the signed checkpoint");
            println!("  curl '{base}/api/v1/logs/bundle?username=admin' -o bundle.json   # proofs to check offline");
        }
        println!();
        if cluster.is_some() {
            println!("Press Ctrl-C to stop; the throwaway database is removed then.");
        } else {
            println!("Press Ctrl-C to stop.");
        }
        let pool = serve::query_pool(&url, &serve_args)?;
        // Tokens from AUDITD_TOKENS or AUDITD_TOKEN_FILE apply to the demo too.
        let tokens = serve::load_tokens(&serve_args)?;
        serve::serve_until_signal(listener, pool, &url, tokens, &serve_args, handle.clone())
            .await?;
        logging::shutdown_audit(&handle).await;
        serve::final_seal(&url, &serve_args).await;
    } else {
        logging::shutdown_audit(&handle).await;
    }
    drop(keys);
    // Close our connection before the throwaway server goes, or it reports the loss.
    drop(client);
    drop(cluster);
    Ok(())
}

/// What an investigator would look for: a burst of failed logins from one address three
/// nights ago, and an onboarding outage six days ago (Nautobot answering 503 for two hours).
fn incidents(now: DateTime<Utc>) {
    let night = (now - TimeDelta::days(3))
        .date_naive()
        .and_hms_opt(2, 10, 0);
    if let Some(start) = night.map(|t| t.and_utc()) {
        set_demo_time(start);
        for attempt in 0..150u32 {
            let user = ["admin", "root", "test", "oracle", "ubnt"][attempt as usize % 5];
            warn!(
                target: "audit",
                event_type = "authentication",
                username = user,
                ip_address = "198.51.100.77",
                attempt,
                "User login_failed"
            );
        }
    }
    let morning = (now - TimeDelta::days(6))
        .date_naive()
        .and_hms_opt(10, 5, 0);
    if let Some(start) = morning.map(|t| t.and_utc()) {
        for n in 0..40u32 {
            set_demo_time(start + TimeDelta::minutes(i64::from(n) * 3));
            let device = format!("edge-ber{}-{:02}", 1 + n % 3, n);
            error!(
                target: "audit",
                event_type = "onboarding",
                username = "alice",
                ip_address = "198.51.100.23",
                resource_type = "device",
                resource_name = device.as_str(),
                error = "Nautobot API returned 503",
                "Device '{device}' onboarded to Nautobot - Error: Nautobot API returned 503"
            );
        }
    }
}

/// One round of what a network-automation backend records: 9 audit events.
fn sample_flows(round: u32) {
    let (user, user_id, ip) = USERS[round as usize % USERS.len()];
    let (device, device_id) = DEVICES[round as usize % DEVICES.len()];

    // A request span carries who and from where; every audit event inside inherits it.
    let request = info_span!("request", username = user, user_id, ip_address = ip);
    request.in_scope(|| {
        info!(target: "audit", event_type = "authentication", "User login");
        info!(
            target: "audit",
            event_type = "onboarding",
            resource_type = "device",
            resource_id = device_id,
            resource_name = device,
            "Device '{device}' onboarded to Nautobot"
        );
        error!(
            target: "audit",
            event_type = "onboarding",
            resource_type = "device",
            resource_name = "edge-par1-07",
            error = "SSH timeout after 30s",
            "Device 'edge-par1-07' onboarded to Nautobot - Error: SSH timeout after 30s"
        );
        info!(
            target: "audit",
            event_type = "credential_management",
            resource_type = "credential",
            resource_name = "netops-readonly",
            password = "never-stored",
            "Credential 'netops-readonly' updated"
        );
        info!(target: "audit", event_type = "authentication", "User logout");
    });

    warn!(
        target: "audit",
        event_type = "authentication",
        username = "mallory",
        ip_address = "203.0.113.66",
        "User login_failed"
    );
    let failed = u64::from(round.is_multiple_of(3));
    info!(
        target: "audit",
        event_type = "backup",
        username = "system",
        success_count = 48 - failed,
        failed_count = failed,
        total_devices = 48u64,
        "Backup completed: {} devices backed up", 48 - failed
    );
    info!(
        target: "audit",
        event_type = "sync",
        username = "system",
        source = "nautobot",
        target_system = "checkmk",
        changed = round % 5,
        "Sync completed"
    );
    if round % 10 == 9 {
        error!(
            target: "audit",
            event_type = "backup",
            username = "system",
            severity = "critical",
            "Backup failed: storage unreachable"
        );
    } else {
        info!(
            target: "audit",
            event_type = "job_execution",
            username = user,
            resource_type = "job",
            resource_name = "nightly-compliance",
            "Job template 'nightly-compliance' started"
        );
    }
}

async fn show(client: &tokio_postgres::Client) -> Result<()> {
    let sql = format!(
        "SELECT id, {RECORD_COLUMNS} FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT 12"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .context("cannot read the records back")?;
    println!();
    println!("Newest audit records:");
    println!(
        "{:>5}  {:<15}  {:<8}  {:<21}  {:<10}  {:<15}  message",
        "id", "time (UTC)", "severity", "event_type", "username", "ip_address"
    );
    for row in &rows {
        let id: i64 = row.get("id");
        let log = AuditLog::from_row(row).context("cannot decode a record")?;
        println!(
            "{:>5}  {:<15}  {:<8}  {:<21}  {:<10}  {:<15}  {}",
            id,
            log.created_at.format("%H:%M:%S%.6f"),
            log.severity,
            log.event_type,
            log.username,
            log.ip_address.map(|ip| ip.to_string()).unwrap_or_default(),
            log.message
        );
    }
    let counts = client
        .query(
            "SELECT event_type, count(*) FROM audit_logs GROUP BY 1 ORDER BY 2 DESC, 1",
            &[],
        )
        .await
        .context("cannot count the records")?;
    let counts: Vec<String> = counts
        .iter()
        .map(|r| format!("{} {}", r.get::<_, i64>(1), r.get::<_, String>(0)))
        .collect();
    println!();
    println!("By event type: {}", counts.join(", "));
    Ok(())
}

/// The demo's throwaway key pair, in a directory of its own that goes when it does.
struct DemoKeys {
    dir: std::path::PathBuf,
    signing: std::path::PathBuf,
    public: std::path::PathBuf,
}

impl DemoKeys {
    fn create() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("auditd-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let signing = dir.join("demo-log.key");
        let _ = std::fs::remove_file(&signing);
        let _ = std::fs::remove_file(dir.join("demo-log.key.pub"));
        super::keygen::write_pair(&signing, "demo.auditd.invalid/log")?;
        Ok(DemoKeys {
            public: dir.join("demo-log.key.pub"),
            signing,
            dir,
        })
    }
}

impl Drop for DemoKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
