//! Failover as production runs it: Patroni (with etcd) decides which node leads, the
//! leader's machine dies whole (Patroni and PostgreSQL SIGKILLed), Patroni promotes its
//! synchronous standby once the leader's key expires, and the writer, given every node
//! with `target_session_attrs=read-write`, finds the new leader by itself.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_provision::Patroni;
use support::{assert_exactly_once, assert_intact_when_sealed, builder, connect, dispatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_promotes_the_synchronous_standby_and_the_writer_loses_nothing() {
    let mut cluster = tokio::task::spawn_blocking(|| Patroni::start(2, true))
        .await
        .expect("start-up")
        .expect("a Patroni cluster with a synchronous standby");
    let url = cluster.url("postgres");
    audit_layer::schema::migrate(&connect(&url).await)
        .await
        .expect("migrations on the leader");
    let leader = cluster.leader().expect("a leader");

    let (writer, handle) = dispatch(builder(&url));
    let stream = handle.stream_id();
    let emitted = Arc::new(AtomicU64::new(0));
    let failed_over = Arc::new(AtomicBool::new(false));
    // About 1,000 records a second, through the failover and 1,000 past it.
    let producer = {
        let (emitted, failed_over) = (emitted.clone(), failed_over.clone());
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&writer, || {
                let mut after = 0;
                for i in 0u64.. {
                    if failed_over.load(Ordering::Relaxed) {
                        after += 1;
                        if after > 1_000 {
                            break;
                        }
                    }
                    tracing::info!(target: "audit", username = "alice", event_type = "patroni", i, "steady");
                    emitted.fetch_add(1, Ordering::Relaxed);
                    if i % 10 == 9 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        })
    };
    let leader_client = connect(&cluster.node_url(leader, "postgres")).await;
    let committed = "SELECT count(*) FROM audit_logs WHERE event_type = 'patroni'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while leader_client
        .query_one(committed, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 2_000
    {
        assert!(Instant::now() < deadline, "the writer never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A checkpoint signed on the old leader, which the new leader's log must extend.
    let mut sealer = support::test_sealer();
    let mut seal_client = connect(&cluster.node_url(leader, "postgres")).await;
    let before = sealer
        .seal(&mut seal_client)
        .await
        .expect("seal on the leader");
    assert!(before.tree_size > 0);
    drop((leader_client, seal_client));

    let killed = Instant::now();
    cluster.kill_node(leader).expect("kill the leader");
    let cluster = Arc::new(cluster);
    let new_leader = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            cluster.wait_for_leader(Some(leader), Duration::from_secs(120))
        })
        .await
        .unwrap()
        .expect("Patroni promotes the synchronous standby")
    };
    let decided = killed.elapsed();
    failed_over.store(true, Ordering::Relaxed);
    producer.join().expect("producer");
    let stats = handle
        .shutdown(Duration::from_secs(120))
        .await
        .expect("every record committed on the new leader");
    eprintln!(
        "Patroni promoted node {new_leader} {decided:?} after the kill; the writer retried {} times",
        stats.retries
    );
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert!(stats.retries > 0, "the failover was felt: {stats:?}");

    let promoted = connect(&cluster.node_url(new_leader, "postgres")).await;
    assert_exactly_once(&promoted, stream, emitted.load(Ordering::Relaxed) as i64).await;
    assert_intact_when_sealed(&cluster.node_url(new_leader, "postgres")).await;
}
