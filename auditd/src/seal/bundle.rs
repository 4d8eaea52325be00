//! Proof bundles: records with everything needed to check them offline, with no
//! database and no trust in auditd, only the log's public key (`auditd verify --bundle`).
//!
//! A bundle holds one signed checkpoint and, per batch, its ledger entry and the
//! inclusion proof of that entry in the log; per record, the record as the API shows
//! it, its canonical encoding (what the proofs cover) and the inclusion proof of its leaf
//! in the batch. A *complete* bundle holds every record of a run of consecutive log
//! positions: the checker rebuilds each batch's root from all of them, so it proves
//! that none is missing there, not only that each is genuine.

use std::collections::BTreeMap;

use audit_layer::integrity::merkle::{inclusion_proof, leaf_hash, root, verify_inclusion, Hash};
use audit_layer::integrity::{
    BatchEntry, StoredRecord, BATCH_ENTRY_COLUMNS, STORED_RECORD_COLUMNS,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio_postgres::GenericClient;

use super::checkpoint::Checkpoint;
use super::keys::VerifierKey;
use super::log::SealError;
use super::proof::{LogLeaves, RecordProof};

/// The format line of version 1.
pub const BUNDLE_FORMAT: &str = "auditd-proof-bundle/1";

/// One record of a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleRecord {
    /// The record as the API shows it.
    pub record: Value,
    /// Its canonical encoding.
    pub encoded: Vec<u8>,
    /// Its index in its batch.
    pub index: u64,
    /// The inclusion proof of its leaf in the batch's tree.
    pub path: Vec<Hash>,
}

/// One batch of a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleBatch {
    /// Its leaf position in the log.
    pub position: u64,
    /// The inclusion proof of its entry in the log at the checkpoint.
    pub log_path: Vec<Hash>,
    /// Its ledger entry.
    pub entry: BatchEntry,
    /// Its records in the bundle (all of them, in a complete bundle).
    pub records: Vec<BundleRecord>,
}

/// Records and their proofs up to one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The signed checkpoint.
    pub checkpoint: String,
    /// Whether every record of the batches is in it, the batches at consecutive
    /// positions.
    pub complete: bool,
    /// The batches, by position.
    pub batches: Vec<BundleBatch>,
    /// Records asked for that are not sealed yet, so not in it.
    pub unsealed: u64,
    /// Records asked for that carry no proof (written without integrity), so not in it.
    pub unproven: u64,
    /// Whether it stopped at its record limit before the last batch asked for (a
    /// complete bundle is then complete up to its last batch only).
    pub truncated: bool,
}

/// A hash as lowercase hex.
pub fn hex_hash(hash: &Hash) -> Value {
    Value::from(crate::hex::encode(hash))
}

/// A proof path as JSON: its hashes in lowercase hex.
pub fn path_json(path: &[Hash]) -> Value {
    path.iter().map(hex_hash).collect()
}

/// A batch's ledger entry as JSON, as proofs and bundles both show it (and
/// [`Bundle::from_json`] reads it back).
pub fn entry_json(e: &BatchEntry) -> Value {
    json!({
        "stream_id": e.stream_id,
        "batch_id": e.batch_id,
        "rows": e.rows,
        "first_seq": e.first_seq,
        "last_seq": e.last_seq,
        "encoding": e.encoding,
        "root": hex_hash(&e.root),
        "committed_at": time_micros(e.committed_at_micros),
        "tx_id": e.tx_id,
    })
}

