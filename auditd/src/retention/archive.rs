//! The archive file of a retired partition: zstd-compressed NDJSON, one record a line
//! with every stored value, so that ordinary tools read it without this project
//! (`zstdcat FILE | jq`, DuckDB's `read_json('FILE')`), and so that each record's hash
//! can be recomputed from its line (`metadata` is the text `jsonb` prints, kept byte
//! for byte).
//!
//! Written from one streaming query (the export's path, `query::stream`), compressed and
//! hashed on a thread of its own, under a temporary name, then made durable (the file and
//! its directory synced) and renamed: a file under its final name is whole.

use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use audit_layer::integrity::merkle::Hash;
use audit_layer::integrity::{stored_record, StoredRecord, STORED_RECORD_COLUMNS};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::plan::Partition;
use crate::query::records::write_stored_fields;
use crate::query::stream::{stream_rows, ChunkSink, Stopped};

/// The archive's file name ends so.
pub const ARCHIVE_SUFFIX: &str = ".ndjson.zst";
/// zstd's default level: about 4× smaller than the NDJSON, faster than PostgreSQL sends.
const ZSTD_LEVEL: i32 = 3;

/// A run of consecutive seqs of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeqRun {
    /// The stream.
    pub stream_id: i64,
    /// The first seq.
    pub first_seq: i64,
    /// The last seq (inclusive).
    pub last_seq: i64,
}

/// Merges seqs into runs: sorted, adjacent and overlapping ones joined.
pub fn merge_runs(mut runs: Vec<SeqRun>) -> Vec<SeqRun> {
    runs.sort();
    let mut merged: Vec<SeqRun> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(last)
                if last.stream_id == run.stream_id
                    && run.first_seq <= last.last_seq.saturating_add(1) =>
            {
                last.last_seq = last.last_seq.max(run.last_seq);
            }
            _ => merged.push(run),
        }
    }
    merged
}

/// Whether (stream, seq) is in one of `runs` (merged, sorted).
pub fn in_runs(runs: &[SeqRun], stream_id: i64, seq: i64) -> bool {
    let at = runs.partition_point(|r| (r.stream_id, r.first_seq) <= (stream_id, seq));
    at.checked_sub(1)
        .map(|i| runs[i])
        .is_some_and(|r| r.stream_id == stream_id && seq <= r.last_seq)
}

/// The files of one archive: its records, its manifest beside it, and the manifest's
/// signature beside that. One naming, for the run that writes them and for whoever
/// checks or restores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePaths {
    /// `<stem>.ndjson.zst`.
    pub archive: PathBuf,
    /// `<stem>.manifest.json`.
    pub manifest: PathBuf,
    /// `<stem>.manifest.sig`.
    pub signature: PathBuf,
}

impl ArchivePaths {
    /// The files of the archive `stem` in `dir`.
    pub fn new(dir: &Path, stem: &str) -> Self {
        ArchivePaths {
            archive: dir.join(format!("{stem}{ARCHIVE_SUFFIX}")),
            manifest: dir.join(format!("{stem}.manifest.json")),
            signature: dir.join(format!("{stem}.manifest.sig")),
        }
    }

    /// The files of the archive at `path`; `None` when its name is not an archive's.
    pub fn of_archive(path: &Path) -> Option<Self> {
        let stem = path.file_name()?.to_str()?.strip_suffix(ARCHIVE_SUFFIX)?;
        Some(Self::new(path.parent().unwrap_or(Path::new("")), stem))
    }
}

/// What the rows of an archive add up to: counted while writing, and again from the
/// file when it is checked, and from a detached partition before it is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records.
    pub rows: u64,
    /// The sum of their ids: with `rows`, tells a partition that gained a late record
    /// after it was archived.
    pub id_sum: i128,
    /// Records of no stream (not written by audit-layer): in no proof.
    pub streamless: u64,
    /// The (stream, seq) of the others, as merged runs.
    pub runs: Vec<SeqRun>,
}

