//! `GET /api/v1/overview`: what a person looks at before reading records, and what the
//! viewer draws above its table: the matching records counted over time by severity (a
//! histogram) and by the values people filter on (facets: event type, severity, user,
//! resource type), both aggregated in PostgreSQL for the same filters as a page.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Datelike, Duration, SecondsFormat, Utc};
use deadpool_postgres::{Object, Transaction};
use hyper::StatusCode;
use serde_json::{json, Map, Value};
use tokio_postgres::error::SqlState;

use audit_layer::Severity;

use crate::access::{Access, Answer};
use crate::counts::{self, CountTable, Plan};
use crate::http::{self, ApiError};
use crate::query::{limit, Filters, Params, Sql};
use crate::state::App;

/// Most buckets a histogram may ask for.
pub const MAX_BUCKETS: i64 = 500;
/// Buckets when the request does not say.
pub const DEFAULT_BUCKETS: i64 = 60;
/// Most values a facet may list.
pub const MAX_FACET_VALUES: i64 = 50;

/// The facets counted, as column names (each also a filter of the same name).
const FACETS: [&str; 4] = ["event_type", "severity", "username", "resource_type"];

/// Bucket widths a histogram uses, in seconds: round figures a person reads at a glance.
const WIDTHS: [i64; 17] = [
    1,
    5,
    10,
    30,
    60,
    5 * 60,
    10 * 60,
    15 * 60,
    30 * 60,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    2 * 86_400,
    7 * 86_400,
    30 * 86_400,
];

