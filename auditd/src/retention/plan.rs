//! What retention would retire: the monthly partitions entirely older than the window,
//! never the current month or a later one, and none that a legal hold in force touches.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use tokio_postgres::GenericClient;

use super::holds::{active_holds, Hold};

/// How long records stay online: whole months, or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Calendar months (`13months`).
    Months(u32),
    /// Days of 24 hours (`400d`).
    Days(u32),
}

impl FromStr for Keep {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u32 = number.parse().map_err(|_| {
            format!("{text:?}: a window is a number and a unit, like 13months or 400d")
        })?;
        if n == 0 {
            return Err(
                "a window of zero would retire everything but the current month: give at least 1d"
                    .to_owned(),
            );
        }
        match unit {
            "months" | "month" | "mo" => Ok(Keep::Months(n)),
            "days" | "day" | "d" => Ok(Keep::Days(n)),
            _ => Err(format!(
                "{text:?}: the unit is months (13months) or days (400d)"
            )),
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Months(n) => write!(f, "{n}months"),
            Keep::Days(n) => write!(f, "{n}d"),
        }
    }
}

impl Keep {
    /// The oldest time kept at `now`: records created before it may go.
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Keep::Months(n) => now
                .checked_sub_months(Months::new(n))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            Keep::Days(n) => now
                .checked_sub_signed(chrono::Duration::days(i64::from(n)))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        }
    }
}

/// A monthly partition of `audit_logs` (or one detached by a retention run that did not
/// finish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its table's name, `audit_logs_YYYYmMM`.
    pub name: String,
    /// Its first instant.
    pub start: DateTime<Utc>,
    /// Its end (exclusive): the first instant of the next month.
    pub end: DateTime<Utc>,
    /// Whether it is still attached to `audit_logs`.
    pub attached: bool,
}

impl Partition {
    /// The partition named `name`, when it is one of the schema's monthly partitions.
    pub fn from_name(name: &str, attached: bool) -> Option<Self> {
        let rest = name.strip_prefix("audit_logs_")?;
        let (year, month) = rest.split_once('m')?;
        if year.len() != 4
            || month.len() != 2
            || !(year.bytes().chain(month.bytes())).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let first = NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)?;
        let next = first.checked_add_months(Months::new(1))?;
        Some(Partition {
            name: name.to_owned(),
            start: Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0)?),
            end: Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0)?),
            attached,
        })
    }

    /// The table's name as an SQL identifier, quoted (a name from
    /// [`from_name`](Self::from_name) has only letters, digits and `_`; any `"` would be
    /// doubled all the same).
    pub fn table(&self) -> String {
        format!("\"{}\"", self.name.replace('"', "\"\""))
    }
}

/// Why a partition stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Some of its records are within the window.
    InWindow,
    /// It is the current month's, or a later one's.
    Current,
    /// Legal holds in force touch it.
    Held(Vec<String>),
}

/// What retention does with one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The partition.
    pub partition: Partition,
    /// `None`: retire it; else why it stays.
    pub kept: Option<Kept>,
}

/// The comment a retention run leaves on a partition it detached, until it drops or
/// re-attaches it: only such a table, of all those not attached, is retention's to touch.
pub const DETACHED_BY_RETENTION: &str = "detached by auditd retention";

/// Every monthly partition, attached or left detached by an unfinished run, oldest first.
pub async fn partitions(
    client: &impl GenericClient,
) -> Result<Vec<Partition>, tokio_postgres::Error> {
    // Tables of the monthly names in audit_logs' schema, attached to it or not.
    let rows = client
        .query(
            "SELECT c.relname::text, i.inhrelid IS NOT NULL \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_class p ON p.oid = 'audit_logs'::regclass \
             LEFT JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = p.oid \
             WHERE c.relkind = 'r' AND c.relnamespace = p.relnamespace \
               AND c.relname ~ '^audit_logs_[0-9]{4}m[0-9]{2}$' \
               AND (i.inhrelid IS NOT NULL OR obj_description(c.oid, 'pg_class') = $1)",
            &[&DETACHED_BY_RETENTION],
        )
        .await?;
    let mut partitions: Vec<Partition> = rows
        .iter()
        .filter_map(|row| {
            let name: String = row.try_get(0).ok()?;
            Partition::from_name(&name, row.try_get(1).ok()?)
        })
        .collect();
    partitions.sort_by_key(|p| p.start);
    Ok(partitions)
}

