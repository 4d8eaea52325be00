//! `POST /api/v1/events`: audit records from producers in any language, written through
//! the audit layer with every guarantee it gives its own events (fix-ups, redaction, the
//! spool, exactly-once, integrity).
//!
//! The body is NDJSON (`application/x-ndjson`, one record a line) or JSON
//! (`application/json`, an array of records, or one record). Each record is an object
//! with the column names and a `metadata` object; other members go into metadata, as
//! unknown tracing fields do. The records of one request are one batch: they commit
//! together, under the request's `Idempotency-Key` when it has one (`crate::idempotency`),
//! and the answer (202) comes once they are committed or safely in the spool. Every record
//! names who sent it (`_sent_by`: the token's name and the client's address), apart from
//! the `username` it names.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::access::Caller;
use crate::http::{self, ApiError, Body};
use crate::idempotency::{self, Committed};
use crate::query::Params;
use crate::state::App;

/// How the records of a body are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One JSON object a line.
    Ndjson,
    /// A JSON array of objects, or one object.
    Json,
}

/// Answers `POST /api/v1/events`, within the request timeout.
/// `slot` is its place among the writes handled at once: kept by the attempt until the
/// writer answers, so that requests given up at their timeout cannot pile attempts up.
pub async fn ingest(
    app: &Arc<App>,
    request: Request<Incoming>,
    caller: Caller,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Response<Body> {
    let limit = app.limits.request_timeout;
    match tokio::time::timeout(limit, accept(app, request, &caller, slot)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest_timeout",
            format!(
                "not committed within {limit:?}; the records may still be written: send the \
                 request again with the same Idempotency-Key to learn their fate"
            ),
        )
        .into_response(),
    }
}

async fn accept(
    app: &Arc<App>,
    request: Request<Incoming>,
    caller: &Caller,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response<Body>, ApiError> {
    let Some(writer) = app.audit_handle.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest_unavailable",
            "this server has no audit writer to write records with",
        ));
    };
    let limits = &app.limits.ingest;
    // It takes no query parameters, and says so of one sent (as every route does).
    Params::parse(request.uri().query())?.finish()?;
    let format = format_of(request.headers().get(CONTENT_TYPE))?;
    let key = idempotency::key_of(request.headers().get(idempotency::HEADER))?;
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(body_too_large(limits.max_body_bytes));
    }
    let body = match Limited::new(request.into_body(), limits.max_body_bytes)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(body_too_large(limits.max_body_bytes))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the request body could not be read: {e}"),
            ))
        }
    };
    let records = records_of(format, &body, limits.max_records)?;
    if let Err(wait) = app.record_rate.take(&caller.name, records.len()) {
        app.metrics.ingest_rate_limited();
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this token may send {} records a second; try again in {seconds} s",
                app.limits.ingest.records_per_second
            ),
        )
        .into_response();
        response.headers_mut().insert(
            RETRY_AFTER,
            HeaderValue::from_str(&seconds.max(1).to_string())
                .unwrap_or(HeaderValue::from_static("1")),
        );
        return Ok(response);
    }

    let digest: [u8; 32] = Sha256::digest(&body).into();
    let scoped = key.as_deref().map(|k| idempotency::scoped(&caller.name, k));
    // Held until the writer knows the fate of this attempt (even past this request's
    // timeout): a retry racing it is told to wait for it.
    let held = match &scoped {
        Some(scoped) => Some(app.in_flight_keys.hold(scoped).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is being handled now; wait for its answer, then retry",
            )
        })?),
        None => None,
    };
    if let (Some(scoped), Some(key)) = (&scoped, &key) {
        match committed(app, scoped).await {
            Ok(Some(earlier)) => return duplicate(app, key, Some(&earlier), &digest),
            Ok(None) => {}
            Err(e) if e.code == "schema_outdated" => return Err(e),
            // The database is down, or this role may not read the ledger: the records go
            // to the writer (and its spool) all the same. The lookup only shapes the
            // answer; the writer's check against the ledger's unique key, digest
            // included, is what keeps a retry from being written twice.
            Err(_) => {}
        }
    }

    let mut submission = writer
        .submission()
        .sent_by(&caller.name, Some(caller.ip))
        .max_clock_skew(limits.max_ahead, limits.max_behind);
    if let Some(scoped) = &scoped {
        let claim = audit_layer::IdempotencyKey::new(scoped.clone(), digest).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "the Idempotency-Key is too long",
            )
        })?;
        submission = submission.idempotency_key(claim);
    }
    for object in records {
        submission.push_object(object);
    }
    // On a task of its own, so that a request given up (its timeout) leaves the attempt
    // to finish, still holding its key.
    let submitted = tokio::spawn(async move {
        let receipt = writer.submit(submission).await;
        drop(held);
        drop(slot);
        receipt
    });
    let receipt = match submitted.await {
        Ok(Ok(receipt)) => receipt,
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "writer_stopped",
                format!("the audit writer is not taking records: {e}"),
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the submission failed: {e}"),
            ))
        }
    };
    match receipt.outcome {
        audit_layer::Outcome::Duplicate | audit_layer::Outcome::KeyReused => {
            // Another attempt committed under the key between the lookup and the write
            // (another auditd, a replay from the spool); the writer compared the digests.
            let key = key.as_deref().unwrap_or_default();
            let earlier = match &scoped {
                Some(scoped) => committed(app, scoped).await.ok().flatten(),
                None => None,
            };
            if receipt.outcome == audit_layer::Outcome::KeyReused {
                return Err(key_reused());
            }
            return duplicate(app, key, earlier.as_ref(), &digest);
        }
        _ => {}
    }
    app.metrics
        .records_ingested(receipt.records as u64, receipt.fixups);
    let status = match receipt.outcome {
        audit_layer::Outcome::Spooled => "spooled",
        _ => "committed",
    };
    let (first_seq, last_seq) = receipt.seqs.unzip();
    Ok(http::json(
        StatusCode::ACCEPTED,
        &json!({
            "status": status,
            "duplicate": false,
            "records": receipt.records,
            "fixups": receipt.fixups,
            "rejected": receipt.rejected,
            "stream_id": receipt.stream_id,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "idempotency_key": key,
        }),
    ))
}