/// Answers `GET /api/v1/overview`; without `since` and `until`, the last 24 hours.
pub async fn overview(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let buckets = params
        .take_parsed("buckets", limit(MAX_BUCKETS))?
        .unwrap_or(DEFAULT_BUCKETS);
    let facet_values = params
        .take_parsed("facet_values", limit(MAX_FACET_VALUES))?
        .unwrap_or(10);
    let mut filters = app.filters(&mut params)?;
    params.finish()?;
    let (since, until) = filters.window();
    let until = until.unwrap_or_else(Utc::now);
    let since = since.unwrap_or(until - Duration::hours(24));
    // A window that ends before it starts matches nothing, as it does for a page.
    let until = until.max(since);
    filters.set_window(since, until);
    let width = bucket_width(since, until, buckets);
    // Buckets start on a multiple of their width (since the epoch), so that moving the
    // window does not move the bucket edges under the reader.
    // (In whole seconds: chrono's own truncation counts nanoseconds, which end in 2262.)
    // A start before year 1 would have no RFC 3339 form: there, the window's own start.
    let step = width.num_seconds();
    let start = DateTime::from_timestamp(since.timestamp().div_euclid(step) * step, 0)
        .filter(|aligned| aligned.year() >= 1)
        .or_else(|| DateTime::from_timestamp(since.timestamp(), 0))
        .ok_or_else(|| ApiError::bad_parameter("since", "out of range"))?;

    let mut client = app.client().await?;
    let mut tx = snapshot(&mut client).await?;
    let (below_tx, uncounted_window) = match tx
        .query_one(
            "SELECT counted_below_tx, counted_at IS NULL OR EXISTS (SELECT 1 FROM audit_counts_stale \
                 WHERE range_start < $2 AND range_end > $1) \
             FROM audit_counts_state \
             WHERE NOT EXISTS (SELECT FROM audit_counts_by_kind WHERE false) \
               AND NOT EXISTS (SELECT FROM audit_counts_by_user WHERE false)",
            &[&since, &until],
        )
        .await
    {
        Ok(state) => (state.get(0), state.get(1)),
        // A role granted audit_logs alone: exact all the same, from audit_logs.
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            if !WARNED_UNREADABLE.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    error = %e,
                    "the overview cannot read its counts (grant SELECT on the audit_counts \
                     tables, see the README's roles); counting from audit_logs instead"
                );
            }
            drop(tx);
            tx = snapshot(&mut client).await?;
            (0, true)
        }
        Err(e) => return Err(ApiError::database(&e)),
    };
    // Nothing counted yet, or a month detached or attached since it was counted:
    // everything from audit_logs, in two passes (the counted plan would make one per facet).
    let counted_columns = filters.counted_columns().filter(|_| !uncounted_window);
    let unbounded = filters.without_window();
    let plan_for = |group: &'static str, width: Option<i64>| -> (Option<CountTable>, Plan) {
        let table = counted_columns.as_ref().and_then(|columns| {
            let mut wanted = columns.clone();
            wanted.push(group);
            counts::table_for(&wanted)
        });
        match table {
            Some(table) => {
                // Histogram buckets hold whole count buckets, or none do.
                let levels: Vec<i64> = table
                    .levels
                    .iter()
                    .copied()
                    .filter(|level| width.is_none_or(|w| w % level == 0))
                    .collect();
                (Some(table), Plan::new(since, until, &levels))
            }
            None => (None, Plan::raw(since, until)),
        }
    };

    let (histogram_table, histogram_plan) = plan_for("severity", Some(step));
    let mut histogram_sql = Sql::new("SELECT date_bin(");
    let width_param = histogram_sql.bind(format!("{step} seconds"));
    let origin = histogram_sql.bind(start);
    histogram_sql.push(&format!(
        "{width_param}::text::interval, at, {origin}), value, sum(n)::bigint FROM ("
    ));
    push_rows(
        &mut histogram_sql,
        "severity",
        &unbounded,
        histogram_table,
        &histogram_plan,
        below_tx,
    );
    histogram_sql.push(") r GROUP BY 1, 2");

    // Facets the counts answer: one query each. The others: one pass over the records
    // for all of them.
    let mut facet_sqls = Vec::new();
    let mut uncounted = Vec::new();
    for (i, facet) in FACETS.iter().enumerate() {
        match plan_for(facet, None) {
            (Some(table), plan) => {
                let mut sql = Sql::new(&format!("SELECT {i}, value, sum(n)::bigint FROM ("));
                push_rows(&mut sql, facet, &unbounded, Some(table), &plan, below_tx);
                let rank = sql.bind(facet_values);
                sql.push(&format!(") r GROUP BY 2 ORDER BY 3 DESC, 2 LIMIT {rank}"));
                facet_sqls.push(sql);
            }
            (None, _) => uncounted.push((i, *facet)),
        }
    }
    if !uncounted.is_empty() {
        facet_sqls.push(facets_from_records(&uncounted, &filters, facet_values));
    }

    // All on one connection, pipelined.
    let histogram_params = histogram_sql.params();
    let facet_params: Vec<_> = facet_sqls.iter().map(|sql| sql.params()).collect();
    let (histogram_rows, facet_answers) = tokio::try_join!(
        tx.query(&histogram_sql.text, &histogram_params),
        futures_util::future::try_join_all(
            facet_sqls
                .iter()
                .zip(&facet_params)
                .map(|(sql, params)| tx.query(&sql.text, params))
        ),
    )
    .map_err(|e| ApiError::database(&e))?;
    tx.commit().await.map_err(|e| ApiError::database(&e))?;
    let facet_rows: Vec<_> = facet_answers.into_iter().flatten().collect();

    // Up to the last bucket that holds `until`'s instant, sub-second part included.
    let span = until - start;
    let span_seconds = span.num_seconds() + i64::from(span.subsec_nanos() > 0);
    let count = (span_seconds + width.num_seconds() - 1) / width.num_seconds();
    let mut histogram: Vec<Map<String, Value>> = (0..count.max(1))
        .map(|i| {
            let mut bucket = Map::new();
            bucket.insert("start".into(), json!(rfc3339(start + width * i as i32)));
            for severity in Severity::ALL {
                bucket.insert(severity.as_str().into(), json!(0));
            }
            bucket
        })
        .collect();
    let mut total = 0i64;
    for row in &histogram_rows {
        let bucket: DateTime<Utc> = row.get(0);
        let severity: String = row.get(1);
        let n: i64 = row.get(2);
        total += n;
        let index = (bucket - start).num_seconds() / width.num_seconds();
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| histogram.get_mut(i))
        {
            slot.insert(severity, json!(n));
        }
    }
    let mut facets: Map<String, Value> = FACETS
        .iter()
        .map(|f| ((*f).to_owned(), json!([])))
        .collect();
    for row in &facet_rows {
        let facet: i32 = row.get(0);
        let value: Option<String> = row.get(1);
        let n: i64 = row.get(2);
        let name = usize::try_from(facet).ok().and_then(|i| FACETS.get(i));
        if let Some(Value::Array(values)) = name.and_then(|name| facets.get_mut(*name)) {
            values.push(json!({ "value": value, "count": n }));
        }
    }
    let body = json!({
        "since": rfc3339(since),
        "until": rfc3339(until),
        "bucket_seconds": width.num_seconds(),
        "total": total,
        "histogram": histogram,
        "facets": facets,
    });
    Ok(Answer {
        response: http::json(StatusCode::OK, &body),
        access: Some(Access {
            filters: filters.describe(),
            rows: 0,
        }),
    })
}

/// Whether the overview has said it cannot read its counts (once is enough).
static WARNED_UNREADABLE: AtomicBool = AtomicBool::new(false);

/// A read-only transaction that sees one snapshot, so that no row is counted twice or
/// missed when a catch-up commits between the horizon and the counts.
async fn snapshot(client: &mut Object) -> Result<Transaction<'_>, ApiError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| ApiError::database(&e))?;
    // Before the snapshot is taken: a month detached or attached (whose stale mark commits
    // with it) is then either wholly before this overview or waits for it.
    tx.batch_execute("LOCK TABLE audit_logs IN ACCESS SHARE MODE")
        .await
        .map_err(|e| ApiError::database(&e))?;
    Ok(tx)
}

