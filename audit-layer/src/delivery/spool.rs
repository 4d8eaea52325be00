//! The durable spool: where batches wait on disk while PostgreSQL is down or too slow.
//!
//! Memory holds only so much. With a spool directory configured, a batch the writer cannot
//! commit is appended here instead of being held, and a replayer writes the spool back, in
//! order, once the database answers, including after the application restarts. While the
//! spool holds anything, new batches queue behind it, so records reach the table in the
//! order they were spooled.
//!
//! The spool is a directory of segment files (`<number>.spool`), each a sequence of frames:
//!
//! ```text
//! u32 little-endian  payload length
//! u32 little-endian  CRC-32 (IEEE) of the payload
//! payload            version 2: 0x02, stream_id and batch_id (i64), the record count
//!                    (u32), then per record its seq (i64) and its values and text
//!                    buffer as queued (`Pending::write_spooled`), all little-endian;
//!                    version 3, a batch sent under an idempotency key: 0x03, then as
//!                    version 2, then the key's length (u16), the key (UTF-8) and the
//!                    request's SHA-256 (32 bytes), so the key survives a restart too;
//!                    version 1 (earlier releases, still replayed): JSON
//!                    {"stream_id", "batch_id", "records": [{"seq", "log"}, ...]}
//! ```
//!
//! Each frame is fsynced before the writer counts its batch as spooled, so a spooled batch
//! survives a crash of the process or of the machine. A batch keeps its ledger key on disk:
//! if it did commit before the crash that interrupted its replay, replaying it again finds
//! its key in `audit_writer_batches` and skips it, so replay never writes a record twice.
//!
//! A frame that is cut short (a crash in the middle of an append) or whose checksum does not
//! match is never skipped silently: the segment is renamed `<number>.spool.corrupt`, kept
//! for inspection, counted, and reported at `error` level.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::copy::BatchKey;
use crate::queue::Pending;
use crate::queue::Queued;
use crate::record::AuditLog;
use crate::submit::IdempotencyKey;

const HEADER_BYTES: u64 = 8;

/// A batch read back from the spool.
pub(crate) struct SpooledBatch {
    pub(crate) key: BatchKey,
    pub(crate) records: Vec<Queued>,
    pub(crate) claim: Option<IdempotencyKey>,
    pub(crate) frame_bytes: u64,
}

struct Segment {
    number: u64,
    path: PathBuf,
    bytes: u64,
}

/// The spool directory, owned by the writer thread.
pub(crate) struct Spool {
    /// Held for the spool's life: a second process opening the directory is refused.
    _lock: File,
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; the last one is appended to.
    segments: VecDeque<Segment>,
    append: Option<File>,
    /// Where the next frame to replay starts in the oldest segment.
    read_offset: u64,
    total_bytes: u64,
}

/// What reading the spool found wrong, for the report.
pub(crate) struct Corruption {
    pub(crate) segment: PathBuf,
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

impl Spool {
    /// Opens (creating it if needed) a spool directory, finding what an earlier run left.
    pub(crate) fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::other(
                    "another process is using this spool directory; give each process its own",
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push(Segment {
                number,
                path: entry.path(),
                bytes: entry.metadata()?.len(),
            });
        }
        segments.sort_by_key(|s| s.number);
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        Ok(Spool {
            _lock: lock,
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: segment_bytes.max(1),
            segments: segments.into(),
            append: None,
            read_offset: 0,
            total_bytes,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes on disk now.
    pub(crate) fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Appends a batch and fsyncs it. `Ok(false)` when it would not fit in the limit.
    pub(crate) fn append(
        &mut self,
        key: BatchKey,
        records: &[Queued],
        claim: Option<&IdempotencyKey>,
    ) -> io::Result<bool> {
        let payload = encode(key, records, claim);
        // A frame's length is a u32: a batch beyond it stays in memory instead.
        if u32::try_from(payload.len()).is_err() {
            return Ok(false);
        }
        let frame_bytes = HEADER_BYTES + payload.len() as u64;
        if self.total_bytes + frame_bytes > self.max_bytes {
            return Ok(false);
        }
        let needs_segment = match (self.segments.back(), &self.append) {
            (Some(last), Some(_)) => last.bytes >= self.segment_bytes,
            _ => true,
        };
        if needs_segment {
            let number = self.segments.back().map_or(1, |s| s.number + 1);
            let path = self.dir.join(format!("{number:020}.spool"));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)?;
            // The new file's name must survive a crash too.
            File::open(&self.dir)?.sync_all()?;
            self.segments.push_back(Segment {
                number,
                path,
                bytes: 0,
            });
            self.append = Some(file);
        }
        let (Some(file), Some(segment)) = (self.append.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("spool segment vanished"));
        };
        let mut frame = Vec::with_capacity(frame_bytes as usize);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let appended = file.write_all(&frame).and_then(|()| file.sync_data());
        if let Err(e) = appended {
            // What reached the file of this frame must not stay before the next one, or
            // replay would find a torn frame and set aside every batch after it: cut it
            // off, and start the next append in a new segment.
            let _ = file.set_len(segment.bytes);
            self.append = None;
            return Err(e);
        }
        segment.bytes += frame_bytes;
        self.total_bytes += frame_bytes;
        Ok(true)
    }

