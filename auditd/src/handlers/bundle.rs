//! `GET /api/v1/logs/bundle`: records with their proofs up to one signed checkpoint, in
//! one JSON document an auditor checks offline (`auditd verify --bundle FILE
//! --public-key KEY`).
//!
//! Two kinds: the records that match the filters, each proven genuine; or, with
//! `complete=true`, every record of the batches at consecutive log positions from the
//! first batch holding a matching record to the last, which also proves that none is
//! missing from those batches. (What the bundle says of itself beyond the proofs,
//! `truncated`, `unsealed`, `unproven`, is auditd's word, not proven.)

use hyper::StatusCode;
use serde_json::Value;

use super::proof::seal_error;
use crate::access::{Access, Answer};
use crate::http::{self, ApiError};
use crate::query::records::{self, Order};
use crate::query::{self, Params, Sql};
use crate::seal::{self, Bundle, Provable};
use crate::state::App;

/// Most records in one bundle, and how many without `limit`.
const MAX_BUNDLE_RECORDS: i64 = 10_000;
const DEFAULT_BUNDLE_RECORDS: i64 = 1_000;

/// Answers `GET /api/v1/logs/bundle`.
pub async fn bundle(app: &App, mut params: Params) -> Result<Answer, ApiError> {
    let filters = app.filters(&mut params)?;
    let complete = params.take_bool("complete")?.unwrap_or(false);
    let limit = params
        .take_parsed("limit", query::limit(MAX_BUNDLE_RECORDS))?
        .unwrap_or(DEFAULT_BUNDLE_RECORDS);
    params.finish()?;
    let described = filters.describe();
    let client = app.client().await?;
    let Some(checkpoint) = seal::latest_checkpoint(&**client)
        .await
        .map_err(seal_error)?
    else {
        return Err(ApiError::not_found(
            "nothing is sealed yet: no checkpoint to prove records against",
        ));
    };
    let bundle = if complete {
        // The log positions of the sealed batches that hold a matching record.
        let mut sql = Sql::new("SELECT min(t.position), max(t.position) FROM (SELECT stream_id, seq FROM audit_logs WHERE true");
        filters.push_conditions(&mut sql);
        let size = sql.bind(checkpoint.0 as i64);
        sql.push(&format!(
            ") l JOIN audit_writer_batches b ON b.stream_id = l.stream_id \
               AND l.seq BETWEEN b.first_seq AND b.last_seq AND b.rows > 0 \
             JOIN audit_log_tree t ON (t.stream_id, t.batch_id) = (b.stream_id, b.batch_id) \
             WHERE t.position < {size}"
        ));
        let range = client
            .query_one(&sql.text, &sql.params())
            .await
            .map_err(|e| ApiError::database(&e))?;
        match (
            range.get::<_, Option<i64>>(0),
            range.get::<_, Option<i64>>(1),
        ) {
            (Some(first), Some(last)) => seal::complete_bundle(
                &**client,
                &app.log_leaves,
                &checkpoint,
                (first, last),
                limit as u64,
            )
            .await
            .map_err(seal_error)?,
            _ => Bundle::from_proofs(checkpoint.1.clone(), Vec::new()).completed(),
        }
    } else {
        // One row more than asked says whether the limit cut the bundle short.
        let sql = records::page_sql(&filters, Order::Newest, None, Some(limit + 1));
        let mut rows = client
            .query(&sql.text, &sql.params())
            .await
            .map_err(|e| ApiError::database(&e))?;
        let truncated = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let mut proofs = Vec::with_capacity(rows.len());
        let mut unproven = 0;
        for row in &rows {
            let id: i64 = row.get("id");
            let provable = seal::record_proof_at(&**client, &app.log_leaves, id, Some(&checkpoint))
                .await
                .map_err(seal_error)?;
            match provable {
                Provable::Proof(proof) => {
                    let mut record = Vec::with_capacity(512);
                    records::write_record(&mut record, row, None)?;
                    let record: Value = serde_json::from_slice(&record).unwrap_or(Value::Null);
                    proofs.push((*proof, record));
                }
                // Counted, never silently left out.
                Provable::Unproven | Provable::NoRecord => unproven += 1,
            }
        }
        Bundle {
            unproven,
            truncated,
            ..Bundle::from_proofs(checkpoint.1.clone(), proofs)
        }
    };
    let rows: u64 = bundle.batches.iter().map(|b| b.records.len() as u64).sum();
    let mut described = described;
    if let Some(map) = described.as_object_mut() {
        map.insert(
            "bundle".to_owned(),
            Value::from(if complete { "complete" } else { "records" }),
        );
    }
    Ok(Answer {
        response: http::json(StatusCode::OK, &bundle.to_json()),
        access: Some(Access {
            filters: described,
            rows,
        }),
    })
}
