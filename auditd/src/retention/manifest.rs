//! An archive's manifest: what the archive holds and how to prove it, in one JSON file
//! beside it, with a signed note over the manifest's SHA-256 (by the log's key) beside
//! that. With the manifest, the archive, and the log's public key, anyone checks the
//! archive offline (`auditd verify --archive`): its file hash, each record against its
//! batch's root, each batch's entry in the signed log, the log's head against the
//! signed checkpoint.
//!
//! It holds the archive's file (name, SHA-256, size), its counts, the (stream, seq) runs
//! of its records (what `auditd verify` excuses as retired once the partition is gone),
//! each batch a record came from (its ledger entry and log position; and, for a batch
//! only partly in this archive, every leaf of the batch, so that its root is rebuilt),
//! one proof for the run of log positions those batches span, and the checkpoint the
//! archive was checked against.

use audit_layer::integrity::merkle::Hash;
use audit_layer::integrity::{batch_leaves, BatchEntry};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::archive::SeqRun;
use crate::seal::time_micros;
use crate::seal::{
    entry_from_json, entry_json, hex_hash, open_note, parse_hash, parse_path, path_json, sign_note,
    NoteError, SigningKey, VerifierKey,
};

/// The format of version 1.
pub const MANIFEST_FORMAT: &str = "auditd-archive/1";
/// The first line of the signed note over a manifest: no checkpoint starts so.
const MANIFEST_NOTE: &str = "auditd-archive-manifest/1";

/// One batch a record of the archive came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestBatch {
    /// Its leaf position in the log.
    pub position: u64,
    /// Its ledger entry.
    pub entry: BatchEntry,
    /// When only some of its records are in the archive: the ledger row's leaves (all of
    /// the batch's), as stored, so that its root is rebuilt. `None` when every record
    /// of the batch is in the archive.
    pub leaves: Option<Vec<u8>>,
}

impl ManifestBatch {
    /// The batch's leaves, by seq (from the manifest when partial).
    pub fn stored_leaves(&self) -> Option<Vec<(i64, Hash)>> {
        let leaves = self.leaves.as_ref()?;
        batch_leaves(
            leaves,
            self.entry.rows,
            Some(self.entry.first_seq),
            Some(self.entry.last_seq),
        )
    }
}

/// The proof that the batches' entries are in the log at the checkpoint: the log's
/// leaves from `start` to the last batch's position are the batches' entries and
/// `other_leaves` (positions between them that are not this archive's), proven by
/// `proof` ([`range_proof`](audit_layer::integrity::merkle::range_proof)).
#[derive(Debug, Clone, PartialEq)]
pub struct LogProof {
    /// The first position.
    pub start: u64,
    /// The leaves between the batches', by position.
    pub other_leaves: Vec<(u64, Hash)>,
    /// The range proof.
    pub proof: Vec<Hash>,
}

/// The archive file a manifest describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Its file name (beside the manifest).
    pub name: String,
    /// Its SHA-256.
    pub sha256: Hash,
    /// Its size.
    pub bytes: u64,
}

/// What an archive holds and how to prove it.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The log's name (its checkpoints' origin), `None` for a log that is not sealed.
    pub log: Option<String>,
    /// The partition retired.
    pub partition: String,
    /// Its range: records created from `range.0` to before `range.1`.
    pub range: (DateTime<Utc>, DateTime<Utc>),
    /// When the archive was made.
    pub archived_at: DateTime<Utc>,
    /// The archive file.
    pub archive: ArchiveFile,
    /// Records in it.
    pub rows: u64,
    /// Records proven by the batches below.
    pub proven: u64,
    /// Records no proof covers (no stream, or written without integrity).
    pub unproven: u64,
    /// The (stream, seq) runs of its records.
    pub runs: Vec<SeqRun>,
    /// The batches its proven records came from, by position.
    pub batches: Vec<ManifestBatch>,
    /// Their entries' proof in the log, when there are any.
    pub log_proof: Option<LogProof>,
    /// The signed checkpoint they are proven up to.
    pub checkpoint: Option<String>,
}

fn time(t: &DateTime<Utc>) -> Value {
    time_micros(t.timestamp_micros())
}

fn parse_time(value: &Value, name: &str) -> Result<DateTime<Utc>, String> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{name} is not an RFC 3339 time"))
}

fn uint(value: &Value, name: &str) -> Result<u64, String> {
    value[name]
        .as_u64()
        .ok_or_else(|| format!("{name} is not a count"))
}

