//! Counts kept ahead for the overview (migration 0010): the task that keeps them, while
//! auditd serves, and the plan that splits a window into what they answer and what
//! `audit_logs` must count itself.
//!
//! The counts are of rows below a transaction horizon, in hourly and daily buckets; a
//! window's answer is the buckets it covers whole, plus the rows of its ragged ends and
//! the rows above the horizon, counted from `audit_logs`. So the answer is exact however
//! far behind the counts are, and only slower when they are.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// A table of counts and what it counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountTable {
    /// Its name.
    pub table: &'static str,
    /// The record columns it keeps (each an equality filter and a facet).
    pub columns: &'static [&'static str],
    /// Its bucket widths in seconds, widest first.
    pub levels: &'static [i64],
}

/// Counts by severity, event type and resource type, hourly and daily.
pub const BY_KIND: CountTable = CountTable {
    table: "audit_counts_by_kind",
    columns: &["severity", "event_type", "resource_type"],
    levels: &[86_400, 3600],
};

/// Counts by user and severity, hourly and daily.
pub const BY_USER: CountTable = CountTable {
    table: "audit_counts_by_user",
    columns: &["username", "severity"],
    levels: &[86_400, 3600],
};

/// The first table that keeps every one of `columns`.
pub fn table_for(columns: &[&str]) -> Option<CountTable> {
    [BY_KIND, BY_USER]
        .into_iter()
        .find(|t| columns.iter().all(|c| t.columns.contains(c)))
}

/// A stretch of time answered by buckets of one width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// The bucket width, in seconds.
    pub level: i64,
    /// The first bucket's start.
    pub from: DateTime<Utc>,
    /// The end of the last bucket.
    pub to: DateTime<Utc>,
}

/// How a window `[since, until)` is counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Stretches answered by counts, in time order, adjacent.
    pub counted: Vec<Counted>,
    /// Stretches counted from `audit_logs` (the ends no bucket covers whole).
    pub raw: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Plan {
    /// Splits `[since, until)` into the widest whole buckets of `levels` (widest first),
    /// then the narrower ones, leaving the rest to `audit_logs`.
    pub fn new(since: DateTime<Utc>, until: DateTime<Utc>, levels: &[i64]) -> Plan {
        let mut plan = Plan::default();
        plan.split(since, until, levels);
        plan
    }

    /// Everything from `audit_logs`.
    pub fn raw(since: DateTime<Utc>, until: DateTime<Utc>) -> Plan {
        Plan::new(since, until, &[])
    }

    /// The stretch the counts cover, where `audit_logs` still counts the rows above the
    /// horizon.
    pub fn covered(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        Some((self.counted.first()?.from, self.counted.last()?.to))
    }

    fn split(&mut self, since: DateTime<Utc>, until: DateTime<Utc>, levels: &[i64]) {
        if since >= until {
            return;
        }
        let Some((&level, narrower)) = levels.split_first() else {
            self.raw.push((since, until));
            return;
        };
        match (ceil(since, level), floor(until, level)) {
            (Some(from), Some(to)) if from < to => {
                self.split(since, from, narrower);
                self.counted.push(Counted { level, from, to });
                self.split(to, until, narrower);
            }
            _ => self.split(since, until, narrower),
        }
    }
}

/// The first multiple of `level` seconds (since the epoch) at or after `time`.
fn ceil(time: DateTime<Utc>, level: i64) -> Option<DateTime<Utc>> {
    let seconds = time
        .timestamp()
        .checked_add(i64::from(time.timestamp_subsec_nanos() > 0))?;
    let aligned = seconds.div_euclid(level).checked_mul(level)?;
    let aligned = if aligned < seconds {
        aligned.checked_add(level)?
    } else {
        aligned
    };
    DateTime::from_timestamp(aligned, 0)
}

/// The last multiple of `level` seconds (since the epoch) at or before `time`.
fn floor(time: DateTime<Utc>, level: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.timestamp().div_euclid(level).checked_mul(level)?, 0)
}

