//! Checking an archive against its manifest, offline: the file's hash; each record's
//! leaf, recomputed from its line, against its batch (the batch's root rebuilt from the
//! archive's records, or from the manifest's leaves when the batch is only partly here);
//! each batch's entry in the log, by one range proof, up to the signed checkpoint; the
//! counts and (stream, seq) runs the manifest states. Retention runs the same check on
//! the file it just wrote, from disk, before it drops anything.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

use audit_layer::integrity::merkle::{root, verify_range, Hash};

use super::archive::{file_sha256, ArchiveLines, ArchivedRecord, Tallying};
use super::manifest::Manifest;
use crate::seal::{Checkpoint, VerifierKey};

/// What checking an archive found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Records read.
    pub rows: u64,
    /// Records proven by their batch and the log.
    pub proven: u64,
    /// Records no proof covers, as the manifest counts them.
    pub unproven: u64,
    /// Every difference, each naming the record or batch.
    pub findings: Vec<String>,
}

impl ArchiveReport {
    /// Whether nothing was found.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// A batch's leaves as the archive's records give them.
enum Leaves {
    /// Only some records are here: the manifest's leaves, and the seqs seen.
    Partial(HashMap<i64, Hash>, HashSet<i64>),
    /// All are here: the (seq, leaf) of each seen so far; `None` once checked.
    Full(Option<Vec<(i64, Hash)>>),
}

/// Checks the archive at `path` against `manifest`: the checkpoint's signature with
/// `keys` (when `None`, the checkpoint is read but its signature not checked), the rest
/// in full. Fails only when the file cannot be read.
pub fn check_archive(
    path: &Path,
    manifest: &Manifest,
    keys: Option<&[VerifierKey]>,
) -> io::Result<ArchiveReport> {
    let mut report = ArchiveReport::default();
    let findings = &mut report.findings;
    let (sha256, bytes) = file_sha256(path)?;
    if sha256 != manifest.archive.sha256 || bytes != manifest.archive.bytes {
        findings.push(format!(
            "the archive file is not the one the manifest describes (SHA-256 {}, {bytes} bytes; the manifest says {}, {} bytes)",
            crate::hex::encode(&sha256),
            crate::hex::encode(&manifest.archive.sha256),
            manifest.archive.bytes
        ));
    }
    let checkpoint = match (&manifest.checkpoint, keys) {
        (None, _) => None,
        (Some(note), Some(keys)) => match Checkpoint::open(note, keys) {
            Ok((checkpoint, _)) => Some(checkpoint),
            Err(e) => {
                findings.push(format!("the manifest's checkpoint: {e}"));
                None
            }
        },
        (Some(note), None) => Checkpoint::parse_unverified(note).ok(),
    };
    if !manifest.batches.is_empty() && checkpoint.is_none() && manifest.checkpoint.is_none() {
        findings.push("the manifest names batches but no checkpoint proves them".to_owned());
    }
    if let (Some(c), Some(log)) = (&checkpoint, &manifest.log) {
        if &c.origin != log {
            findings.push(format!(
                "the checkpoint is of log {:?}, the manifest of {log:?}",
                c.origin
            ));
        }
    }

    // Each stream's batches by first seq, to find a record's.
    let mut by_stream: HashMap<i64, Vec<(i64, i64, usize)>> = HashMap::new();
    let mut leaves = Vec::with_capacity(manifest.batches.len());
    for (at, batch) in manifest.batches.iter().enumerate() {
        let e = &batch.entry;
        by_stream
            .entry(e.stream_id)
            .or_default()
            .push((e.first_seq, e.last_seq, at));
        leaves.push(match &batch.leaves {
            None => Leaves::Full(Some(Vec::new())),
            Some(_) => match batch.stored_leaves() {
                Some(stored) => {
                    let hashes: Vec<Hash> = stored.iter().map(|(_, h)| *h).collect();
                    if root(&hashes) != e.root {
                        findings.push(format!(
                            "the manifest's leaves of batch {} (stream {}) do not hash to its root",
                            e.batch_id, e.stream_id
                        ));
                    }
                    Leaves::Partial(stored.into_iter().collect(), HashSet::new())
                }
                None => {
                    findings.push(format!(
                        "the manifest's leaves of batch {} (stream {}) are malformed",
                        e.batch_id, e.stream_id
                    ));
                    Leaves::Partial(HashMap::new(), HashSet::new())
                }
            },
        });
    }
    for batches in by_stream.values_mut() {
        batches.sort();
    }

    let (start, end) = (
        manifest.range.0.timestamp_micros(),
        manifest.range.1.timestamp_micros(),
    );
    let mut tally = Tallying::default();
    let mut lines = ArchiveLines::open(path)?;
    let mut encoding = Vec::with_capacity(1024);
    let mut number = 0u64;
    loop {
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            // A file cut short or changed: zstd says so.
            Err(e) => {
                findings.push(format!(
                    "the archive cannot be read past line {number}: {e}"
                ));
                break;
            }
        };
        number += 1;
        let record = match ArchivedRecord::parse(line) {
            Ok(record) => record,
            Err(e) => {
                findings.push(format!("line {number}: {e}"));
                continue;
            }
        };
        let stored = match record.stored() {
            Ok(stored) => stored,
            Err(e) => {
                findings.push(format!("record {}: {e}", record.id));
                continue;
            }
        };
        report.rows += 1;
        tally.add(record.id, stored.stream_id.zip(stored.seq));
        if stored.created_at_micros < start || stored.created_at_micros >= end {
            findings.push(format!(
                "record {} was created at {}, outside the partition's range",
                record.id, record.created_at
            ));
        }
        let (Some(stream_id), Some(seq)) = (stored.stream_id, stored.seq) else {
            report.unproven += 1;
            continue;
        };
        let batch = by_stream.get(&stream_id).and_then(|batches| {
            let at = batches.partition_point(|(first, _, _)| *first <= seq);
            at.checked_sub(1)
                .map(|i| batches[i])
                .filter(|(_, last, _)| seq <= *last)
        });
        let Some((_, _, at)) = batch else {
            if by_stream.contains_key(&stream_id) {
                // A stream written with integrity proves every record of it: one in none
                // of its batches is what `auditd verify` calls added.
                findings.push(format!(
                    "record {} (stream {stream_id}, seq {seq}) is in no committed batch of its stream",
                    record.id
                ));
            }
            report.unproven += 1;
            continue;
        };
        encoding.clear();
        stored.encode(&mut encoding);
        let leaf = audit_layer::integrity::merkle::leaf_hash(&encoding);
        let named = format!("record {} (stream {stream_id}, seq {seq})", record.id);
        report.proven += 1;
        match &mut leaves[at] {
            Leaves::Partial(expected, seen) => match expected.get(&seq) {
                _ if !seen.insert(seq) => findings.push(format!("{named} is in the archive twice")),
                Some(hash) if *hash == leaf => {}
                Some(_) => findings.push(format!("{named} changed")),
                None => findings.push(format!("{named} is in no committed batch")),
            },
            Leaves::Full(collected) => {
                let rows = manifest.batches[at].entry.rows;
                if let Some(list) = collected {
                    list.push((seq, leaf));
                    if list.len() == rows as usize {
                        finish_batch(manifest, at, list, findings);
                        *collected = None;
                    }
                } else {
                    findings.push(format!("{named} is one record more than its batch holds"));
                }
            }
        }
    }
    for (at, state) in leaves.iter_mut().enumerate() {
        if let Leaves::Full(Some(list)) = state {
            finish_batch(manifest, at, list, findings);
        }
    }

