//! auditd's OpenAPI document is the contract, and a fuzzer holds the server to it:
//! Schemathesis generates requests from the document (valid ones and ones it forbids)
//! against a running auditd with real records, and fails on any 5xx, on any response the
//! document does not describe, on a valid request refused, and on a forbidden one accepted.
//!
//! Needs the `schemathesis` command (PyPI; `.ci/run` installs it in a virtualenv and sets
//! `SCHEMATHESIS`). The budget is bounded (two minutes of fuzzing) and the seed fixed:
//! `AUDITD_FUZZ_SECONDS`, `AUDITD_FUZZ_EXAMPLES`, `AUDITD_FUZZ_SEED` and
//! `AUDITD_FUZZ_RANDOM=1` widen or vary a run by hand.

mod support;

use std::time::Duration;

use auditd::{Limits, Tokens};
use support::http::{TestServer, TOKEN};
use support::{emit_and_flush, TestDb};
use tracing::{error, info, info_span, warn};

fn schemathesis() -> String {
    std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned())
}

/// Records of every shape the API serves: each event type and severity, resources,
/// metadata of several types, fix-ups, text that needs escaping.
fn emit_records() {
    for round in 0..40 {
        let user = ["alice", "bob", "admin", "system"][round % 4];
        let span = info_span!("request", username = user, ip_address = "10.1.2.3");
        let _guard = span.enter();
        info!(target: "audit", event_type = "authentication", "User login");
        warn!(target: "audit", event_type = "authentication", attempts = round, "User login_failed");
        error!(
            target: "audit",
            event_type = "onboarding",
            resource_type = "device",
            resource_id = %format!("5f0c1a2e-{round}"),
            resource_name = "edge-fra1-01",
            site = "fra1",
            dry_run = false,
            "Device 'edge-fra1-01' onboarded to Nautobot - Error: SSH timeout after 30s"
        );
        info!(
            target: "audit",
            event_type = "backup",
            severity = "critical",
            success_count = 48,
            ratio = 0.5,
            "Backup failed: \"storage\" unreachable, ünïcødé ✓ <script>"
        );
        info!(target: "audit", username = "ev\0il", event_type = "sync", "NUL\0 in text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_generated_from_the_openapi_document_get_only_documented_answers() {
    let db = TestDb::migrated("openapi_fuzz").await;
    emit_and_flush(&db, emit_records).await;
    let limits = Limits {
        // Long polls answer within the request timeout less a second: the fuzzer's many
        // tails then take two seconds each, not the default 25.
        request_timeout: Duration::from_secs(3),
        // Event streams end (as they do after an hour in production) so that each of
        // the fuzzer's streams takes seconds.
        max_stream_duration: Duration::from_secs(2),
        ..Limits::default()
    };
    // Both scopes, so that the fuzzer reaches the reads and the ingest route alike.
    let tokens = Tokens::parse([format!("ops:{TOKEN}:read,write").as_str()]).unwrap();
    let server = TestServer::start_with(&db, tokens, limits).await;
    let examples = std::env::var("AUDITD_FUZZ_EXAMPLES").unwrap_or_else(|_| "40".to_owned());
    let seed = std::env::var("AUDITD_FUZZ_SEED").unwrap_or_else(|_| "20261201".to_owned());
    // The fuzzing phase runs until its time is up: two minutes keeps CI in bounds.
    let max_time = std::env::var("AUDITD_FUZZ_SECONDS").unwrap_or_else(|_| "120".to_owned());
    let url = format!("http://{}/api/v1/openapi.json", server.addr);
    let header = format!("Authorization: Bearer {TOKEN}");
    // The fuzzer blocks; the server goes on serving on the runtime's other thread.
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(schemathesis())
            // How to send NDJSON bodies, and what a reused Idempotency-Key gets.
            .env("SCHEMATHESIS_HOOKS", "openapi_fuzz_hooks")
            .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/tests"))
            .args([
                "--config-file",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi_fuzz.toml"),
            ])
            .args([
                "run",
                &url,
                "--checks",
                "all",
                "--no-color",
                "--workers",
                "2",
            ])
            .args(["--header", &header])
            .args(["--max-examples", &examples, "--seed", &seed])
            // The same requests every run, so CI is repeatable; AUDITD_FUZZ_RANDOM=1 for
            // new ones (a deeper hunt by hand).
            .args(if std::env::var_os("AUDITD_FUZZ_RANDOM").is_some() {
                &[][..]
            } else {
                &["--generation-deterministic"][..]
            })
            .args(["--request-timeout", "15", "--max-time", &max_time])
            .args(["--output-truncate", "false", "--warnings", "off"])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}; install it with `pip install schemathesis` (or set \
             SCHEMATHESIS), as .ci/run does",
            schemathesis()
        )
    });
    let report = String::from_utf8_lossy(&run.stdout);
    // The summary (phases, timings, counts) for whoever reads the test's output.
    println!("{report}");
    assert!(
        run.status.success(),
        "the fuzzer found answers the document does not allow:\n{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Not a vacuous pass: every operation the fuzzer loaded was tested, and it loaded
    // the document's operations (schemathesis 4.32 reports one fewer than the route
    // table, as it has since this test was written).
    let count = |label: &str| {
        report
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|n| n.trim().to_owned())
    };
    let selected = count("Selected:").unwrap_or_default();
    let tested = count("Tested:").unwrap_or_default();
    assert_eq!(selected, format!("{tested}/{tested}"), "{report}");
    let tested: usize = tested.parse().unwrap_or(0);
    assert!(tested + 1 >= auditd::ROUTES.len(), "{report}");
    server.stop().await;
}