/// Gathers a [`Tally`] one record at a time.
#[derive(Default)]
pub struct Tallying {
    tally: Tally,
    open: Option<SeqRun>,
    /// How many runs there were after the last merge: the next merge waits until there
    /// are twice as many, so that merging costs O(n log n) in all, however many streams.
    merged: usize,
}

impl Tallying {
    /// Counts one record.
    pub fn add(&mut self, id: i64, stream: Option<(i64, i64)>) {
        self.tally.rows += 1;
        self.tally.id_sum += i128::from(id);
        let Some((stream_id, seq)) = stream else {
            self.tally.streamless += 1;
            return;
        };
        match &mut self.open {
            Some(run) if run.stream_id == stream_id && run.last_seq.checked_add(1) == Some(seq) => {
                run.last_seq = seq;
            }
            open => {
                if let Some(done) = open.replace(SeqRun {
                    stream_id,
                    first_seq: seq,
                    last_seq: seq,
                }) {
                    self.tally.runs.push(done);
                }
                // Records of concurrent batches interleave in the heap: merge now and then
                // so that the runs stay few.
                if self.tally.runs.len() >= (1 << 16).max(2 * self.merged) {
                    self.tally.runs = merge_runs(std::mem::take(&mut self.tally.runs));
                    self.merged = self.tally.runs.len();
                }
            }
        }
    }

    /// The tally, runs merged.
    pub fn finish(mut self) -> Tally {
        self.tally.runs.extend(self.open.take());
        self.tally.runs = merge_runs(std::mem::take(&mut self.tally.runs));
        self.tally
    }
}

/// An archive written and made durable.
#[derive(Debug, Clone)]
pub struct Written {
    /// Its path.
    pub path: PathBuf,
    /// The SHA-256 of the file.
    pub sha256: Hash,
    /// Its size in bytes.
    pub bytes: u64,
    /// What its records add up to.
    pub tally: Tally,
}

