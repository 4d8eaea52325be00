//! The filters every reading route shares, turned into parameterised SQL.
//!
//! No value is ever spliced into SQL text: each becomes a `$n` parameter. The conditions
//! are shaped so that the indexes of migration 0001 serve them (equality on the leading
//! column, then `created_at`, `id`).

use std::net::IpAddr;

use audit_layer::Severity;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::params::Params;
use super::sql::Sql;
use super::text_search::{like_containing, MessageSample};
use crate::http::ApiError;

/// Which rows a request asks for.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    username: Option<String>,
    user_id: Option<i64>,
    event_types: Vec<String>,
    severities: Vec<Severity>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    resource_name: Option<String>,
    ip_address: Option<IpFilter>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    text: Option<String>,
    /// What the trigram index is searched for instead of all of `text`
    /// ([`super::text_search`]); empty: `text` itself.
    text_index_patterns: Vec<String>,
    metadata: Vec<(String, Value)>,
    /// An OpenTelemetry trace: records carry it in metadata (audit-layer's `opentelemetry`
    /// feature), found through the partial index of migration 0009.
    trace_id: Option<String>,
    /// The filters contradict each other (see `min_severity`).
    matches_nothing: bool,
    /// `min_severity` as given (`severities` holds its effect).
    min_severity: Option<Severity>,
}

#[derive(Debug, Clone)]
enum IpFilter {
    Address(IpAddr),
    Network(String),
}

/// The most levels a `meta.<path>` filter may reach into metadata.
const MAX_META_DEPTH: usize = 16;