    /// The oldest batch not yet replayed. Segments found damaged are set aside and
    /// reported through `corrupt`; reading goes on with the next one.
    pub(crate) fn peek(
        &mut self,
        mut corrupt: impl FnMut(Corruption),
    ) -> io::Result<Option<SpooledBatch>> {
        loop {
            let Some(oldest) = self.segments.front() else {
                return Ok(None);
            };
            let being_appended = self.segments.len() == 1 && self.append.is_some();
            if self.read_offset >= oldest.bytes {
                if being_appended {
                    // Everything replayed: start afresh, so an empty spool has no files.
                    self.append = None;
                }
                self.retire_oldest()?;
                continue;
            }
            match read_frame(&oldest.path, self.read_offset, oldest.bytes) {
                Ok(batch) => return Ok(Some(batch)),
                Err(reason) => {
                    let report = Corruption {
                        segment: oldest.path.clone(),
                        offset: self.read_offset,
                        reason,
                    };
                    if being_appended {
                        self.append = None;
                    }
                    self.set_aside_oldest()?;
                    corrupt(report);
                }
            }
        }
    }

    /// Marks the batch last returned by `peek` (its `frame_bytes`) as written.
    pub(crate) fn consume(&mut self, frame_bytes: u64) {
        self.read_offset += frame_bytes;
    }

    fn retire_oldest(&mut self) -> io::Result<()> {
        if let Some(segment) = self.segments.pop_front() {
            fs::remove_file(&segment.path)?;
            self.total_bytes -= segment.bytes;
        }
        self.read_offset = 0;
        Ok(())
    }