/// Why an archive could not be written.
#[derive(Debug)]
pub enum ArchiveError {
    /// Reading the partition failed.
    Database(tokio_postgres::Error),
    /// Writing the file failed (a directory that is not writable, a full disk).
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveError::Database(e) => write!(f, "cannot read the partition: {e}"),
            ArchiveError::Io(path, e) => write!(f, "cannot write {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for ArchiveError {}

/// The query that reads a table's records for an archive: `table` is a partition's
/// quoted name ([`Partition::table`]), never text from outside.
fn archive_sql(table: &str) -> String {
    format!("SELECT id, tx_id, {STORED_RECORD_COLUMNS} FROM ONLY {table}")
}

/// Appends a row read with [`archive_sql`] as one archive line, and counts it.
pub fn write_line(
    out: &mut Vec<u8>,
    row: &tokio_postgres::Row,
    tally: &mut Tallying,
) -> Result<(), tokio_postgres::Error> {
    let id: i64 = row.try_get(0)?;
    let tx_id: i64 = row.try_get(1)?;
    let record = stored_record(row)?;
    write_stored_fields(out, id, &record);
    let mut number = itoa::Buffer::new();
    for (name, value) in [
        (&b",\"stream_id\":"[..], record.stream_id),
        (&b",\"seq\":"[..], record.seq),
        (&b",\"tx_id\":"[..], Some(tx_id)),
    ] {
        out.extend_from_slice(name);
        match value {
            Some(n) => out.extend_from_slice(number.format(n).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"}\n");
    tally.add(id, record.stream_id.zip(record.seq));
    Ok(())
}

/// Writes every record of `partition` (attached or not) to `path`, compressed, hashed,
/// synced, and renamed into place only when whole.
pub async fn write_archive(
    client: &Client,
    partition: &Partition,
    path: &Path,
) -> Result<Written, ArchiveError> {
    let table = partition.table();
    let partial = partial_path(path);
    let (chunks, received) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let target = partial.clone();
    let compressing = std::thread::Builder::new()
        .name("auditd-archive".to_owned())
        .spawn(move || compress(&target, received))
        .map_err(|e| ArchiveError::Io(partial.clone(), e))?;
    let mut tally = Tallying::default();
    let mut sink = ThreadSink(chunks);
    let (_, streamed) = stream_rows(
        client,
        &archive_sql(&table),
        &[],
        b"",
        |out, row| write_line(out, row, &mut tally),
        &mut sink,
    )
    .await;
    // Closing the channel ends the file; the thread says how writing went.
    drop(sink);
    let compressed = compressing
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the compressing thread panicked")));
    let result = match (streamed, compressed) {
        (Ok(()), Ok((sha256, bytes))) => rename_durably(&partial, path)
            .map_err(|e| ArchiveError::Io(path.to_owned(), e))
            .map(|()| Written {
                path: path.to_owned(),
                sha256,
                bytes,
                tally: tally.finish(),
            }),
        (Err(Stopped::Query(e) | Stopped::Row(e)), _) => Err(ArchiveError::Database(e)),
        (_, Err(e)) => Err(ArchiveError::Io(partial.clone(), e)),
        // The sink stops only when the thread did, which says why; it cannot have
        // succeeded then.
        (Err(Stopped::Sink(())), Ok(_)) => Err(ArchiveError::Io(
            partial.clone(),
            io::Error::other("the compressing thread stopped early"),
        )),
    };
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Renames a synced file into place and syncs its directory, so that the name survives
/// a crash.
fn rename_durably(partial: &Path, path: &Path) -> io::Result<()> {
    fs::rename(partial, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    File::open(dir.unwrap_or(Path::new("."))).and_then(|d| d.sync_all())
}

/// Writes a small file so that it survives a crash: under a temporary name, synced,
/// renamed into place, its directory synced. Never over an existing file.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the file exists",
        ));
    }
    let partial = partial_path(path);
    let written = File::options()
        .write(true)
        .create_new(true)
        .open(&partial)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| rename_durably(&partial, path));
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written
}

struct ThreadSink(tokio::sync::mpsc::Sender<Vec<u8>>);

impl ChunkSink for ThreadSink {
    type Error = ();
    async fn send(&mut self, chunk: Vec<u8>) -> Result<(), ()> {
        // Waits while the thread is four chunks behind: the disk is the slower.
        // An error: the thread stopped, and says why when joined.
        self.0.send(chunk).await.map_err(|_| ())
    }
}

/// The compressing thread: every chunk into zstd, into the file, hashing what is written.
fn compress(
    path: &Path,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> io::Result<(Hash, u64)> {
    let file = File::options().write(true).create_new(true).open(path)?;
    let hashing = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::stream::write::Encoder::new(hashing, ZSTD_LEVEL)?;
    while let Some(chunk) = chunks.blocking_recv() {
        encoder.write_all(&chunk)?;
    }
    let mut hashing = encoder.finish()?;
    hashing.flush()?;
    let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((hashing.hasher.finalize().into(), hashing.bytes))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The SHA-256 and size of a file, read through.
pub fn file_sha256(path: &Path) -> io::Result<(Hash, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hasher.finalize().into(), bytes))
}

/// One line of an archive, read back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedRecord<'a> {
    /// The row's id.
    pub id: i64,
    /// RFC 3339.
    #[serde(borrow)]
    pub created_at: Cow<'a, str>,
    #[serde(borrow)]
    username: Cow<'a, str>,
    user_id: Option<i64>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    severity: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow)]
    ip_address: Option<Cow<'a, str>>,
    #[serde(borrow)]
    resource_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    resource_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    resource_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    /// Its stream.
    pub stream_id: Option<i64>,
    /// Its place in the stream.
    pub seq: Option<i64>,
    /// The transaction that wrote it.
    pub tx_id: i64,
}

impl<'a> ArchivedRecord<'a> {
    /// Reads one line.
    pub fn parse(line: &'a str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| format!("not an archive line: {e}"))
    }

