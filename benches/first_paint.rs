//! The viewer's first paint on a large table, in headless Chromium.
//!
//! `cargo bench --bench first_paint -- [--rows 1000000] [--loads 10]`
//!
//! Loads `--rows` records spread over 90 days (as the query bench does) into a fresh
//! database, starts auditd in-process, and opens the viewer `--loads` times, each in a
//! fresh browser context, first with nothing counted ahead for the overview, then with the
//! counts caught up (migration 0010). Prints, from the navigation's start, the first
//! contentful paint and when the table's first row and the histogram's first bar are in
//! the page: median and worst. The viewer's default window is the last 14 days.
//!
//! Needs Node.js, Chromium (`CHROMIUM`, default `/usr/bin/chromium`) and playwright-core
//! in `auditd/tests/viewer/node_modules` (`npm ci` there; the viewer test does it).

mod support;

use std::path::Path;
use std::process::Command;

use support::{arg, connect, load_spread, serve_in_process};

fn loads_of(base: &str, loads: u64) -> Vec<serde_json::Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("auditd/tests/viewer");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in {} first (the viewer test does)",
        dir.display()
    );
    let output = Command::new("node")
        .args(["first_paint.mjs", base, &loads.to_string()])
        .current_dir(&dir)
        .output()
        .expect("node");
    assert!(
        output.status.success(),
        "first_paint.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn report(phase: &str, loads: &[serde_json::Value]) {
    for (name, key) in [
        ("first contentful paint", "fcp"),
        ("table's first row", "row"),
        ("histogram's first bar", "bar"),
    ] {
        let mut ms: Vec<f64> = loads.iter().map(|l| l[key].as_f64().unwrap()).collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "first_paint: {phase:<28} {name:<24} median {:>7.0} ms  worst {:>7.0} ms  ({} loads)",
            ms[ms.len() / 2],
            ms[ms.len() - 1],
            ms.len()
        );
    }
}

#[tokio::main]
async fn main() {
    let rows = arg("--rows", 1_000_000);
    let loads = arg("--loads", 10);
    let server = support::postgres().await;
    let url = server
        .create_database("bench_first_paint")
        .await
        .expect("database");
    load_spread(&url, rows).await;
    let access_url = server
        .create_database("bench_first_paint_access")
        .await
        .expect("database");
    let (addr, stop, serving) = serve_in_process(&url, &access_url).await;
    let base = format!("http://{addr}");
    // One untimed load warms PostgreSQL's cache, as a viewer opened twice would.
    loads_of(&base, 1);
    report("nothing counted ahead", &loads_of(&base, loads));
    let counted: i64 = connect(&url)
        .await
        .query_one("SELECT audit_counts_catch_up()", &[])
        .await
        .expect("catch-up")
        .get(0);
    println!("first_paint: counted {counted} records ahead");
    report("counts caught up", &loads_of(&base, loads));
    serving.stop(stop).await;
}
