//! Prometheus metrics: requests by route and status, latency histograms, rows served, the
//! connection pool, and the access-audit writer's counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A value read at scrape time (pool state, writer counters).
pub struct Extra<'a> {
    /// The metric's name.
    pub name: &'a str,
    /// `gauge` or `counter`.
    pub kind: &'a str,
    /// The `# HELP` text.
    pub help: &'a str,
    /// The value now.
    pub value: f64,
}

/// Counters kept as requests are served: requests, latency and rows, by route.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    rows: Mutex<BTreeMap<&'static str, u64>>,
    ingested: AtomicU64,
    ingest_fixups: AtomicU64,
    ingest_duplicates: AtomicU64,
    ingest_rate_limited: AtomicU64,
}

impl Metrics {
    /// Counts a request by route and status, and adds its latency to the route's histogram.
    pub fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route, status)).or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            let h = latency.entry(route).or_default();
            let seconds = elapsed.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        }
    }

    /// Counts records accepted by `POST /api/v1/events`, and their fix-ups.
    pub fn records_ingested(&self, records: u64, fixups: u64) {
        self.ingested.fetch_add(records, Ordering::Relaxed);
        self.ingest_fixups.fetch_add(fixups, Ordering::Relaxed);
    }

    /// Counts a retry answered as a duplicate of a request already committed.
    pub fn ingest_duplicate(&self) {
        self.ingest_duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write refused for its token's rate.
    pub fn ingest_rate_limited(&self) {
        self.ingest_rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// The ingest counters: records, fix-ups, duplicates, rate-limited requests.
    pub fn ingest_counts(&self) -> [u64; 4] {
        [
            &self.ingested,
            &self.ingest_fixups,
            &self.ingest_duplicates,
            &self.ingest_rate_limited,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }

    /// Adds `rows` to the records served by `route`.
    pub fn rows_served(&self, route: &'static str, rows: u64) {
        if let Ok(mut served) = self.rows.lock() {
            *served.entry(route).or_default() += rows;
        }
    }

    /// The text exposition format, with the `extra` values appended.
    pub fn render(&self, extra: &[Extra<'_>]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP auditd_http_requests_total HTTP requests served, by route and status.\n",
        );
        out.push_str("# TYPE auditd_http_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((route, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "auditd_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP auditd_http_request_duration_seconds Time to answer, by route (streams: to the first byte).\n");
        out.push_str("# TYPE auditd_http_request_duration_seconds histogram\n");
        if let Ok(latency) = self.latency.lock() {
            for (route, h) in latency.iter() {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "auditd_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(out, "auditd_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(
                    out,
                    "auditd_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "auditd_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP auditd_rows_served_total Audit records returned, by route.\n");
        out.push_str("# TYPE auditd_rows_served_total counter\n");
        if let Ok(rows) = self.rows.lock() {
            for (route, n) in rows.iter() {
                let _ = writeln!(out, "auditd_rows_served_total{{route=\"{route}\"}} {n}");
            }
        }
        for Extra {
            name,
            kind,
            help,
            value,
        } in extra
        {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