/// A ledger entry read back from [`entry_json`]'s form.
pub fn entry_from_json(e: &Value) -> Result<BatchEntry, String> {
    let committed_at = e["committed_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or("an entry's committed_at is not RFC 3339")?;
    Ok(BatchEntry {
        stream_id: int(e, "stream_id")?,
        batch_id: int(e, "batch_id")?,
        rows: i32::try_from(int(e, "rows")?).map_err(|_| "rows out of range")?,
        first_seq: int(e, "first_seq")?,
        last_seq: int(e, "last_seq")?,
        encoding: i16::try_from(int(e, "encoding")?).map_err(|_| "encoding out of range")?,
        root: parse_hash(&e["root"])?,
        committed_at_micros: committed_at.timestamp_micros(),
        tx_id: int(e, "tx_id")?,
    })
}

/// A hash read back from lowercase hex.
pub fn parse_hash(value: &Value) -> Result<Hash, String> {
    value
        .as_str()
        .and_then(crate::hex::decode)
        .and_then(|bytes| Hash::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| format!("not a hex hash: {value}"))
}

/// A proof path read back from [`path_json`]'s form.
pub fn parse_path(value: &Value) -> Result<Vec<Hash>, String> {
    value
        .as_array()
        .ok_or("a proof path is not a list")?
        .iter()
        .map(parse_hash)
        .collect()
}

fn int(value: &Value, name: &str) -> Result<i64, String> {
    value[name]
        .as_i64()
        .ok_or_else(|| format!("{name} is not an integer"))
}

/// A time in microseconds since the Unix epoch as RFC 3339 (UTC, microseconds).
pub fn time_micros(micros: i64) -> Value {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| Value::from(t.to_rfc3339_opts(SecondsFormat::Micros, true)))
        .unwrap_or(Value::Null)
}

impl Bundle {
    /// Groups proofs made up to one checkpoint into a bundle (not complete).
    pub fn from_proofs(checkpoint: String, proofs: Vec<(RecordProof, Value)>) -> Self {
        let mut unsealed = 0;
        let mut batches: BTreeMap<u64, BundleBatch> = BTreeMap::new();
        for (proof, record) in proofs {
            let Some(sealed) = proof.sealed else {
                unsealed += 1;
                continue;
            };
            let batch = batches
                .entry(sealed.position)
                .or_insert_with(|| BundleBatch {
                    position: sealed.position,
                    log_path: sealed.path.clone(),
                    entry: proof.batch,
                    records: Vec::new(),
                });
            batch.records.push(BundleRecord {
                record,
                encoded: proof.encoded,
                index: proof.batch_index,
                path: proof.batch_path,
            });
        }
        Bundle {
            checkpoint,
            complete: false,
            batches: batches.into_values().collect(),
            unsealed,
            unproven: 0,
            truncated: false,
        }
    }

    /// The same, marked complete (for a bundle of no batches: nothing matched).
    pub fn completed(self) -> Self {
        Bundle {
            complete: true,
            ..self
        }
    }

