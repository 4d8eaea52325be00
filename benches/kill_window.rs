//! How many records a hard kill loses: a child process emits at a steady rate and is
//! killed with SIGKILL (no shutdown, no destructors); the rows in the table are compared
//! with what it had emitted.
//!
//! `cargo bench --bench kill_window -- [--rate 20000] [--runs 5]`
//!
//! Records are numbered (seq) in emission order, so the loss is the records after the
//! highest committed seq; the child reports its progress every millisecond.

mod support;

use support::{arg, connect_migrated};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pg_provision::{Cluster, ClusterOptions};
use tracing::info;
use tracing_subscriber::prelude::*;

fn child(url: &str, rate: u64) {
    let (layer, handle) = audit_layer::AuditLayer::builder()
        .database_url(url)
        .build()
        .expect("layer");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    println!("STREAM {}", handle.stream_id());
    let started = Instant::now();
    let mut emitted: u64 = 0;
    tracing::dispatcher::with_default(&dispatch, || loop {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while emitted < due {
            emitted += 1;
            info!(target: "audit", username = "kill", event_type = "kill", "steady");
        }
        println!("EMITTED {emitted}");
        std::thread::sleep(Duration::from_millis(1));
    });
}

fn main() {
    let rate = arg("--rate", 20_000);
    if let Ok(url) = std::env::var("KILL_WINDOW_CHILD_URL") {
        return child(&url, rate);
    }
    let runs = arg("--runs", 5);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = Cluster::start_new(&ClusterOptions::durable()).expect("cluster");
    let url = cluster.url("postgres");
    let client = runtime.block_on(connect_migrated(&url));
    let mut losses = Vec::new();
    for run in 0..runs {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["--rate", &rate.to_string()])
            .env("KILL_WINDOW_CHILD_URL", &url)
            .stdout(Stdio::piped())
            .spawn()
            .expect("child");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stream: i64 = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.strip_prefix("STREAM ").and_then(|s| s.parse().ok()))
            .expect("stream id");
        // Let it run into its steady state, then kill it between two progress lines.
        let deadline = Instant::now() + Duration::from_millis(2000 + 137 * run);
        let mut emitted = 0u64;
        for line in lines.by_ref() {
            if let Some(n) = line
                .ok()
                .and_then(|l| l.strip_prefix("EMITTED ").and_then(|n| n.parse().ok()))
            {
                emitted = n;
            }
            if Instant::now() >= deadline {
                child.kill().expect("kill");
                break;
            }
        }
        child.wait().expect("wait");
        // Anything printed after the last line read was emitted too: read the rest.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("EMITTED ").and_then(|n| n.parse().ok()) {
                emitted = n;
            }
        }
        let committed: i64 = runtime.block_on(async {
            client
                .query_one(
                    "SELECT count(*) FROM audit_logs WHERE stream_id = $1",
                    &[&stream],
                )
                .await
                .expect("count")
                .get(0)
        });
        let lost = emitted.saturating_sub(committed as u64);
        let window_ms = lost as f64 * 1000.0 / rate as f64;
        println!("kill_window: run {run}: emitted {emitted}, committed {committed}, lost {lost} = {window_ms:.0} ms of events at {rate}/s");
        losses.push(window_ms);
    }
    losses.sort_by(f64::total_cmp);
    println!(
        "kill_window: {runs} SIGKILLs at {rate} events/s: lost the last {:.0}-{:.0} ms of events (median {:.0} ms); default batch_max_wait is 200 ms",
        losses[0],
        losses[losses.len() - 1],
        losses[losses.len() / 2]
    );
}