/// Brings the counts up to date now and then every `interval`, until the task is dropped.
/// Failures (a role that may not write them, a database restart) are reported and tried
/// again next time; until they succeed the overview counts more from `audit_logs`.
pub async fn keep_counting(pool: Pool, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A failure is reported when it starts or changes, not at every tick.
    let mut failing: Option<String> = None;
    loop {
        ticker.tick().await;
        let attempt = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            let row = client
                .query_one("SELECT audit_counts_catch_up()", &[])
                .await
                .map_err(|e| e.to_string())?;
            row.try_get::<_, i64>(0).map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(counted) => {
                if failing.take().is_some() {
                    tracing::info!("counting records for the overview works again");
                }
                tracing::debug!(counted, "records counted for the overview");
            }
            Err(e) if failing.as_deref() == Some(e.as_str()) => {
                tracing::debug!(error = %e, "counting records for the overview still fails");
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "counting records for the overview failed (it needs SELECT on audit_logs \
                     and SELECT, INSERT, UPDATE, DELETE on the audit_counts tables; disable it \
                     with --counts-interval 0); the overview stays exact, counting from \
                     audit_logs"
                );
                failing = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_window_is_whole_days_then_whole_hours_then_its_ragged_ends() {
        let plan = Plan::new(
            at("2026-11-17T23:25:10.5Z"),
            at("2026-12-01T23:25:00Z"),
            BY_KIND.levels,
        );
        assert_eq!(
            plan.counted,
            vec![
                Counted {
                    level: 86_400,
                    from: at("2026-11-18T00:00:00Z"),
                    to: at("2026-12-01T00:00:00Z")
                },
                Counted {
                    level: 3600,
                    from: at("2026-12-01T00:00:00Z"),
                    to: at("2026-12-01T23:00:00Z")
                },
            ]
        );
        assert_eq!(
            plan.raw,
            vec![
                (at("2026-11-17T23:25:10.5Z"), at("2026-11-18T00:00:00Z")),
                (at("2026-12-01T23:00:00Z"), at("2026-12-01T23:25:00Z")),
            ]
        );
        assert_eq!(
            plan.covered(),
            Some((at("2026-11-18T00:00:00Z"), at("2026-12-01T23:00:00Z")))
        );
    }

    #[test]
    fn a_window_inside_one_bucket_is_counted_from_the_records() {
        let (since, until) = (at("2026-12-01T10:05:00Z"), at("2026-12-01T10:55:00Z"));
        let plan = Plan::new(since, until, BY_KIND.levels);
        assert_eq!(plan.counted, vec![]);
        assert_eq!(plan.raw, vec![(since, until)]);
        assert_eq!(plan.covered(), None);
    }

    #[test]
    fn every_instant_of_the_window_is_in_exactly_one_part() {
        let since = at("2026-10-30T13:59:59.999Z");
        let until = at("2026-11-04T00:00:01Z");
        let plan = Plan::new(since, until, BY_KIND.levels);
        let mut parts: Vec<(DateTime<Utc>, DateTime<Utc>)> = plan
            .counted
            .iter()
            .map(|c| (c.from, c.to))
            .chain(plan.raw.iter().copied())
            .collect();
        parts.sort();
        assert_eq!(parts.first().unwrap().0, since);
        assert_eq!(parts.last().unwrap().1, until);
        for pair in parts.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "parts must touch: {parts:?}");
        }
        for c in &plan.counted {
            assert_eq!(c.from.timestamp() % c.level, 0);
            assert_eq!(c.to.timestamp() % c.level, 0);
        }
    }

    #[test]
    fn the_extreme_ends_of_time_fall_back_to_the_records() {
        let since = DateTime::<Utc>::MIN_UTC;
        let until = DateTime::<Utc>::MAX_UTC;
        let plan = Plan::new(since, until, BY_KIND.levels);
        // Whatever it counts, it covers the whole window.
        let total: i64 = plan
            .counted
            .iter()
            .map(|c| (c.to - c.from).num_seconds())
            .chain(plan.raw.iter().map(|(a, b)| (*b - *a).num_seconds()))
            .sum();
        assert_eq!(total, (until - since).num_seconds());
    }

    #[test]
    fn a_table_is_chosen_only_when_it_keeps_every_column_asked() {
        assert_eq!(table_for(&["severity", "event_type"]), Some(BY_KIND));
        assert_eq!(table_for(&["username", "severity"]), Some(BY_USER));
        assert_eq!(table_for(&["username", "event_type"]), None);
    }
}