async fn committed(app: &App, scoped: &str) -> Result<Option<Committed>, ApiError> {
    // On the primary: a standby may not have replayed a commit made a moment ago.
    let client = app.write_client().await?;
    idempotency::committed(&client, scoped)
        .await
        .map_err(|e| match e.code() {
            // Checked before anything is handed to the writer, which would otherwise
            // retry a batch the schema cannot take.
            Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "schema_outdated",
                "the database schema predates idempotency keys: run `auditd migrate`",
            ),
            _ => ApiError::database(&e),
        })
}

/// The answer to a retry of a request already committed (200, nothing written now), or
/// to a key reused for other records (422). `earlier` is the ledger's row, when it could
/// be read.
fn duplicate(
    app: &App,
    key: &str,
    earlier: Option<&Committed>,
    digest: &[u8; 32],
) -> Result<Response<Body>, ApiError> {
    if let Some(earlier) = earlier {
        if earlier.request_digest.as_deref() != Some(&digest[..]) {
            return Err(key_reused());
        }
    }
    app.metrics.ingest_duplicate();
    let mut answer = json!({
        "status": "duplicate",
        "duplicate": true,
        "idempotency_key": key,
    });
    if let Some(earlier) = earlier {
        answer["records"] = json!(earlier.rows);
        answer["committed_at"] = json!(earlier
            .committed_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    }
    Ok(http::json(StatusCode::OK, &answer))
}

fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used for a request with other content; use a new key for new records",
    )
}

fn body_too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the body is over {max} bytes; send fewer records a request"),
    )
}

fn format_of(content_type: Option<&HeaderValue>) -> Result<Format, ApiError> {
    let media = content_type.and_then(|v| v.to_str().ok()).map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some("application/x-ndjson" | "application/jsonl" | "application/ndjson") => {
            Ok(Format::Ndjson)
        }
        Some("application/json") => Ok(Format::Json),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/x-ndjson (one record a line) or application/json (an array of records)",
        )),
    }
}