    /// The bundle as JSON.
    pub fn to_json(&self) -> Value {
        let batches: Vec<Value> = self
            .batches
            .iter()
            .map(|b| {
                json!({
                    "position": b.position,
                    "log_path": path_json(&b.log_path),
                    "entry": entry_json(&b.entry),
                    "records": b.records.iter().map(|r| json!({
                        "record": r.record,
                        "encoded": BASE64.encode(&r.encoded),
                        "index": r.index,
                        "path": path_json(&r.path),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "format": BUNDLE_FORMAT,
            "checkpoint": self.checkpoint,
            "complete": self.complete,
            "unsealed": self.unsealed,
            "unproven": self.unproven,
            "truncated": self.truncated,
            "batches": batches,
        })
    }

    /// Reads a bundle, refusing anything not of its format.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        if value["format"] != BUNDLE_FORMAT {
            return Err(format!(
                "not a proof bundle: its format is not {BUNDLE_FORMAT}"
            ));
        }
        let checkpoint = value["checkpoint"]
            .as_str()
            .ok_or("no checkpoint")?
            .to_owned();
        let mut batches = Vec::new();
        for batch in value["batches"].as_array().ok_or("no batches")? {
            let entry = entry_from_json(&batch["entry"])?;
            let mut records = Vec::new();
            for r in batch["records"]
                .as_array()
                .ok_or("a batch has no records list")?
            {
                records.push(BundleRecord {
                    record: r["record"].clone(),
                    encoded: r["encoded"]
                        .as_str()
                        .and_then(|text| BASE64.decode(text).ok())
                        .ok_or("a record's encoding is not base64")?,
                    index: u64::try_from(int(r, "index")?).map_err(|_| "negative index")?,
                    path: parse_path(&r["path"])?,
                });
            }
            batches.push(BundleBatch {
                position: u64::try_from(int(batch, "position")?)
                    .map_err(|_| "negative position")?,
                log_path: parse_path(&batch["log_path"])?,
                entry,
                records,
            });
        }
        Ok(Bundle {
            checkpoint,
            complete: value["complete"] == true,
            batches,
            unsealed: value["unsealed"].as_u64().unwrap_or(0),
            unproven: value["unproven"].as_u64().unwrap_or(0),
            truncated: value["truncated"] == true,
        })
    }
}

/// Every record of the batches at log positions `first` to `last` (consecutive), up to
/// about `max_records` (whole batches), with the proofs up to `checkpoint`.
pub async fn complete_bundle(
    client: &impl GenericClient,
    leaves: &LogLeaves,
    checkpoint: &(u64, String),
    (first, last): (i64, i64),
    max_records: u64,
) -> Result<Bundle, SealError> {
    let (size, note) = checkpoint;
    let last = last.min(*size as i64 - 1);
    let batch_rows = client
        .query(
            &format!(
                "SELECT t.position, {} FROM audit_log_tree t \
                 JOIN audit_writer_batches b USING (stream_id, batch_id) \
                 WHERE t.position BETWEEN $1 AND $2 ORDER BY t.position",
                BATCH_ENTRY_COLUMNS
                    .split(", ")
                    .map(|c| format!("b.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[&first, &last],
        )
        .await?;
    let mut batches = Vec::new();
    let mut records_taken = 0u64;
    let mut truncated = false;
    for row in &batch_rows {
        if records_taken >= max_records {
            truncated = true;
            break;
        }
        let position: i64 = row.try_get(0)?;
        let Some(entry) = BatchEntry::from_row(row)? else {
            return Err(SealError::Inconsistent(format!(
                "the ledger row sealed at log leaf {position} is malformed"
            )));
        };
        let log_path = leaves
            .with(client, *size, |leaves| {
                inclusion_proof(leaves, position as usize).unwrap_or_default()
            })
            .await?;
        let rows = client
            .query(
                &format!(
                    // The batch's own transaction wrote its records: found by the
                    // BRIN index on (id, tx_id), not by a scan.
                    "SELECT id, {STORED_RECORD_COLUMNS} FROM audit_logs \
                     WHERE tx_id = $4 AND stream_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"
                ),
                &[
                    &entry.stream_id,
                    &entry.first_seq,
                    &entry.last_seq,
                    &entry.tx_id,
                ],
            )
            .await?;
        let mut records = Vec::with_capacity(rows.len());
        for (index, record_row) in rows.iter().enumerate() {
            let encoded = audit_layer::integrity::stored_encoding(record_row)?;
            let mut record = Vec::with_capacity(512);
            crate::query::records::write_record(&mut record, record_row, None)
                .map_err(|_| SealError::Inconsistent("a record cannot be shown".to_owned()))?;
            records.push(BundleRecord {
                record: serde_json::from_slice(&record).unwrap_or(Value::Null),
                encoded,
                index: index as u64,
                // The checker rebuilds the batch's root from all of them.
                path: Vec::new(),
            });
        }
        records_taken += records.len() as u64;
        batches.push(BundleBatch {
            position: position as u64,
            log_path,
            entry,
            records,
        });
    }
    Ok(Bundle {
        checkpoint: note.clone(),
        complete: true,
        batches,
        unsealed: 0,
        unproven: 0,
        truncated,
    })
}

/// What checking a bundle found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleReport {
    /// The checkpoint, once its signature verified.
    pub checkpoint: Option<Checkpoint>,
    /// Records proven genuine.
    pub proven: u64,
    /// Batches checked.
    pub batches: u64,
    /// In a complete bundle, the log positions shown to hold no other record.
    pub complete_positions: Option<(u64, u64)>,
    /// Every problem, each naming what it is about.
    pub findings: Vec<String>,
}

impl BundleReport {
    /// Whether nothing was found.
    pub fn intact(&self) -> bool {
        self.findings.is_empty() && self.checkpoint.is_some()
    }
}

/// Checks a bundle with nothing but `keys`.
pub fn check_bundle(bundle: &Bundle, keys: &[VerifierKey]) -> BundleReport {
    let mut report = BundleReport::default();
    let checkpoint = match Checkpoint::open(&bundle.checkpoint, keys) {
        Ok((checkpoint, _)) => checkpoint,
        Err(e) => {
            report
                .findings
                .push(format!("the bundle's checkpoint is not trusted: {e}"));
            return report;
        }
    };
    let mut expected_position = bundle.batches.first().map(|b| b.position);
    for batch in &bundle.batches {
        report.batches += 1;
        let e = &batch.entry;
        let name = format!(
            "batch {} (stream {}) at log leaf {}",
            e.batch_id, e.stream_id, batch.position
        );
        if !verify_inclusion(
            batch.position,
            checkpoint.size,
            &e.leaf(),
            &batch.log_path,
            &checkpoint.root,
        ) {
            report.findings.push(format!(
                "{name}: not in the signed log (its entry or proof was changed)"
            ));
            continue;
        }
        if bundle.complete {
            if Some(batch.position) != expected_position {
                report.findings.push(format!(
                    "{name}: the batches before it are missing from the bundle"
                ));
            }
            expected_position = Some(batch.position + 1);
        }
        let mut leaves = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            let leaf = leaf_hash(&record.encoded);
            leaves.push(leaf);
            let id = &record.record["id"];
            let shown = match StoredRecord::decode(&record.encoded) {
                Ok(decoded) => shown_matches(&record.record, &decoded),
                Err(e) => Err(e.to_string()),
            };
            if let Err(why) = shown {
                report.findings.push(format!(
                    "record {id} of {name}: shown differently from what its proof covers ({why})"
                ));
                continue;
            }
            if !bundle.complete {
                if verify_inclusion(record.index, e.rows as u64, &leaf, &record.path, &e.root) {
                    report.proven += 1;
                } else {
                    report.findings.push(format!(
                        "record {id} of {name}: not in its batch (changed, or a forgery)"
                    ));
                }
            }
        }
        if bundle.complete {
            if leaves.len() as u64 == e.rows as u64 && root(&leaves) == e.root {
                report.proven += leaves.len() as u64;
            } else {
                report.findings.push(format!(
                    "{name}: its {} records in the bundle are not the {} it committed (one is missing, added or changed)",
                    leaves.len(),
                    e.rows
                ));
            }
        }
    }
    if bundle.complete {
        report.complete_positions = bundle
            .batches
            .first()
            .zip(bundle.batches.last())
            .map(|(first, last)| (first.position, last.position));
    }
    if report.batches == 0 {
        report
            .findings
            .push("the bundle holds no record: it proves nothing".to_owned());
    }
    report.checkpoint = Some(checkpoint);
    report
}

/// Whether the record as shown says what the encoding says.
fn shown_matches(shown: &Value, stored: &StoredRecord<'_>) -> Result<(), String> {
    let text = |name: &str, value: Option<&str>| -> Result<(), String> {
        if shown[name].as_str() == value {
            Ok(())
        } else {
            Err(format!("{name} differs"))
        }
    };
    text("username", Some(stored.username))?;
    text("event_type", Some(stored.event_type))?;
    text("severity", Some(stored.severity))?;
    text("message", Some(stored.message))?;
    text("resource_type", stored.resource_type)?;
    text("resource_id", stored.resource_id)?;
    text("resource_name", stored.resource_name)?;
    text(
        "ip_address",
        crate::query::records::inet_text(stored).as_deref(),
    )?;
    if shown["user_id"].as_i64() != stored.user_id {
        return Err("user_id differs".to_owned());
    }
    let created = shown["created_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_micros());
    if created != Some(stored.created_at_micros) {
        return Err("created_at differs".to_owned());
    }
    let stored_metadata: Value = match stored.metadata {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).map_err(|_| "metadata is not JSON")?,
    };
    let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(Map::is_empty);
    if !(shown["metadata"] == stored_metadata
        || empty(&shown["metadata"]) && empty(&stored_metadata))
    {
        return Err("metadata differs".to_owned());
    }
    Ok(())
}