impl Filters {
    /// Takes the filter parameters out of `params`.
    pub fn parse(params: &mut Params) -> Result<Filters, ApiError> {
        let mut f = Filters {
            username: params.take("username")?,
            user_id: params.take_parsed("user_id", |v| {
                v.parse::<i64>()
                    .map_err(|_| "must be an integer".to_owned())
            })?,
            event_types: params.take_list("event_type"),
            resource_type: params.take("resource_type")?,
            resource_id: params.take("resource_id")?,
            resource_name: params.take("resource_name")?,
            ip_address: params.take_parsed("ip_address", parse_ip_filter)?,
            since: params.take_parsed("since", parse_time)?,
            until: params.take_parsed("until", parse_time)?,
            text: params.take("q")?.filter(|q| !q.is_empty()),
            ..Filters::default()
        };
        for name in params.take_list_exact("severity") {
            f.severities
                .push(severity_named(&name).map_err(|e| ApiError::bad_parameter("severity", e))?);
        }
        if let Some(min) = params.take_parsed("min_severity", severity_named)? {
            let at_least: Vec<Severity> = Severity::ALL.into_iter().filter(|s| *s >= min).collect();
            f.severities = if f.severities.is_empty() {
                at_least
            } else {
                f.severities.into_iter().filter(|s| *s >= min).collect()
            };
            // `severity` and `min_severity` that exclude each other select nothing, as an
            // inverted window (`since` after `until`) does: a valid question whose answer is
            // no rows, not an error.
            f.matches_nothing = f.severities.is_empty();
            f.min_severity = Some(min);
        }
        f.trace_id = params.take_parsed("trace_id", parse_trace_id)?;
        for (name, value) in params.take_prefixed("meta.") {
            let path = &name["meta.".len()..];
            if path.split('.').count() > MAX_META_DEPTH {
                // Each level nests the JSON the filter is matched with: a deep path would
                // be work (and recursion) out of all proportion to any real metadata.
                return Err(ApiError::bad_parameter(
                    &name,
                    format!("reaches deeper than {MAX_META_DEPTH} levels"),
                ));
            }
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(ApiError::bad_parameter(
                    &name,
                    "needs a key, like meta.site=fra1",
                ));
            }
            f.metadata.push((path.to_owned(), Value::String(value)));
        }
        Ok(f)
    }

    /// Searches the trigram index only for the parts of `q` that are rare in `sample`
    /// (see [`super::text_search`]); the rows found are the same. Returns whether the
    /// search was narrowed.
    pub fn narrow_text_search(&mut self, sample: &MessageSample) -> bool {
        if let Some(text) = &self.text {
            self.text_index_patterns = sample.index_patterns(text);
        }
        !self.text_index_patterns.is_empty()
    }

    /// A filter on the time window only (for stats, which default it).
    pub fn window(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        (self.since, self.until)
    }

    /// Sets both ends of the time window (stats fill in a default one).
    pub fn set_window(&mut self, since: DateTime<Utc>, until: DateTime<Utc>) {
        self.since = Some(since);
        self.until = Some(until);
    }

    /// The columns filtered on, when every filter but the window is an equality on a
    /// column the overview's counts keep (migration 0010): `username`, `event_type`,
    /// `severity`, `resource_type`. `None` when any other filter is set.
    pub fn counted_columns(&self) -> Option<Vec<&'static str>> {
        // Spelled out whole, so that a new filter cannot be forgotten here.
        let Filters {
            username,
            user_id,
            event_types,
            severities,
            resource_type,
            resource_id,
            resource_name,
            ip_address,
            since: _,
            until: _,
            text,
            text_index_patterns: _,
            metadata,
            trace_id,
            matches_nothing: _,
            min_severity: _,
        } = self;
        if user_id.is_some()
            || resource_id.is_some()
            || resource_name.is_some()
            || ip_address.is_some()
            || text.is_some()
            || !metadata.is_empty()
            || trace_id.is_some()
        {
            return None;
        }
        let mut columns = Vec::new();
        if username.is_some() {
            columns.push("username");
        }
        if !event_types.is_empty() {
            columns.push("event_type");
        }
        if !severities.is_empty() {
            columns.push("severity");
        }
        if resource_type.is_some() {
            columns.push("resource_type");
        }
        Some(columns)
    }

    /// The same filters without the time window (for a caller that bounds each part of
    /// its window itself).
    pub fn without_window(&self) -> Filters {
        Filters {
            since: None,
            until: None,
            ..self.clone()
        }
    }

    /// Appends ` AND ...` for every filter set.
    pub fn push_conditions(&self, sql: &mut Sql) {
        if self.matches_nothing {
            sql.push(" AND false");
        }
        let equal = |sql: &mut Sql, column: &str, value: &Option<String>| {
            if let Some(v) = value {
                let p = sql.bind(v.clone());
                sql.push(&format!(" AND {column} = {p}"));
            }
        };
        equal(sql, "username", &self.username);
        equal(sql, "resource_type", &self.resource_type);
        equal(sql, "resource_id", &self.resource_id);
        equal(sql, "resource_name", &self.resource_name);
        if let Some(id) = self.user_id {
            let p = sql.bind(id);
            sql.push(&format!(" AND user_id = {p}"));
        }
        if !self.event_types.is_empty() {
            push_one_of(sql, "event_type", self.event_types.clone());
        }
        if !self.severities.is_empty() {
            let names: Vec<String> = self
                .severities
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect();
            push_one_of(sql, "severity", names);
        }
        match &self.ip_address {
            Some(IpFilter::Address(ip)) => {
                let p = sql.bind(*ip);
                sql.push(&format!(" AND ip_address = {p}"));
            }
            Some(IpFilter::Network(net)) => {
                let p = sql.bind(net.clone());
                sql.push(&format!(" AND ip_address <<= {p}::text::inet"));
            }
            None => {}
        }
        if let Some(since) = self.since {
            let p = sql.bind(since);
            sql.push(&format!(" AND created_at >= {p}"));
        }
        if let Some(until) = self.until {
            let p = sql.bind(until);
            sql.push(&format!(" AND created_at < {p}"));
        }
        if let Some(text) = &self.text {
            let p = sql.bind(like_containing(text));
            if self.text_index_patterns.is_empty() {
                sql.push(&format!(" AND message ILIKE {p}"));
            } else {
                for pattern in &self.text_index_patterns {
                    let i = sql.bind(pattern.clone());
                    sql.push(&format!(" AND message ILIKE {i}"));
                }
                // The index covers `message`, not `message || ''`: so the whole pattern
                // is checked on the candidates, and its common trigrams not looked up.
                sql.push(&format!(" AND (message || '') ILIKE {p}"));
            }
        }
        if let Some(trace) = &self.trace_id {
            let p = sql.bind(trace.clone());
            // Spelled as the index is (migration 0009), so that the planner uses it.
            sql.push(&format!(
                " AND metadata ? 'trace_id' AND length(metadata->>'trace_id') = 32 \
                 AND metadata->>'trace_id' = {p}"
            ));
        }
        for (path, value) in &self.metadata {
            let Value::String(text) = value else { continue };
            let as_text = nest(path, Value::String(text.clone()));
            let p = sql.bind(as_text);
            // `meta.attempts=3` also finds the number 3, `meta.dry_run=true` the boolean.
            match serde_json::from_str::<Value>(text) {
                Ok(typed @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => {
                    let q = sql.bind(nest(path, typed));
                    sql.push(&format!(" AND (metadata @> {p} OR metadata @> {q})"));
                }
                _ => sql.push(&format!(" AND metadata @> {p}")),
            }
        }
    }

    /// The filters as JSON, for the access record of the request.
    pub fn describe(&self) -> Value {
        let mut map = Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                map.insert(k.to_owned(), v);
            }
        };
        put("username", json!(self.username));
        put("user_id", json!(self.user_id));
        if !self.event_types.is_empty() {
            put("event_type", json!(self.event_types));
        }
        if !self.severities.is_empty() {
            let names: Vec<&str> = self.severities.iter().map(|s| s.as_str()).collect();
            put("severity", json!(names));
        }
        // When `severity` and `min_severity` exclude each other, `severity` above is empty:
        // the record then says what was asked, and that it matched nothing.
        if self.matches_nothing {
            put("min_severity", json!(self.min_severity.map(|s| s.as_str())));
            put("matches_nothing", json!(true));
        }
        put("resource_type", json!(self.resource_type));
        put("resource_id", json!(self.resource_id));
        put("resource_name", json!(self.resource_name));
        put(
            "ip_address",
            match &self.ip_address {
                Some(IpFilter::Address(ip)) => json!(ip.to_string()),
                Some(IpFilter::Network(net)) => json!(net),
                None => Value::Null,
            },
        );
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        put("since", json!(self.since.map(time)));
        put("until", json!(self.until.map(time)));
        put("q", json!(self.text));
        put("trace_id", json!(self.trace_id));
        for (path, value) in &self.metadata {
            map.insert(format!("meta.{path}"), value.clone());
        }
        Value::Object(map)
    }
}