/// Appends the rows `(at, value, n)` that count the records matching `filters` (without
/// its window) in the window `plan` splits: buckets of `table` where it covers them, and
/// the records themselves at its ends and above the counts' horizon.
fn push_rows(
    sql: &mut Sql,
    column: &str,
    filters: &Filters,
    table: Option<CountTable>,
    plan: &Plan,
    below_tx: i64,
) {
    let mut arms = 0;
    let mut arm = |sql: &mut Sql| {
        if arms > 0 {
            sql.push(" UNION ALL ");
        }
        arms += 1;
    };
    if let Some(table) = table {
        for counted in &plan.counted {
            arm(sql);
            let (from, to) = (sql.bind(counted.from), sql.bind(counted.to));
            sql.push(&format!(
                "SELECT bucket AS at, {column}::text AS value, n FROM {} \
                 WHERE bucket_seconds = {} AND bucket >= {from} AND bucket < {to}",
                table.table, counted.level
            ));
            filters.push_conditions(sql);
        }
    }
    let mut from_records = |sql: &mut Sql, from: DateTime<Utc>, to: DateTime<Utc>, above: bool| {
        arm(sql);
        let (from, to) = (sql.bind(from), sql.bind(to));
        sql.push(&format!(
            "SELECT created_at AS at, {column}::text AS value, 1::bigint AS n FROM audit_logs \
             WHERE created_at >= {from} AND created_at < {to}"
        ));
        if above {
            let horizon = sql.bind(below_tx);
            sql.push(&format!(" AND tx_id >= {horizon}"));
        }
        filters.push_conditions(sql);
    };
    for (from, to) in &plan.raw {
        from_records(sql, *from, *to, false);
    }
    if table.is_some() {
        if let Some((from, to)) = plan.covered() {
            from_records(sql, from, to, true);
        }
    }
    if arms == 0 {
        // An empty window: no rows, with the columns' types.
        sql.push("SELECT now() AS at, NULL::text AS value, 0::bigint AS n WHERE false");
    }
}

/// One pass over the records for the `facets` (index, column) the counts cannot answer.
fn facets_from_records(facets: &[(usize, &str)], filters: &Filters, facet_values: i64) -> Sql {
    let mut sql = Sql::new("SELECT facet, value, n FROM (SELECT CASE");
    for (i, facet) in facets {
        // `grouping(c)` is 0 in the rows grouped by `c`.
        sql.push(&format!(" WHEN grouping({facet}) = 0 THEN {i}"));
    }
    sql.push(" END AS facet, CASE");
    for (_, facet) in facets {
        sql.push(&format!(" WHEN grouping({facet}) = 0 THEN {facet}::text"));
    }
    let columns: Vec<&str> = facets.iter().map(|(_, f)| *f).collect();
    sql.push(" END AS value, count(*) AS n, row_number() OVER (PARTITION BY grouping(");
    sql.push(&columns.join(", "));
    // Ties broken by the value (in each grouping set only its own column is not null).
    sql.push(") ORDER BY count(*) DESC, coalesce(");
    sql.push(&each(&columns, |f| format!("{f}::text")));
    sql.push(")) AS rank FROM audit_logs WHERE true");
    filters.push_conditions(&mut sql);
    sql.push(" GROUP BY GROUPING SETS (");
    sql.push(&each(&columns, |f| format!("({f})")));
    let rank = sql.bind(facet_values);
    sql.push(&format!(
        ")) f WHERE rank <= {rank} ORDER BY facet, n DESC, value"
    ));
    sql
}

/// `columns`, each written by `write`, comma-separated.
fn each(columns: &[&str], write: impl Fn(&str) -> String) -> String {
    columns
        .iter()
        .map(|c| write(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The narrowest round width whose buckets (aligned on multiples of it) cover the window
/// in at most `buckets`.
fn bucket_width(since: DateTime<Utc>, until: DateTime<Utc>, buckets: i64) -> Duration {
    // Whole seconds, `until` rounded up: its last instant must be in a bucket.
    let until_seconds = until.timestamp() + i64::from(until.timestamp_subsec_nanos() > 0);
    let (from, to) = (since.timestamp(), until_seconds.max(since.timestamp() + 1));
    let needed = |width: i64| {
        let start = from.div_euclid(width) * width;
        (to - start + width - 1) / width
    };
    let seconds = WIDTHS
        .iter()
        .copied()
        .find(|w| needed(*w) <= buckets)
        .unwrap_or_else(|| ((to - from) / (buckets - 1).max(1) + 1).max(WIDTHS[WIDTHS.len() - 1]));
    Duration::seconds(seconds)
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_width_is_the_narrowest_round_one_that_fits() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        assert_eq!(bucket_width(at(0), at(86_400), 60), Duration::minutes(30));
        assert_eq!(
            bucket_width(at(0), at(14 * 86_400), 100),
            Duration::hours(6)
        );
        assert_eq!(bucket_width(at(0), at(30), 60), Duration::seconds(1));
        // Beyond the widest round width: wider still, never more buckets than asked.
        let years = bucket_width(at(0), at(20 * 365 * 86_400), 10);
        assert!(years.num_seconds() * 10 >= 20 * 365 * 86_400);
    }
}
