//! What a standby costs ingest: the same events, end to end through the layer, into a
//! primary alone, a primary streaming to an asynchronous standby, and one whose commits
//! wait for a synchronous standby; rounds interleaved, so that the VM's drift falls on
//! all three alike.
//!
//! `cargo bench --bench replication -- [--events 400000] [--threads 4] [--rounds 3]`
//!
//! All clusters are durable (fsync on) and on this machine, so a synchronous commit waits
//! for a loopback round trip and the standby's own flush: a lower bound on what a standby
//! across a network costs.

mod support;

use std::time::{Duration, Instant};

use pg_provision::{Cluster, ClusterOptions, Replication};
use support::{arg, connect_migrated, emit_backups};
use tracing_subscriber::prelude::*;

struct Setup {
    name: &'static str,
    primary: Cluster,
    _standby: Option<Cluster>,
    rates: Vec<f64>,
}

fn main() {
    let events = arg("--events", 400_000);
    let threads = arg("--threads", 4);
    let rounds = arg("--rounds", 3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut setups: Vec<Setup> = [
        ("alone", Replication::None),
        ("async standby", Replication::Asynchronous),
        ("sync standby", Replication::Synchronous),
    ]
    .into_iter()
    .map(|(name, replication)| {
        let primary = Cluster::start_new(&ClusterOptions {
            durable: true,
            replication,
        })
        .expect("primary");
        let standby = (replication != Replication::None).then(|| {
            primary
                .start_standby(&ClusterOptions::durable())
                .expect("standby")
        });
        Setup {
            name,
            primary,
            _standby: standby,
            rates: Vec::new(),
        }
    })
    .collect();
    for round in 0..rounds {
        for setup in &mut setups {
            let database = format!("bench_{round}");
            let admin = runtime.block_on(support::connect(&setup.primary.url("postgres")));
            runtime
                .block_on(admin.batch_execute(&format!("CREATE DATABASE {database}")))
                .expect("database");
            let url = setup.primary.url(&database);
            runtime.block_on(connect_migrated(&url));
            // A queue that holds the whole burst, as the ingest bench's: what is measured
            // is how fast the database takes it, not what a full queue drops.
            let (layer, handle) = audit_layer::AuditLayer::builder()
                .database_url(&url)
                .queue_capacity(1 << 20)
                .build()
                .expect("layer");
            let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
            let started = Instant::now();
            emit_backups(&dispatch, threads, events / threads);
            let stats = runtime
                .block_on(handle.shutdown(Duration::from_secs(600)))
                .expect("committed");
            let rate = stats.written as f64 / started.elapsed().as_secs_f64();
            assert_eq!(stats.dropped, 0, "{stats:?}");
            println!(
                "round {round}: {:<14} {:>9.0} events/s ({} events)",
                setup.name, rate, stats.written
            );
            setup.rates.push(rate);
        }
    }
    let alone = setups[0].rates.clone();
    for setup in &setups[1..] {
        let ratios: Vec<f64> = setup
            .rates
            .iter()
            .zip(&alone)
            .map(|(with, without)| with / without)
            .collect();
        let sum = |r: &[f64]| r.iter().sum::<f64>();
        println!(
            "{}: {:.2} × the primary alone overall (rounds {})",
            setup.name,
            sum(&setup.rates) / sum(&alone),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