/// An OpenTelemetry trace id: 32 hex digits (any case); lowercase, as records store it.
/// (The all-zero id is invalid in OpenTelemetry, and simply finds nothing.)
fn parse_trace_id(text: &str) -> Result<String, String> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be a trace id: 32 hex digits".to_owned());
    }
    Ok(text.to_ascii_lowercase())
}

fn nest(path: &str, value: Value) -> Value {
    path.rsplit('.').fold(value, |inner, key| {
        let mut map = Map::new();
        map.insert(key.to_owned(), inner);
        Value::Object(map)
    })
}

/// One of the four severities, by its exact name (the OpenAPI document's enum; the layer
/// is lenient with what applications emit, the API is exact with what it is asked).
fn severity_named(name: &str) -> Result<Severity, String> {
    Severity::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .ok_or_else(|| format!("{name:?} is not one of info, warning, error, critical"))
}

/// Parses an RFC 3339 time, as `since` and `until` take.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time like 2026-11-27T08:00:00Z: {e}"))
}

/// An address, or a network in CIDR form whose prefix length is written without
/// leading zeros (`10.0.0.0/8`, not `/08`), as the OpenAPI document states it.
fn parse_ip_filter(text: &str) -> Result<IpFilter, String> {
    match text.split_once('/') {
        None => text
            .parse::<IpAddr>()
            .map(IpFilter::Address)
            .map_err(|_| "not an IP address or network like 10.0.0.0/8".to_owned()),
        Some((addr, bits)) => {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| "not a network like 10.0.0.0/8".to_owned())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let canonical = bits == "0" || !bits.starts_with('0');
            match bits.parse::<u8>() {
                Ok(b) if b <= max && canonical && bits.bytes().all(|c| c.is_ascii_digit()) => {
                    Ok(IpFilter::Network(format!("{addr}/{b}")))
                }
                _ => Err(format!("the prefix length must be 0 to {max}")),
            }
        }
    }
}

