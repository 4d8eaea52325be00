//! Hearing about commits as they happen: `LISTEN` on the writer's commit channel.
//!
//! The audit writer sends a notice with every batch it commits
//! ([`audit_layer::COMMIT_CHANNEL`]). Tails wait for one of these or for their poll
//! interval, whichever comes first, so a new record reaches a follower in milliseconds
//! rather than at the next poll. The poll stays: a notice can be missed (this connection
//! was down, or the rows were written by something that does not notify), and the table,
//! not the notice, says what was committed.
//!
//! The listening connection is one of its own, outside the pool: a pooled connection's
//! notices are not delivered to its user.

use std::future::poll_fn;
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

/// Counts the commit notices heard; followers wait for it to change.
pub type CommitNotices = watch::Receiver<u64>;

/// How long to wait before connecting again after the listening connection failed, at
/// first and at most (doubling in between, so an outage is not logged every 2 s).
const RECONNECT_AFTER: Duration = Duration::from_secs(2);
const RECONNECT_AFTER_MAX: Duration = Duration::from_secs(60);

/// Longest wait for the listening connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts listening for commit notices on a connection of its own, reconnecting for as
/// long as the returned receiver (or a clone of it) is held.
pub fn commit_notices(database_url: &str) -> CommitNotices {
    let (notices, receiver) = watch::channel(0u64);
    let url = database_url.to_owned();
    tokio::spawn(async move {
        let mut wait = RECONNECT_AFTER;
        loop {
            let started = tokio::time::Instant::now();
            match listen(&url, &notices).await {
                // Nobody follows any more.
                Ok(()) => return,
                Err(error) => {
                    // A connection that served a while starts the backoff over.
                    if started.elapsed() > RECONNECT_AFTER_MAX {
                        wait = RECONNECT_AFTER;
                    }
                    tracing::warn!(
                        error = %error,
                        retry_in = ?wait,
                        "not hearing commit notices; tails fall back to polling"
                    );
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RECONNECT_AFTER_MAX);
            if notices.is_closed() {
                return;
            }
        }
    });
    receiver
}

/// Listens until the connection ends (`Err`, saying why) or every receiver is gone (`Ok`).
async fn listen(url: &str, notices: &watch::Sender<u64>) -> Result<(), String> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // An idle listener sees nothing of a connection that silently died (a NAT timeout,
    // a failover): TCP keepalives find out within about a minute, so it reconnects.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3)
        .application_name("auditd listener");
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for the LISTEN below to complete, and for notices.
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    if messages_tx.send(message).is_err() {
                        return "nobody reads the notices".to_owned();
                    }
                }
                Some(Err(e)) => return e.to_string(),
                None => return "the listening connection closed".to_owned(),
            }
        }
    });
    if let Err(e) = client
        .batch_execute(&format!("LISTEN {}", audit_layer::COMMIT_CHANNEL))
        .await
    {
        driver.abort();
        return Err(e.to_string());
    }
    tracing::debug!(
        channel = audit_layer::COMMIT_CHANNEL,
        "listening for commit notices"
    );
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(AsyncMessage::Notification(_)) => notices.send_modify(|n| *n += 1),
                Some(_) => {}
                // The connection ended: the driver says why.
                None => break,
            },
            () = notices.closed() => {
                driver.abort();
                return Ok(());
            }
        }
    }
    drop(client);
    Err(driver
        .await
        .unwrap_or_else(|e| format!("the listening task failed: {e}")))
}

/// A follower's view of the commit notices: only those that come after it starts.
pub fn follow(notices: &Option<CommitNotices>) -> Option<CommitNotices> {
    notices.clone().map(|mut receiver| {
        receiver.mark_unchanged();
        receiver
    })
}

/// At least this long between two looks a follower makes because of notices: every commit
/// wakes every follower, and writers may commit many times a second.
pub const MIN_GAP: Duration = Duration::from_millis(50);

/// Resolves when a commit notice arrives after the last one `notices` saw, and at least
/// [`MIN_GAP`] after `looked`, the follower's last look; never, when there is no listener
/// (followers then rely on their poll alone).
pub async fn next_commit(notices: &mut Option<CommitNotices>, looked: tokio::time::Instant) {
    match notices {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                // The listener is gone for good: stop asking.
                *notices = None;
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(looked + MIN_GAP).await;
        }
        None => std::future::pending::<()>().await,
    }
}