    // The batches' entries in the log, up to the checkpoint.
    match (&manifest.log_proof, &checkpoint) {
        (Some(proof), Some(checkpoint)) => {
            let mut run: Vec<(u64, Hash)> = manifest
                .batches
                .iter()
                .map(|b| (b.position, b.entry.leaf()))
                .chain(proof.other_leaves.iter().copied())
                .collect();
            run.sort_by_key(|(position, _)| *position);
            let consecutive = run
                .iter()
                .enumerate()
                .all(|(i, (position, _))| proof.start.checked_add(i as u64) == Some(*position));
            let hashes: Vec<Hash> = run.iter().map(|(_, h)| *h).collect();
            if !consecutive
                || !verify_range(
                    proof.start,
                    checkpoint.size,
                    &hashes,
                    &proof.proof,
                    &checkpoint.root,
                )
            {
                findings.push(format!(
                    "the batches' entries are not in the log at the checkpoint (size {}): the ledger entries or the proof were changed",
                    checkpoint.size
                ));
            }
        }
        (None, _) if manifest.batches.is_empty() => {}
        _ => findings.push("the batches have no proof in the log".to_owned()),
    }

    let tally = tally.finish();
    if tally.runs != manifest.runs {
        findings.push(
            "the records' (stream, seq) are not those the manifest lists: records were added or removed".to_owned(),
        );
    }
    if report.rows != manifest.rows
        || report.proven != manifest.proven
        || report.unproven != manifest.unproven
    {
        findings.push(format!(
            "the archive holds {} records ({} proven, {} unproven); the manifest says {} ({} proven, {} unproven)",
            report.rows, report.proven, report.unproven, manifest.rows, manifest.proven, manifest.unproven
        ));
    }
    Ok(report)
}

/// Checks a batch whose records are all in the archive: as many as it committed, with
/// distinct seqs in its range, hashing to its root.
fn finish_batch(
    manifest: &Manifest,
    at: usize,
    list: &mut [(i64, Hash)],
    findings: &mut Vec<String>,
) {
    let e = &manifest.batches[at].entry;
    list.sort_by_key(|(seq, _)| *seq);
    let distinct = list.windows(2).all(|w| w[0].0 != w[1].0);
    let hashes: Vec<Hash> = list.iter().map(|(_, h)| *h).collect();
    if list.len() != e.rows as usize {
        findings.push(format!(
            "batch {} (stream {}): {} of its {} records are in the archive",
            e.batch_id,
            e.stream_id,
            list.len(),
            e.rows
        ));
    } else if !distinct || root(&hashes) != e.root {
        findings.push(format!(
            "batch {} (stream {}): its records in the archive are not those committed (changed, swapped or copied)",
            e.batch_id, e.stream_id
        ));
    }
}
