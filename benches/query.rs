//! Query and export through auditd's HTTP API on a large table.
//!
//! `cargo bench --bench query -- [--rows 10000000] [--requests 200] [--overview-requests 20]
//! [--uncounted-requests 3] [--text-index] [--selectivity-rows 10000000]`
//!
//! Loads `--rows` records spread over 90 days (1,000 users, 9 event types, 10,000 devices)
//! into a fresh database, starts auditd in-process on loopback, then measures p50/p99 of a
//! filtered page of 100 for the common filters and for a page 100 pages deep (keyset), and
//! the viewer's overview (histogram and facets) over 24 hours, 14 days and the whole table,
//! from `audit_logs` alone and then from the counts kept ahead (with the catch-up's rate),
//! and the rows/s and peak memory of an NDJSON export; then, in a second database of
//! `--selectivity-rows` skewed records (0 skips it), a page of each column's common,
//! middling and rare values, first and 5,000 deep. With `--text-index`, the optional trigram
//! index (`auditd text-index`) is built after loading, and its build time printed. Uses
//! `DATABASE_URL` when set, otherwise a throwaway cluster with default durability on this
//! machine.

mod support;

use support::http::Client;
use support::{arg, connect, load_spread, peak_rss_mib, serve_in_process};

use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `path` requested `warmups` times untimed (to warm the cache), then `requests` times:
/// the times, sorted.
async fn time_path(
    client: &mut Client,
    path: &str,
    warmups: usize,
    requests: usize,
) -> Vec<Duration> {
    for _ in 0..warmups {
        client.get(path).await;
    }
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        times.push(client.get(path).await.0);
    }
    times.sort();
    times
}