/// What retention with `keep` does at `now` with each partition.
pub async fn plan(
    client: &impl GenericClient,
    keep: Keep,
    now: DateTime<Utc>,
) -> Result<Vec<Planned>, tokio_postgres::Error> {
    let cutoff = keep.cutoff(now);
    let this_month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    let holds = active_holds(client).await?;
    let mut planned = Vec::new();
    for partition in partitions(client).await? {
        let kept = if partition.end > this_month {
            Some(Kept::Current)
        } else if partition.end > cutoff {
            Some(Kept::InWindow)
        } else {
            let mut held = Vec::new();
            for hold in &holds {
                if touches(client, hold, &partition).await? {
                    held.push(hold.name.clone());
                }
            }
            (!held.is_empty()).then_some(Kept::Held(held))
        };
        planned.push(Planned { partition, kept });
    }
    Ok(planned)
}

/// Whether `hold` keeps `partition`: its range overlaps the month's, and, when it names
/// a user or a resource, the partition holds a record of theirs within the range.
pub async fn touches(
    client: &impl GenericClient,
    hold: &Hold,
    partition: &Partition,
) -> Result<bool, tokio_postgres::Error> {
    if hold.range_end <= partition.start || hold.range_start >= partition.end {
        return Ok(false);
    }
    if hold.username.is_none() && hold.resource_type.is_none() && hold.resource_id.is_none() {
        return Ok(true);
    }
    let row = client
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM ONLY {} WHERE created_at >= $1 AND created_at < $2 \
                   AND ($3::text IS NULL OR username = $3) \
                   AND ($4::text IS NULL OR resource_type = $4) \
                   AND ($5::text IS NULL OR resource_id = $5))",
                partition.table()
            ),
            &[
                &hold.range_start,
                &hold.range_end,
                &hold.username,
                &hold.resource_type,
                &hold.resource_id,
            ],
        )
        .await?;
    row.try_get(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_months_or_days() {
        assert_eq!("13months".parse(), Ok(Keep::Months(13)));
        assert_eq!("1month".parse(), Ok(Keep::Months(1)));
        assert_eq!("400d".parse(), Ok(Keep::Days(400)));
        assert_eq!("30days".parse(), Ok(Keep::Days(30)));
        for bad in ["", "13", "months", "0d", "13weeks", "-1d", "1.5months"] {
            assert!(bad.parse::<Keep>().is_err(), "{bad:?}");
        }
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 14, 0, 0).unwrap();
        assert_eq!(
            Keep::Months(13).cutoff(now),
            Utc.with_ymd_and_hms(2025, 11, 1, 14, 0, 0).unwrap()
        );
        assert_eq!(
            Keep::Days(1).cutoff(now),
            Utc.with_ymd_and_hms(2026, 11, 30, 14, 0, 0).unwrap()
        );
    }

    #[test]
    fn only_the_schemas_monthly_names_are_partitions() {
        let p = Partition::from_name("audit_logs_2025m09", true).unwrap();
        assert_eq!(p.start, Utc.with_ymd_and_hms(2025, 9, 1, 0, 0, 0).unwrap());
        assert_eq!(p.end, Utc.with_ymd_and_hms(2025, 10, 1, 0, 0, 0).unwrap());
        assert_eq!(p.table(), "\"audit_logs_2025m09\"");
        let december = Partition::from_name("audit_logs_2025m12", true).unwrap();
        assert_eq!(
            december.end,
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
        );
        for bad in [
            "audit_logs_default",
            "audit_logs_2025m13",
            "audit_logs_2025m9",
            "audit_logs_20x5m09",
            "audit_logs_2025m09\"; DROP TABLE audit_logs; --",
        ] {
            assert!(Partition::from_name(bad, true).is_none(), "{bad}");
        }
    }
}