    fn set_aside_oldest(&mut self) -> io::Result<()> {
        if let Some(segment) = self.segments.pop_front() {
            let mut aside = segment.path.clone().into_os_string();
            aside.push(".corrupt");
            fs::rename(&segment.path, aside)?;
            self.total_bytes -= segment.bytes;
        }
        self.read_offset = 0;
        Ok(())
    }
}

fn read_frame(path: &Path, offset: u64, size: u64) -> Result<SpooledBatch, String> {
    if size - offset < HEADER_BYTES {
        return Err(format!(
            "torn frame: {} bytes where a header needs {HEADER_BYTES}",
            size - offset
        ));
    }
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot seek: {e}"))?;
    let mut header = [0u8; HEADER_BYTES as usize];
    file.read_exact(&mut header)
        .map_err(|e| format!("cannot read the header: {e}"))?;
    let length = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length > size - offset - HEADER_BYTES {
        return Err(format!(
            "torn frame: {length} bytes announced, {} present",
            size - offset - HEADER_BYTES
        ));
    }
    let mut payload = vec![0u8; length as usize];
    file.read_exact(&mut payload)
        .map_err(|e| format!("cannot read the payload: {e}"))?;
    if crc32fast::hash(&payload) != checksum {
        return Err("checksum mismatch".to_owned());
    }
    let (key, records, claim) = decode(&payload).ok_or("the payload is not a spooled batch")?;
    Ok(SpooledBatch {
        key,
        records,
        claim,
        frame_bytes: HEADER_BYTES + length,
    })
}

/// The first byte of a binary payload (version 2). A JSON payload (version 1, written by
/// earlier versions) starts with `{`, so a spool written before an upgrade still replays.
const BINARY_PAYLOAD: u8 = 2;

/// The first byte of a binary payload with an idempotency key (version 3). Batches without
/// one are still written as version 2, which earlier releases replay.
const KEYED_PAYLOAD: u8 = 3;

/// The frame payload, version 2 (or 3 with a key): the batch key, then each record's seq
/// and binary form (its text buffer as it is queued), so that spooling costs about a copy
/// of the record and keeps up with a burst.
fn encode(key: BatchKey, records: &[Queued], claim: Option<&IdempotencyKey>) -> Vec<u8> {
    let text: usize = records.iter().map(|r| r.log.text_len()).sum();
    let mut out = Vec::with_capacity(21 + records.len() * 80 + text);
    out.push(match claim {
        Some(_) => KEYED_PAYLOAD,
        None => BINARY_PAYLOAD,
    });
    out.extend_from_slice(&key.stream_id.to_le_bytes());
    out.extend_from_slice(&key.batch_id.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for record in records {
        out.extend_from_slice(&record.seq.to_le_bytes());
        record.log.write_spooled(&mut out);
    }
    if let Some(claim) = claim {
        // IdempotencyKey::new caps keys far below u16::MAX.
        out.extend_from_slice(&(claim.key.len() as u16).to_le_bytes());
        out.extend_from_slice(claim.key.as_bytes());
        out.extend_from_slice(&claim.digest);
    }
    out
}

type Decoded = (BatchKey, Vec<Queued>, Option<IdempotencyKey>);

fn decode(payload: &[u8]) -> Option<Decoded> {
    match payload.first() {
        Some(&BINARY_PAYLOAD) => {
            let (key, records, rest) = decode_binary(&payload[1..])?;
            rest.is_empty().then_some((key, records, None))
        }
        Some(&KEYED_PAYLOAD) => {
            let (key, records, rest) = decode_binary(&payload[1..])?;
            let (length, rest) = rest.split_first_chunk::<2>()?;
            let length = usize::from(u16::from_le_bytes(*length));
            let (text, rest) = (rest.get(..length)?, rest.get(length..)?);
            let digest: [u8; 32] = rest.try_into().ok()?;
            let claim = IdempotencyKey::new(std::str::from_utf8(text).ok()?, digest)?;
            Some((key, records, Some(claim)))
        }
        Some(b'{') => decode_json(payload).map(|(key, records)| (key, records, None)),
        _ => None,
    }
}

/// The batch key and records of a binary payload, and what follows them.
fn decode_binary(mut rest: &[u8]) -> Option<(BatchKey, Vec<Queued>, &[u8])> {
    let int = |rest: &mut &[u8]| {
        let (head, tail) = rest.split_first_chunk::<8>()?;
        *rest = tail;
        Some(i64::from_le_bytes(*head))
    };
    let key = BatchKey {
        stream_id: int(&mut rest)?,
        batch_id: int(&mut rest)?,
    };
    let (count, tail) = rest.split_first_chunk::<4>()?;
    rest = tail;
    let count = u32::from_le_bytes(*count) as usize;
    // Each record takes more than 40 bytes: a count beyond that is not ours.
    let mut records = Vec::with_capacity(count.min(rest.len() / 40));
    for _ in 0..count {
        let seq = int(&mut rest)?;
        let (log, tail) = Pending::read_spooled(rest)?;
        rest = tail;
        records.push(Queued { seq, log });
    }
    Some((key, records, rest))
}

/// Version 1 payloads: JSON.
fn decode_json(payload: &[u8]) -> Option<(BatchKey, Vec<Queued>)> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let key = BatchKey {
        stream_id: value.get("stream_id")?.as_i64()?,
        batch_id: value.get("batch_id")?.as_i64()?,
    };
    let records = value
        .get("records")?
        .as_array()?
        .iter()
        .map(|r| {
            Some(Queued {
                seq: r.get("seq")?.as_i64()?,
                log: Pending::from_log(AuditLog::from_json(r.get("log")?)?),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((key, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_seq: i64, n: i64) -> Vec<Queued> {
        (first_seq..first_seq + n)
            .map(|seq| Queued {
                seq,
                log: Pending::from_log(AuditLog::new("u", "e", format!("record {seq}"))),
            })
            .collect()
    }

    fn key(batch_id: i64) -> BatchKey {
        BatchKey {
            stream_id: 7,
            batch_id,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spool-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn drain(spool: &mut Spool, corrupt: &mut Vec<String>) -> Vec<i64> {
        let mut seqs = Vec::new();
        while let Some(b) = spool.peek(|c| corrupt.push(c.reason)).unwrap() {
            seqs.extend(b.records.iter().map(|r| r.seq));
            spool.consume(b.frame_bytes);
        }
        seqs
    }

    #[test]
    fn a_spooled_record_comes_back_with_every_field() {
        use crate::queue::{EventTime, TextColumns};
        use crate::record::Severity;
        let full = Pending::new(
            TextColumns {
                username: "alice",
                event_type: "onboarding",
                message: "Device \"edge\" onboarded\n",
                resource_type: Some("device"),
                resource_id: Some("dev-1"),
                resource_name: None,
                // Duplicate keys, as span and event metadata produce: the last wins.
                metadata: Some(&[r#"{"site":"ams","attempts":3,"site":"fra1","_fixups":["x"]}"#]),
            },
            Some(42),
            Some("2001:db8::1".parse().unwrap()),
            Severity::Critical,
            EventTime::now(),
        );
        let bare = Pending::from_log(AuditLog::new("u", "e", ""));
        let records = vec![Queued { seq: 1, log: full }, Queued { seq: 2, log: bare }];
        let (key_back, back, claim) = decode(&encode(key(9), &records, None)).expect("decodes");
        assert_eq!((key_back, claim), (key(9), None));
        assert_eq!(back.len(), 2);
        for (original, read) in records.iter().zip(&back) {
            assert_eq!(read.seq, original.seq);
            // Byte for byte, metadata text included (its hash is computed from it).
            assert_eq!(read.log, original.log);
        }
        assert_eq!(back[0].log.to_log().metadata["site"], "fra1");
        // Cut anywhere, or with a byte changed in a length, it is refused, never misread.
        let claim = IdempotencyKey::new("billing:retry-7", [7; 32]).unwrap();
        for claim in [None, Some(&claim)] {
            let payload = encode(key(9), &records, claim);
            for cut in 0..payload.len() {
                assert!(decode(&payload[..cut]).is_none(), "cut at {cut}");
            }
            let mut longer = payload.clone();
            longer.push(0);
            assert!(decode(&longer).is_none());
        }
    }

    #[test]
    fn a_batch_sent_under_an_idempotency_key_keeps_it_on_disk() {
        let dir = temp_dir("claim");
        let claim = IdempotencyKey::new("billing:retry-7", [7; 32]).unwrap();
        let mut spool = Spool::open(&dir, 1 << 30, 1 << 20).unwrap();
        assert!(spool.append(key(1), &batch(1, 2), Some(&claim)).unwrap());
        assert!(spool.append(key(2), &batch(3, 2), None).unwrap());
        drop(spool);
        let mut spool = Spool::open(&dir, 1 << 30, 1 << 20).unwrap();
        let first = spool.peek(|_| panic!("no corruption")).unwrap().unwrap();
        assert_eq!((first.key, first.claim.as_ref()), (key(1), Some(&claim)));
        spool.consume(first.frame_bytes);
        let second = spool.peek(|_| panic!("no corruption")).unwrap().unwrap();
        assert_eq!((second.key, second.claim), (key(2), None));
    }

    #[test]
    fn a_spool_written_by_an_earlier_release_in_json_still_replays() {
        let v1 = br#"{"stream_id":7,"batch_id":3,"records":[{"seq":5,"log":{"created_at":"2026-11-01T10:00:00.000001Z","username":"alice","user_id":null,"event_type":"login","severity":"warning","message":"Login failed","ip_address":"192.0.2.7","resource_type":null,"resource_id":null,"resource_name":null,"metadata":{"attempts":3}}}]}"#;
        let (key_back, back, _) = decode(v1).expect("a version 1 payload decodes");
        assert_eq!(key_back, key(3));
        let log = back[0].log.to_log();
        assert_eq!(
            (
                back[0].seq,
                log.username.as_str(),
                log.metadata["attempts"].as_i64()
            ),
            (5, "alice", Some(3))
        );
        assert_eq!(log.ip_address, Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn batches_come_back_in_order_across_segments_and_reopening() {
        let dir = temp_dir("order");
        let mut spool = Spool::open(&dir, 1 << 30, 2000).unwrap();
        for i in 0..10 {
            assert!(spool.append(key(i), &batch(i * 5 + 1, 5), None).unwrap());
        }
        assert!(spool.segments.len() > 1, "small segments rotate");
        drop(spool);
        let mut spool = Spool::open(&dir, 1 << 30, 2000).unwrap();
        let mut corrupt = Vec::new();
        assert_eq!(
            drain(&mut spool, &mut corrupt),
            (1..=50).collect::<Vec<_>>()
        );
        assert!(corrupt.is_empty());
        assert!(spool.is_empty());
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            left,
            vec!["lock".to_owned()],
            "replayed segments are removed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_spool_directory_serves_one_process_at_a_time() {
        let dir = temp_dir("lock");
        let first = Spool::open(&dir, 1 << 20, 1 << 20).unwrap();
        let second = Spool::open(&dir, 1 << 20, 1 << 20);
        assert!(second.is_err(), "a second opener was let in");
        drop(first);
        assert!(
            Spool::open(&dir, 1 << 20, 1 << 20).is_ok(),
            "the lock is released on drop"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_size_limit_refuses_what_does_not_fit() {
        let dir = temp_dir("limit");
        let mut spool = Spool::open(&dir, 3000, 1 << 20).unwrap();
        let mut accepted = 0;
        while spool.append(key(accepted), &batch(1, 5), None).unwrap() {
            accepted += 1;
        }
        assert!(accepted > 0 && spool.bytes() <= 3000);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_or_damaged_segment_is_reported_and_set_aside_never_skipped_silently() {
        let dir = temp_dir("torn");
        let mut spool = Spool::open(&dir, 1 << 30, 1 << 20).unwrap();
        spool.append(key(1), &batch(1, 3), None).unwrap();
        spool.append(key(2), &batch(4, 3), None).unwrap();
        drop(spool);
        // A crash in the middle of the second append.
        let path = dir.join(format!("{:020}.spool", 1));
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let mut spool = Spool::open(&dir, 1 << 30, 1 << 20).unwrap();
        let mut corrupt = Vec::new();
        assert_eq!(drain(&mut spool, &mut corrupt), vec![1, 2, 3]);
        assert_eq!(corrupt.len(), 1);
        assert!(corrupt[0].starts_with("torn frame"), "{corrupt:?}");
        assert!(dir.join(format!("{:020}.spool.corrupt", 1)).exists());
        drop(spool);

        // A flipped bit in a complete frame.
        let mut spool = Spool::open(&dir, 1 << 30, 1 << 20).unwrap();
        spool.append(key(3), &batch(7, 3), None).unwrap();
        drop(spool);
        let path = dir.join(format!("{:020}.spool", 1));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0x01;
        fs::write(&path, bytes).unwrap();
        let mut spool = Spool::open(&dir, 1 << 30, 1 << 20).unwrap();
        let mut corrupt = Vec::new();
        assert_eq!(drain(&mut spool, &mut corrupt), Vec::<i64>::new());
        assert_eq!(corrupt, vec!["checksum mismatch".to_owned()]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