/// The records of a body, each a JSON object; a clear 400 naming the first that is not,
/// and 413 beyond `max_records`.
fn records_of(
    format: Format,
    body: &Bytes,
    max_records: usize,
) -> Result<Vec<Map<String, Value>>, ApiError> {
    let invalid = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message);
    let too_many = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!("more than {max_records} records in one request; send them in several"),
        )
    };
    let mut records = Vec::new();
    match format {
        Format::Ndjson => {
            for (number, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if records.len() == max_records {
                    return Err(too_many());
                }
                match serde_json::from_slice::<Value>(line) {
                    Ok(Value::Object(object)) => records.push(object),
                    Ok(_) => {
                        return Err(invalid(format!(
                            "line {}: a record must be a JSON object",
                            number + 1
                        )))
                    }
                    Err(e) => return Err(invalid(format!("line {}: not JSON: {e}", number + 1))),
                }
            }
        }
        Format::Json => {
            // Read element by element, stopping at the first that is not a record or one
            // past the bound: a body of 16 MiB of `[0,0,...]` is never built whole.
            let mut reader = serde_json::Deserializer::from_slice(body);
            let read = serde::de::DeserializeSeed::deserialize(
                RecordList { max: max_records },
                &mut reader,
            )
            .and_then(|list| reader.end().map(|()| list));
            match read {
                Ok(list) => records = list,
                Err(e) if e.to_string().starts_with(TOO_MANY) => return Err(too_many()),
                Err(e) if e.to_string().starts_with(NOT_A_RECORD) => {
                    let message = e.to_string();
                    let what = message.split(" at line").next().unwrap_or(&message);
                    return Err(invalid(what[NOT_A_RECORD.len()..].trim().to_owned()));
                }
                Err(e) => return Err(invalid(format!("not JSON: {e}"))),
            }
        }
    }
    if records.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_records",
            "the body holds no record",
        ));
    }
    Ok(records)
}

const TOO_MANY: &str = "too many records";
const NOT_A_RECORD: &str = "not a record:";

/// A JSON array of records (objects), read until one past `max`; or one record.
struct RecordList {
    max: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for RecordList {
    type Value = Vec<Map<String, Value>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<Self::Value, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RecordList {
    type Value = Vec<Map<String, Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of records or one record")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut items: A,
    ) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut records = Vec::new();
        while let Some(item) = items.next_element::<Value>()? {
            if records.len() == self.max {
                return Err(A::Error::custom(TOO_MANY));
            }
            match item {
                Value::Object(record) => records.push(record),
                _ => {
                    return Err(A::Error::custom(format!(
                        "{NOT_A_RECORD} record {}: a record must be a JSON object",
                        records.len()
                    )))
                }
            }
        }
        Ok(records)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, members: A) -> Result<Self::Value, A::Error> {
        let record =
            serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(members))?;
        Ok(vec![record])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_ndjson_or_an_array_and_the_first_bad_record_is_named() {
        let ndjson = Bytes::from_static(b"{\"a\":1}\r\n\n  \n{\"b\":2}\n");
        assert_eq!(records_of(Format::Ndjson, &ndjson, 10).unwrap().len(), 2);
        let array = Bytes::from_static(b"[{\"a\":1},{\"b\":2},{\"c\":3}]");
        assert_eq!(records_of(Format::Json, &array, 10).unwrap().len(), 3);
        let one = Bytes::from_static(b"{\"a\":1}");
        assert_eq!(records_of(Format::Json, &one, 10).unwrap().len(), 1);

        let bad = Bytes::from_static(b"{\"a\":1}\n[1]\n");
        let e = records_of(Format::Ndjson, &bad, 10).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (
                StatusCode::BAD_REQUEST,
                "line 2: a record must be a JSON object"
            )
        );
        let e = records_of(Format::Json, &Bytes::from_static(b"[{},2]"), 10).unwrap_err();
        assert!(e.message.starts_with("record 1:"), "{}", e.message);
        let e = records_of(Format::Ndjson, &Bytes::from_static(b"\n\n"), 10).unwrap_err();
        assert_eq!(e.code, "no_records");
        let e = records_of(Format::Ndjson, &Bytes::from_static(b"{}\n{}\n{}\n"), 2).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_many_records")
        );
        let e = records_of(Format::Json, &Bytes::from_static(b"[{},{},{}]"), 2).unwrap_err();
        assert_eq!(e.code, "too_many_records");
    }

    #[test]
    fn the_media_type_decides_the_format() {
        let of = |v: &str| format_of(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(of("application/x-ndjson").unwrap(), Format::Ndjson);
        assert_eq!(of("Application/JSON; charset=utf-8").unwrap(), Format::Json);
        assert_eq!(
            of("text/plain").unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert!(format_of(None).is_err());
    }
}