/// `column` is one of `values`: an equality for a single value, since PostgreSQL reads an
/// index on `(column, created_at DESC, id DESC)` in time order only for an equality. Given
/// `= ANY` of one value, it walks another index or sorts every match before the first
/// page: for `severity=error` on 10,000,000 rows, 10 ms instead of 1.
fn push_one_of(sql: &mut Sql, column: &str, mut values: Vec<String>) {
    if values.len() == 1 {
        let p = sql.bind(values.remove(0));
        sql.push(&format!(" AND {column} = {p}"));
    } else {
        let p = sql.bind(values);
        sql.push(&format!(" AND {column} = ANY({p}::text[])"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<(Filters, Sql), ApiError> {
        let mut params = Params::parse(Some(query))?;
        let filters = Filters::parse(&mut params)?;
        params.finish()?;
        let mut sql = Sql::new("true");
        filters.push_conditions(&mut sql);
        Ok((filters, sql))
    }

    #[test]
    fn values_become_parameters_never_sql_text() {
        let (_, sql) = parse("username=x%27%3B+DROP+TABLE+audit_logs%3B--&q=50%25_off").unwrap();
        assert_eq!(sql.text, "true AND username = $1 AND message ILIKE $2");
        assert!(!sql.text.contains("DROP"));
    }

    #[test]
    fn a_narrowed_text_search_still_checks_the_whole_pattern() {
        let mut params = Params::parse(Some("q=edge-4242%20")).unwrap();
        let mut filters = Filters::parse(&mut params).unwrap();
        filters.narrow_text_search(&MessageSample::from_messages(
            (0..1000).map(|i| format!("Device edge-{i} online")),
        ));
        let mut sql = Sql::new("true");
        filters.push_conditions(&mut sql);
        assert_eq!(
            sql.text,
            "true AND message ILIKE $2 AND (message || '') ILIKE $1"
        );
        assert_eq!(
            format!("{:?}", sql.params()),
            r#"["%edge-4242 %", "%-4242 %"]"#
        );
    }

    #[test]
    fn min_severity_selects_that_severity_and_above() {
        let (f, _) = parse("min_severity=error").unwrap();
        assert_eq!(f.severities, vec![Severity::Error, Severity::Critical]);
        let (f, _) = parse("severity=info,critical&min_severity=warning").unwrap();
        assert_eq!(f.severities, vec![Severity::Critical]);
        // Contradicting filters are a question whose answer is no rows.
        let (_, sql) = parse("severity=info&min_severity=error").unwrap();
        assert_eq!(sql.text, "true AND false");
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (query, parameter) in [
            ("user_id=abc", "user_id"),
            ("severity=fatal", "severity"),
            ("since=yesterday", "since"),
            ("ip_address=10.0.0.0/33", "ip_address"),
            ("meta.=x", "meta."),
            ("usernme=alice", "usernme"),
        ] {
            let err = parse(query)
                .err()
                .unwrap_or_else(|| panic!("{query} accepted"));
            assert_eq!(err.parameter.as_deref(), Some(parameter), "{query}");
        }
    }

    #[test]
    fn metadata_filters_nest_dotted_keys() {
        assert_eq!(nest("a.b", json!(1)), json!({"a": {"b": 1}}));
    }
}