/// Times each overview `requests` times (after one untimed); returns each case's p50.
async fn time_overviews(
    client: &mut Client,
    cases: &[(&'static str, String)],
    requests: usize,
) -> Vec<(&'static str, f64)> {
    let mut medians = Vec::new();
    for (name, path) in cases {
        client.get(path).await;
        let mut times = Vec::with_capacity(requests);
        for _ in 0..requests {
            let (elapsed, body) = client.get(path).await;
            let overview: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert!(overview["histogram"].is_array(), "{overview}");
            times.push(elapsed);
        }
        times.sort();
        println!(
            "query:   {name:<40} p50 {:>8.2} ms  p99 {:>8.2} ms  ({requests} requests)",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
        medians.push((*name, percentile(&times, 0.5)));
    }
    medians
}

#[tokio::main]
async fn main() {
    let rows = arg("--rows", 10_000_000);
    let requests = arg("--requests", 200) as usize;
    let server = support::postgres().await;
    let url = server
        .create_database("bench_query")
        .await
        .expect("database");
    load_spread(&url, rows).await;
    let text_index = std::env::args().any(|a| a == "--text-index");
    if text_index {
        let client = connect(&url).await;
        let started = Instant::now();
        let report = audit_layer::schema::text_index::create(&client)
            .await
            .expect("trigram index");
        client
            .batch_execute("ANALYZE audit_logs")
            .await
            .expect("analyze");
        println!(
            "query: trigram index on message built over {} partitions in {:.0} s",
            report.built.len(),
            started.elapsed().as_secs_f64()
        );
    }

    // Access records go to a database of their own, so they do not grow the measured table.
    let access_url = server
        .create_database("bench_query_access")
        .await
        .expect("database");
    let (addr, stop, serving) = serve_in_process(&url, &access_url).await;
    let mut client = Client::connect(addr).await;
    if text_index {
        // auditd samples messages to tune text search once it sees the index complete.
        let started = Instant::now();
        loop {
            let (_, metrics) = client.get("/metrics").await;
            if !String::from_utf8_lossy(&metrics).contains("auditd_text_search_sample_messages 0\n")
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no text search sample"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "query: text search sample taken within {:.0} ms of starting",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let since = (chrono::Utc::now() - chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (chrono::Utc::now() - chrono::Duration::days(29))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cases: Vec<(&str, String)> = vec![
        ("newest page, no filter", "/api/v1/logs?limit=100".into()),
        ("username", "/api/v1/logs?username=user42&limit=100".into()),
        (
            "event_type",
            "/api/v1/logs?event_type=backup&limit=100".into(),
        ),
        (
            "severity",
            "/api/v1/logs?severity=critical&limit=100".into(),
        ),
        (
            "min_severity",
            "/api/v1/logs?min_severity=error&limit=100".into(),
        ),
        (
            "resource",
            "/api/v1/logs?resource_type=device&resource_id=dev-4242&limit=100".into(),
        ),
        (
            "time range (1 day, a month ago)",
            format!("/api/v1/logs?since={since}&until={until}&limit=100"),
        ),
        (
            "username + event_type",
            "/api/v1/logs?username=user42&event_type=backup&limit=100".into(),
        ),
        (
            "text search q (common word)",
            "/api/v1/logs?q=number&limit=100".into(),
        ),
        (
            "text search q (rare: one device)",
            "/api/v1/logs?q=edge-4242%20&limit=100".into(),
        ),
        (
            "metadata meta.site",
            "/api/v1/logs?meta.site=site7&limit=100".into(),
        ),
    ];
    println!("query: {requests} requests each, one keep-alive connection, page of 100:");
    for (name, path) in &cases {
        let times = time_path(&mut client, path, 5, requests).await;
        println!(
            "query:   {name:<34} p50 {:>7.2} ms  p99 {:>7.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }

    // Deep pages: follow next_cursor down, then time that page.
    for (name, base, depth) in [
        ("deep page 1000, no filter", "/api/v1/logs?limit=100", 1000),
        (
            "deep page 90, username",
            "/api/v1/logs?username=user42&limit=100",
            90,
        ),
    ] {
        let mut path = base.to_owned();
        for _ in 0..depth {
            let (_, body) = client.get(&path).await;
            let page: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let cursor = page["next_cursor"]
                .as_str()
                .expect("a next page")
                .to_owned();
            path = format!("{base}&cursor={cursor}");
        }
        let times = time_path(&mut client, &path, 0, requests).await;
        println!(
            "query:   {name:<34} p50 {:>7.2} ms  p99 {:>7.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }

    // The viewer's overview (histogram and facets), first from audit_logs alone (as before
    // any catch-up: its cost grows with the rows in the window), then from the counts kept
    // ahead (migration 0010), in the same run.
    let overview_requests = arg("--overview-requests", 20) as usize;
    let ago = |days: i64| {
        (chrono::Utc::now() - chrono::Duration::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let overview_cases = [
        (
            "overview, last 24 h",
            "/api/v1/overview?buckets=96".to_owned(),
        ),
        (
            "overview, 14 days (the viewer's default)",
            format!("/api/v1/overview?since={}&buckets=112", ago(14)),
        ),
        (
            "overview, 14 days, username",
            format!(
                "/api/v1/overview?since={}&buckets=112&username=user42",
                ago(14)
            ),
        ),
        (
            "overview, 14 days, severity=critical",
            format!(
                "/api/v1/overview?since={}&buckets=112&severity=critical",
                ago(14)
            ),
        ),
        (
            "overview, 14 days, event_type=backup",
            format!(
                "/api/v1/overview?since={}&buckets=112&event_type=backup",
                ago(14)
            ),
        ),
        (
            "overview, 14 days, resource (one device)",
            format!(
                "/api/v1/overview?since={}&buckets=112&resource_type=device&resource_id=dev-4242",
                ago(14)
            ),
        ),
        (
            "overview, 90 days (every row)",
            format!("/api/v1/overview?since={}&buckets=90", ago(91)),
        ),
    ];
    let uncounted_requests = arg("--uncounted-requests", 3) as usize;
    println!("query: the overview from audit_logs alone, nothing counted ahead:");
    let uncounted = time_overviews(&mut client, &overview_cases, uncounted_requests).await;
    let counting = connect(&url).await;
    let started = Instant::now();
    let counted: i64 = counting
        .query_one("SELECT audit_counts_catch_up()", &[])
        .await
        .expect("catch-up")
        .get(0);
    let took = started.elapsed().as_secs_f64();
    println!(
        "query: counted {counted} records ahead in {took:.1} s = {:.0} records/s",
        counted as f64 / took
    );
    // The server closes a connection idle that long.
    let mut client = Client::connect(addr).await;
    println!("query: the overview from the counts kept ahead:");
    let from_counts = time_overviews(&mut client, &overview_cases, overview_requests).await;
    for ((name, before), (_, after)) in uncounted.iter().zip(&from_counts) {
        println!(
            "query:   {name:<40} p50 {:.3} x the uncounted overview",
            after / before
        );
    }

    let export_rows = rows.min(1_000_000);
    let before = peak_rss_mib();
    let (elapsed, lines, bytes) = client
        .stream_count(&format!("/api/v1/logs/export?limit={export_rows}"))
        .await;
    assert_eq!(lines, export_rows);
    println!(
        "export: {lines} rows NDJSON ({:.0} MiB) in {:.2} s = {:.0} rows/s; peak RSS of the process (server and client) {before:.0} MiB before, {:.0} MiB after",
        bytes as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64(),
        peak_rss_mib()
    );
    serving.stop(stop).await;

    let selectivity_rows = arg("--selectivity-rows", 10_000_000);
    if selectivity_rows > 0 {
        time_selectivities(&server, &access_url, selectivity_rows, requests).await;
    }
}

/// The cases that decide an index design (issue 17), through auditd's HTTP API: a value
/// of each column that a tenth of the records carry, one that 0.1 % carry, one that five
/// carry, newest first, the first page and the page 5,000 records deep; `--selectivity-rows`
/// skewed records in a database of their own (`support::load_skewed`).
async fn time_selectivities(
    server: &pg_provision::Postgres,
    access_url: &str,
    rows: u64,
    requests: usize,
) {
    let url = server
        .create_database("bench_query_selectivity")
        .await
        .expect("database");
    let client = support::connect_migrated(&url).await;
    let started = Instant::now();
    support::load_skewed(&client, rows).await;
    support::build_secondary_indexes(&client).await;
    println!(
        "query: loaded {rows} skewed rows and built the indexes in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let (addr, stop, serving) = serve_in_process(&url, access_url).await;
    let mut http = Client::connect(addr).await;
    println!("query: by selectivity, {requests} requests each, page of 100:");
    let value = support::skewed_value;
    let mut cases: Vec<(&str, &str, String)> = Vec::new();
    for (column, kind, parameter) in [
        ("username", "user", "username="),
        ("event_type", "event", "event_type="),
        ("severity", "severity", "severity="),
        ("resource", "resource", "resource_type=device&resource_id="),
    ] {
        for selectivity in ["common", "middling", "rare"] {
            cases.push((
                column,
                selectivity,
                format!("{parameter}{}", value(kind, selectivity)),
            ));
        }
    }
    // The one severity its partial indexes leave out, and lists, as min_severity sends them.
    cases.push(("severity", "info", "severity=info".into()));
    cases.push(("min_severity", "common", "min_severity=warning".into()));
    cases.push(("min_severity", "middling", "min_severity=error".into()));
    for (column, selectivity, filter) in cases {
        let first = format!("/api/v1/logs?{filter}&limit=100");
        let mut pages = vec![("page 1", first.clone())];
        // Down the keyset cursor, 50 pages of 100, where there are that many.
        let mut path = first.clone();
        for depth in 1..=50 {
            let (_, body) = http.get(&path).await;
            let page: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert!(page["items"].is_array(), "{filter}: {page}");
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("{first}&cursor={cursor}"),
                None => break,
            }
            if depth == 50 {
                pages.push(("5,000 deep", path.clone()));
            }
        }
        for (depth, path) in pages {
            let times = time_path(&mut http, &path, 3, requests).await;
            println!(
                "query:   {column:<12} {selectivity:<8} {depth:<10} p50 {:>7.2} ms  p99 {:>7.2} ms",
                percentile(&times, 0.5),
                percentile(&times, 0.99)
            );
        }
    }
    serving.stop(stop).await;
}