    /// The stored values, as the record's hash covers them.
    pub fn stored(&self) -> Result<StoredRecord<'_>, String> {
        let created_at = chrono::DateTime::parse_from_rfc3339(&self.created_at)
            .map_err(|_| "created_at is not RFC 3339")?
            .timestamp_micros();
        let (ip_address, ip_prefix) = match self.ip_address.as_deref() {
            None => (None, None),
            Some(text) => parse_inet(text).ok_or("ip_address is not an address")?,
        };
        Ok(StoredRecord {
            stream_id: self.stream_id,
            seq: self.seq,
            created_at_micros: created_at,
            username: &self.username,
            user_id: self.user_id,
            event_type: &self.event_type,
            severity: &self.severity,
            message: &self.message,
            ip_address,
            ip_prefix,
            resource_type: self.resource_type.as_deref(),
            resource_id: self.resource_id.as_deref(),
            resource_name: self.resource_name.as_deref(),
            metadata: self.metadata.map(RawValue::get),
        })
    }
}

/// `192.0.2.1` or `192.0.2.0/24`, as [`write_stored_fields`] writes an `inet`: the
/// prefix only when shorter than the address.
fn parse_inet(text: &str) -> Option<(Option<IpAddr>, Option<u8>)> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, bits)) => (address, Some(bits.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let ip: IpAddr = address.parse().ok()?;
    let full = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        Some(bits) if bits >= full => None,
        prefix => Some((Some(ip), prefix)),
    }
}

/// The longest line read back: far beyond what a record holds (the layer caps a message
/// at 64 KiB), well below what would exhaust memory.
const MAX_LINE_BYTES: u64 = 64 << 20;

/// Reads an archive's lines, decompressing as it goes.
pub struct ArchiveLines {
    reader: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
    line: String,
}

impl ArchiveLines {
    /// Opens an archive.
    pub fn open(path: &Path) -> io::Result<Self> {
        let decoder = zstd::stream::read::Decoder::new(File::open(path)?)?;
        Ok(ArchiveLines {
            reader: BufReader::with_capacity(1 << 20, decoder),
            line: String::new(),
        })
    }

    /// The next line (without its newline), or `None` at the end. A line longer than
    /// any record can be (a file made to exhaust memory) is an error.
    pub fn next_line(&mut self) -> io::Result<Option<&str>> {
        self.line.clear();
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES + 1)
            .read_line(&mut self.line)?;
        if read == 0 {
            return Ok(None);
        }
        if read as u64 > MAX_LINE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a line longer than any record can be",
            ));
        }
        if self.line.ends_with('\n') {
            self.line.pop();
        }
        Ok(Some(&self.line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_across_interleaved_batches() {
        let mut tallying = Tallying::default();
        for (id, seq) in [(1, 1), (2, 2), (5, 5), (3, 3), (4, 4), (6, 6), (9, 9)] {
            tallying.add(id, Some((7, seq)));
        }
        tallying.add(10, None);
        tallying.add(11, Some((8, 1)));
        let tally = tallying.finish();
        assert_eq!(tally.rows, 9);
        assert_eq!(tally.streamless, 1);
        assert_eq!(tally.id_sum, (1..=6).sum::<i128>() + 9 + 10 + 11);
        let runs: Vec<_> = tally
            .runs
            .iter()
            .map(|r| (r.stream_id, r.first_seq, r.last_seq))
            .collect();
        assert_eq!(runs, [(7, 1, 6), (7, 9, 9), (8, 1, 1)]);
    }

    #[test]
    fn an_inet_reads_back_as_it_is_stored() {
        assert_eq!(
            parse_inet("192.0.2.1"),
            Some((Some("192.0.2.1".parse().unwrap()), None))
        );
        assert_eq!(
            parse_inet("10.0.0.0/8"),
            Some((Some("10.0.0.0".parse().unwrap()), Some(8)))
        );
        assert_eq!(
            parse_inet("2001:db8::/32"),
            Some((Some("2001:db8::".parse().unwrap()), Some(32)))
        );
        // A full-length prefix is never written: a line that has one was not ours.
        assert_eq!(parse_inet("192.0.2.1/32"), None);
        assert_eq!(parse_inet("192.0.2.1/x"), None);
        assert_eq!(parse_inet("not an address"), None);
    }
}
