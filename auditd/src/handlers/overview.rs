//! `GET /api/v1/overview`: what a person looks at before reading records, and what the
//! viewer draws above its table: the matching records counted over time by severity (a
//! histogram) and by the values people filter on (facets: event type, severity, user,
//! resource type), both aggregated in PostgreSQL for the same filters as a page.

use chrono::{DateTime, Datelike, Duration, SecondsFormat, Utc};
use hyper::StatusCode;
use serde_json::{json, Map, Value};

use audit_layer::Severity;

use crate::access::{Access, Answer};
use crate::http::{self, ApiError};
use crate::query::{limit, Params, Sql};
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

    let mut histogram_sql = Sql::new("SELECT date_bin(");
    let width_param = histogram_sql.bind(format!("{} seconds", width.num_seconds()));
    let origin = histogram_sql.bind(start);
    histogram_sql.push(&format!(
        "{width_param}::text::interval, created_at, {origin}), severity::text, count(*) \
         FROM audit_logs WHERE true"
    ));
    filters.push_conditions(&mut histogram_sql);
    histogram_sql.push(" GROUP BY 1, 2");

    let mut facets_sql = Sql::new("SELECT facet, value, n FROM (SELECT CASE");
    for (i, facet) in FACETS.iter().enumerate() {
        // `grouping(c)` is 0 in the rows grouped by `c`.
        facets_sql.push(&format!(" WHEN grouping({facet}) = 0 THEN {i}"));
    }
    facets_sql.push(" END AS facet, CASE");
    for facet in FACETS {
        facets_sql.push(&format!(" WHEN grouping({facet}) = 0 THEN {facet}::text"));
    }
    facets_sql.push(" END AS value, count(*) AS n, row_number() OVER (PARTITION BY grouping(");
    facets_sql.push(&FACETS.join(", "));
    // Ties broken by the value (in each grouping set only its own column is not null).
    facets_sql.push(") ORDER BY count(*) DESC, coalesce(");
    facets_sql.push(
        &FACETS
            .iter()
            .map(|f| format!("{f}::text"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    facets_sql.push(")) AS rank FROM audit_logs WHERE true");
    filters.push_conditions(&mut facets_sql);
    facets_sql.push(" GROUP BY GROUPING SETS (");
    facets_sql.push(
        &FACETS
            .iter()
            .map(|f| format!("({f})"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let rank = facets_sql.bind(facet_values);
    facets_sql.push(&format!(
        ")) f WHERE rank <= {rank} ORDER BY facet, n DESC, value"
    ));

    let client = app.client().await?;
    // Both on one connection, pipelined.
    let (histogram_params, facet_params) = (histogram_sql.params(), facets_sql.params());
    let (histogram_rows, facet_rows) = tokio::try_join!(
        client.query(&histogram_sql.text, &histogram_params),
        client.query(&facets_sql.text, &facet_params),
    )
    .map_err(|e| ApiError::database(&e))?;

    let count = ((until - start).num_seconds() + width.num_seconds() - 1) / width.num_seconds();
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

/// The narrowest round width whose buckets (aligned on multiples of it) cover the window
/// in at most `buckets`.
fn bucket_width(since: DateTime<Utc>, until: DateTime<Utc>, buckets: i64) -> Duration {
    let (from, to) = (
        since.timestamp(),
        until.timestamp().max(since.timestamp() + 1),
    );
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
