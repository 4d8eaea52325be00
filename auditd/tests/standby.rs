//! `auditd serve` pointed at a hot standby: reads may come from one, writes never go to
//! one.

mod support;

use pg_provision::{Cluster, ClusterOptions, Replication};
use support::auditd;

#[test]
fn serve_refuses_a_standby_as_the_database_it_writes_to() {
    let primary = Cluster::start_new(&ClusterOptions {
        replication: Replication::Asynchronous,
        ..ClusterOptions::default()
    })
    .expect("primary");
    let standby = primary
        .start_standby(&ClusterOptions::default())
        .expect("standby");
    let standby_url = standby.url("postgres");
    // Were the standby let through, the start would stop at the next check anyway (no
    // tokens on a network address), so the test cannot hang on a server that serves.
    let (code, output) = auditd(&[
        "serve",
        "--database-url",
        &standby_url,
        "--listen",
        "0.0.0.0:0",
        "--db-timeout",
        "10s",
    ]);
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("hot standby") && output.contains("--audit-database-url"),
        "the refusal says what is wrong and what to do: {output}"
    );
    // The same standby with the primary for writes gets past that check (and stops at
    // the tokens).
    let (code, output) = auditd(&[
        "serve",
        "--database-url",
        &standby_url,
        "--audit-database-url",
        &primary.url("postgres"),
        "--listen",
        "0.0.0.0:0",
        "--db-timeout",
        "10s",
    ]);
    assert_ne!(code, 0, "{output}");
    assert!(
        !output.contains("hot standby") && output.contains("without bearer tokens"),
        "only the missing tokens stop this start: {output}"
    );
}
