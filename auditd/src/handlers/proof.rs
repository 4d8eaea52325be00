//! `GET /api/v1/logs/{id}/proof`, `GET /api/v1/checkpoints` and
//! `GET /api/v1/checkpoints/consistency`: what a client needs to check, without trusting
//! auditd, that a record is in the signed log and that the log only ever grew.
//!
//! Hashes are lowercase hex; the record's canonical encoding is base64; checkpoints are
//! the signed notes verbatim (check them with the log's public key).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::access::{Access, Answer};
use crate::hex;
use crate::http::{self, ApiError};
use crate::query::records;
use crate::query::{self, Params};
use crate::seal::{self, entry_json, path_json, Provable, RecordProof, SealError};
use crate::state::App;

/// Most checkpoints in one answer, and how many without `limit`.
const MAX_CHECKPOINTS: i64 = 1000;
const DEFAULT_CHECKPOINTS: i64 = 20;

/// The answer for a failed proof: a database failure as any other, a log that does not
/// match its checkpoint as a 500 naming it (and logged), for every route that proves.
pub(crate) fn seal_error(e: SealError) -> ApiError {
    match e {
        SealError::Database(e) => ApiError::database(&e),
        SealError::Inconsistent(why) => {
            tracing::error!(%why, "the stored log does not match its checkpoint");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "log_inconsistent",
                "the stored log does not match its latest checkpoint: run auditd verify",
            )
        }
    }
}

/// The JSON form of a proof.
pub fn proof_json(proof: &RecordProof) -> Value {
    // The entry as bundles show it, with where the record is in it.
    let mut batch_json = entry_json(&proof.batch);
    batch_json["entry_leaf"] = hex::encode(&proof.batch.leaf()).into();
    batch_json["index"] = proof.batch_index.into();
    batch_json["path"] = path_json(&proof.batch_path);
    let status = match (&proof.sealed, proof.matches_committed) {
        (_, false) => "changed",
        (Some(_), true) => "sealed",
        (None, true) => "committed",
    };
    json!({
        "id": proof.id,
        "stream_id": proof.stream_id,
        "seq": proof.seq,
        "status": status,
        "encoded": BASE64.encode(&proof.encoded),
        "leaf": hex::encode(&proof.leaf),
        "batch": batch_json,
        "log": proof.sealed.as_ref().map(|sealed| json!({
            "position": sealed.position,
            "tree_size": sealed.tree_size,
            "path": path_json(&sealed.path),
            "checkpoint": sealed.checkpoint,
        })),
    })
}

/// Answers `GET /api/v1/logs/{id}/proof`.
pub async fn record_proof(app: &App, id: &str, params: Params) -> Result<Answer, ApiError> {
    params.finish()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_parameter("id", "must be an integer"))?;
    let client = app.client().await?;
    let provable = seal::record_proof(&**client, &app.log_leaves, id)
        .await
        .map_err(seal_error)?;
    let body = match provable {
        Provable::NoRecord => {
            return Err(ApiError::not_found(format!("no audit record with id {id}")))
        }
        Provable::Unproven => json!({ "id": id, "status": "unproven" }),
        Provable::Proof(proof) => {
            let mut body = proof_json(&proof);
            // The record as the API shows it, beside the bytes the proof covers.
            if let Some(row) = client
                .query_opt(&records::by_id_sql(), &[&id])
                .await
                .map_err(|e| ApiError::database(&e))?
            {
                let mut record = Vec::with_capacity(1024);
                records::write_record(&mut record, &row, None)?;
                body["record"] = serde_json::from_slice(&record).unwrap_or(Value::Null);
            }
            body
        }
    };
    Ok(Answer {
        response: http::json(StatusCode::OK, &body),
        access: Some(Access {
            filters: json!({ "id": id, "proof": true }),
            rows: 1,
        }),
    })
}

/// Answers `GET /api/v1/checkpoints`: the newest checkpoints first, optionally only
/// those of sizes from `min_size` to `max_size`.
pub async fn checkpoints(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let limit = params
        .take_parsed("limit", query::limit(MAX_CHECKPOINTS))?
        .unwrap_or(DEFAULT_CHECKPOINTS);
    let min_size = params.take_parsed("min_size", size)?.unwrap_or(0);
    let max_size = params.take_parsed("max_size", size)?.unwrap_or(i64::MAX);
    params.finish()?;
    let client = app.client().await?;
    let rows = client
        .query(
            "SELECT id, tree_size, signed_at, key_name, key_id, note FROM audit_checkpoints \
             WHERE tree_size BETWEEN $1 AND $2 ORDER BY id DESC LIMIT $3",
            &[&min_size, &max_size, &limit],
        )
        .await
        .map_err(|e| ApiError::database(&e))?;
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            let signed_at: DateTime<Utc> = row.get(2);
            json!({
                "id": row.get::<_, i64>(0),
                "tree_size": row.get::<_, i64>(1),
                "signed_at": signed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                "key_name": row.get::<_, String>(3),
                "key_id": row.get::<_, String>(4),
                "note": row.get::<_, String>(5),
            })
        })
        .collect();
    Ok(Answer::plain(http::json(
        StatusCode::OK,
        &json!({ "items": items }),
    )))
}

/// Answers `GET /api/v1/checkpoints/consistency?from=M&to=N`: the proof that the log of
/// size N extends the log of size M.
pub async fn consistency(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let from = params.take_parsed("from", size)?;
    let to = params.take_parsed("to", size)?;
    params.finish()?;
    let (Some(from), Some(to)) = (from, to) else {
        return Err(ApiError::bad_parameter(
            if from.is_none() { "from" } else { "to" },
            "is required",
        ));
    };
    // There is no proof that a log shrank: like any proof that does not exist, a 404
    // (the parameters are each valid; only together do they ask for nothing).
    if from > to {
        return Err(ApiError::not_found(format!(
            "no consistency proof from size {from} down to size {to}: a log only grows"
        )));
    }
    let client = app.client().await?;
    let proof = seal::consistency(&**client, &app.log_leaves, from as u64, to as u64)
        .await
        .map_err(seal_error)?
        .ok_or_else(|| {
            ApiError::not_found(format!("no checkpoint covers a log of size {to} yet"))
        })?;
    Ok(Answer::plain(http::json(
        StatusCode::OK,
        &json!({ "from": from, "to": to, "path": path_json(&proof) }),
    )))
}

/// A tree size: a non-negative integer.
fn size(text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0 && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| "must be a non-negative integer".to_owned())
}
