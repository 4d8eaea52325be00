//! Completeness of each writer's stream: the seq numbers missing between its committed
//! batches, beside the drops the writer announced.
//!
//! Every record takes the next seq of its stream when it is emitted, and each proven
//! batch's ledger row keeps its seq range, so a run of seqs between two committed
//! batches is records that never reached the table. Some of those are accounted for: the
//! writer announces its own drops (a full queue) in `audit_dropped` records, keeps records
//! PostgreSQL refused in `audit_logs_rejected` with their seq, and names the seqs of a
//! duplicate or refused submission in its `audit_duplicate_suppressed` and
//! `audit_submission_refused` notices. Only the writer's own notices count: a record
//! that came through auditd's ingest (it carries `_sent_by`) cannot explain a loss away.
//! What none of those explain was lost after
//! the emitting thread let go: a writer's process killed while an earlier batch was
//! still in flight, or a failover to a standby that had not received a commit
//! (asynchronous replication), or batches removed with their ledger rows. Records
//! missing at a stream's end, after its last committed batch, leave no run to see.
//!
//! The ledger is read, not the records, so this costs a scan of the ledger's seq ranges.

use std::collections::BTreeMap;
use std::fmt;

use tokio_postgres::Client;

/// The missing seq numbers of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGaps {
    /// The writer's stream.
    pub stream_id: i64,
    /// The runs of missing seqs, first and last of each, in order.
    pub runs: Vec<(i64, i64)>,
    /// Records the stream's `audit_dropped` records announce as dropped.
    pub announced_dropped: i64,
    /// Missing seqs that are accounted for otherwise: records kept in
    /// `audit_logs_rejected`, and seqs the writer's notices say it left unused.
    pub accounted: i64,
}

impl StreamGaps {
    /// Seqs missing in all.
    pub fn missing(&self) -> i64 {
        self.runs.iter().map(|(first, last)| last - first + 1).sum()
    }

    /// Missing seqs the announced drops do not account for: records lost after the
    /// writer took them.
    pub fn unexplained(&self) -> i64 {
        (self.missing() - self.announced_dropped - self.accounted).max(0)
    }
}

impl fmt::Display for StreamGaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .runs
            .iter()
            .take(5)
            .map(|(first, last)| {
                if first == last {
                    first.to_string()
                } else {
                    format!("{first}-{last}")
                }
            })
            .collect();
        let more = if self.runs.len() > 5 {
            format!(" and {} more run(s)", self.runs.len() - 5)
        } else {
            String::new()
        };
        write!(
            f,
            "stream {}: {} seq(s) missing ({}{more}), {} announced dropped, {} rejected or \
             left unused, {} unexplained",
            self.stream_id,
            self.missing(),
            shown.join(", "),
            self.announced_dropped,
            self.accounted,
            self.unexplained()
        )
    }
}

/// The streams with seqs missing between their committed batches; empty when every
/// stream runs without a gap.
///
/// ```no_run
/// # async fn run(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
/// for stream in audit_layer::integrity::stream_gaps(client).await? {
///     if stream.unexplained() > 0 {
///         eprintln!("records lost: {stream}");
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn stream_gaps(client: &Client) -> Result<Vec<StreamGaps>, tokio_postgres::Error> {
    let runs = client
        .query(
            "WITH runs AS ( \
               SELECT stream_id, previous_last + 1 AS first, first_seq - 1 AS last \
               FROM (SELECT stream_id, first_seq, \
                            max(last_seq) OVER (PARTITION BY stream_id ORDER BY first_seq \
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) \
                              AS previous_last \
                     FROM audit_writer_batches WHERE first_seq IS NOT NULL) ranges \
               WHERE first_seq > previous_last + 1) \
             SELECT r.stream_id, r.first, r.last, \
                    (SELECT count(*) FROM audit_logs_rejected j \
                      WHERE j.stream_id = r.stream_id AND j.seq BETWEEN r.first AND r.last) \
                    + (SELECT coalesce(sum(least(r.last, n.last_seq) - greatest(r.first, n.first_seq) + 1), 0)::bigint \
                       FROM (SELECT (metadata->>'first_seq')::numeric::bigint AS first_seq, \
                                    (metadata->>'last_seq')::numeric::bigint AS last_seq \
                             FROM audit_logs \
                             WHERE stream_id = r.stream_id \
                               AND event_type IN ('audit_duplicate_suppressed', 'audit_submission_refused') \
                               AND NOT metadata ? '_sent_by' \
                               AND jsonb_typeof(metadata->'first_seq') = 'number' \
                               AND jsonb_typeof(metadata->'last_seq') = 'number') n \
                       WHERE n.first_seq <= r.last AND n.last_seq >= r.first) \
             FROM runs r ORDER BY r.stream_id, r.first",
            &[],
        )
        .await?;
    let mut streams: BTreeMap<i64, StreamGaps> = BTreeMap::new();
    for row in runs {
        let stream_id: i64 = row.get(0);
        let stream = streams.entry(stream_id).or_insert_with(|| StreamGaps {
            stream_id,
            runs: Vec::new(),
            announced_dropped: 0,
            accounted: 0,
        });
        stream.runs.push((row.get(1), row.get(2)));
        stream.accounted += row.get::<_, i64>(3);
    }
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = streams.keys().copied().collect();
    let dropped = client
        .query(
            "SELECT stream_id, \
                    coalesce(sum(CASE WHEN jsonb_typeof(metadata->'dropped') = 'number' \
                                      THEN (metadata->>'dropped')::numeric END), 0)::bigint \
             FROM audit_logs WHERE event_type = 'audit_dropped' AND stream_id = ANY($1) \
               AND NOT metadata ? '_sent_by' \
             GROUP BY stream_id",
            &[&ids],
        )
        .await?;
    for row in dropped {
        if let Some(stream) = streams.get_mut(&row.get::<_, i64>(0)) {
            stream.announced_dropped = row.get(1);
        }
    }
    Ok(streams.into_values().collect())
}