impl Manifest {
    /// The manifest as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "format": MANIFEST_FORMAT,
            "log": self.log,
            "partition": self.partition,
            "range": {"start": time(&self.range.0), "end": time(&self.range.1)},
            "archived_at": time(&self.archived_at),
            "archive": {
                "file": self.archive.name,
                "sha256": hex_hash(&self.archive.sha256),
                "bytes": self.archive.bytes,
                "format": "ndjson, zstd",
            },
            "rows": self.rows,
            "proven": self.proven,
            "unproven": self.unproven,
            "runs": self.runs.iter().map(|r| json!([r.stream_id, r.first_seq, r.last_seq])).collect::<Vec<_>>(),
            "batches": self.batches.iter().map(|b| json!({
                "position": b.position,
                "entry": entry_json(&b.entry),
                "leaves": b.leaves.as_ref().map(|l| BASE64.encode(l)),
            })).collect::<Vec<_>>(),
            "log_proof": self.log_proof.as_ref().map(|p| json!({
                "start": p.start,
                "other_leaves": p.other_leaves.iter().map(|(at, leaf)| json!([at, hex_hash(leaf)])).collect::<Vec<_>>(),
                "proof": path_json(&p.proof),
            })),
            "checkpoint": self.checkpoint,
        })
    }

    /// The manifest's file content: what its signature covers.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(&self.to_json()).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Reads a manifest, refusing anything not of its format.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        if value["format"] != MANIFEST_FORMAT {
            return Err(format!(
                "not an archive manifest: its format is not {MANIFEST_FORMAT}"
            ));
        }
        let text = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{name} is not text"))
        };
        let archive = &value["archive"];
        let runs = value["runs"]
            .as_array()
            .ok_or("runs is not a list")?
            .iter()
            .map(|run| match run.as_array().map(Vec::as_slice) {
                Some([s, f, l]) => match (s.as_i64(), f.as_i64(), l.as_i64()) {
                    (Some(stream_id), Some(first_seq), Some(last_seq)) if first_seq <= last_seq => {
                        Ok(SeqRun {
                            stream_id,
                            first_seq,
                            last_seq,
                        })
                    }
                    _ => Err("a run is not [stream, first seq, last seq]".to_owned()),
                },
                _ => Err("a run is not [stream, first seq, last seq]".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut batches = Vec::new();
        for batch in value["batches"].as_array().ok_or("batches is not a list")? {
            let leaves = match &batch["leaves"] {
                Value::Null => None,
                Value::String(text) => Some(
                    BASE64
                        .decode(text)
                        .map_err(|_| "a batch's leaves are not base64")?,
                ),
                _ => return Err("a batch's leaves are not base64".to_owned()),
            };
            batches.push(ManifestBatch {
                position: uint(batch, "position")?,
                entry: entry_from_json(&batch["entry"])?,
                leaves,
            });
        }
        let log_proof = match &value["log_proof"] {
            Value::Null => None,
            proof => Some(LogProof {
                start: uint(proof, "start")?,
                other_leaves: proof["other_leaves"]
                    .as_array()
                    .ok_or("other_leaves is not a list")?
                    .iter()
                    .map(|pair| match pair.as_array().map(Vec::as_slice) {
                        Some([at, leaf]) => Ok((
                            at.as_u64().ok_or("a position is not a count")?,
                            parse_hash(leaf)?,
                        )),
                        _ => Err("an entry of other_leaves is not [position, hash]".to_owned()),
                    })
                    .collect::<Result<Vec<_>, String>>()?,
                proof: parse_path(&proof["proof"])?,
            }),
        };
        Ok(Manifest {
            log: value["log"].as_str().map(str::to_owned),
            partition: text("partition")?,
            range: (
                parse_time(&value["range"]["start"], "range.start")?,
                parse_time(&value["range"]["end"], "range.end")?,
            ),
            archived_at: parse_time(&value["archived_at"], "archived_at")?,
            archive: ArchiveFile {
                name: archive["file"]
                    .as_str()
                    .ok_or("archive.file is not text")?
                    .to_owned(),
                sha256: parse_hash(&archive["sha256"])?,
                bytes: uint(archive, "bytes")?,
            },
            rows: uint(value, "rows")?,
            proven: uint(value, "proven")?,
            unproven: uint(value, "unproven")?,
            runs,
            batches,
            log_proof,
            checkpoint: value["checkpoint"].as_str().map(str::to_owned),
        })
    }

    /// Reads a manifest file's content.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        Self::from_json(&value)
    }
}

fn note_body(log: &str, partition: &str, manifest: &[u8]) -> String {
    use sha2::Digest;
    let digest = crate::hex::encode(&sha2::Sha256::digest(manifest));
    format!("{MANIFEST_NOTE}\n{log}\n{partition}\nsha256 {digest}\n")
}

/// The signed note that binds a manifest's bytes to the log's key.
pub fn sign_manifest(manifest: &Manifest, bytes: &[u8], key: &SigningKey) -> String {
    let log = manifest.log.as_deref().unwrap_or(key.name());
    sign_note(&note_body(log, &manifest.partition, bytes), key)
}

/// Why a manifest's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestSignatureError {
    /// The note is not signed by a key given, or is malformed.
    Note(NoteError),
    /// The note is signed, but for other bytes, another partition or another log.
    NotThisManifest,
}

impl std::fmt::Display for ManifestSignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestSignatureError::Note(e) => write!(f, "its signature: {e}"),
            ManifestSignatureError::NotThisManifest => {
                f.write_str("its signature is for another manifest")
            }
        }
    }
}

/// Checks that `note` is a signature, by one of `keys`, of exactly these manifest bytes.
pub fn check_manifest_signature(
    manifest: &Manifest,
    bytes: &[u8],
    note: &str,
    keys: &[VerifierKey],
) -> Result<(), ManifestSignatureError> {
    let (body, key) = open_note(note, keys).map_err(ManifestSignatureError::Note)?;
    let log = manifest.log.as_deref().unwrap_or(key.name());
    if log != key.name() || body != note_body(log, &manifest.partition, bytes) {
        return Err(ManifestSignatureError::NotThisManifest);
    }
    Ok(())
}

/// Whether a manifest is the log's own: `signature` (the `.manifest.sig` note, or the
/// retirement row's) signs exactly these bytes by one of `keys`. An unsigned manifest is
/// never the log's: whoever asks with keys gets a finding, never a pass.
pub fn manifest_is_signed(
    manifest: &Manifest,
    bytes: &[u8],
    signature: Option<&str>,
    keys: &[VerifierKey],
) -> Result<(), String> {
    match signature {
        None => Err("it is not signed".to_owned()),
        Some(note) => {
            check_manifest_signature(manifest, bytes, note, keys).map_err(|e| e.to_string())
        }
    }
}
