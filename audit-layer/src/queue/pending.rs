//! A record as the layer queues it: every text column and the metadata in one buffer.
//!
//! The emitting thread pays for each allocation twice: once to make it, and once more when
//! the writer thread frees it, because glibc then takes the emitting thread's arena lock.
//! So a queued record is one buffer, whatever its number of columns, reused once the writer
//! is done with it ([`recycle`]), and its metadata is JSON text the writer sends to `COPY`,
//! and to the spool, as it is. The public [`AuditLog`] is built from it only for a record
//! PostgreSQL refused.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::recycle;
use crate::record::{AuditLog, Severity};

/// The text parts of a [`Pending`] record, borrowed, in the order they are stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextColumns<'a> {
    pub(crate) username: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) message: &'a str,
    pub(crate) resource_type: Option<&'a str>,
    pub(crate) resource_id: Option<&'a str>,
    pub(crate) resource_name: Option<&'a str>,
    /// A JSON object's text, given in pieces that are concatenated as they are.
    pub(crate) metadata: Option<&'a [&'a str]>,
}

/// Where each text part ends in [`Pending::text`].
const PARTS: usize = 7;
const USERNAME: usize = 0;
const EVENT_TYPE: usize = 1;
const MESSAGE: usize = 2;
const RESOURCE_TYPE: usize = 3;
const RESOURCE_ID: usize = 4;
const RESOURCE_NAME: usize = 5;
const METADATA: usize = 6;

/// A record on its way to the writer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    /// The text parts, back to back.
    text: String,
    ends: [usize; PARTS],
    /// Which optional parts are present (bit per part index).
    present: u8,
    pub(crate) user_id: Option<i64>,
    pub(crate) ip_address: Option<IpAddr>,
    pub(crate) severity: Severity,
    pub(crate) created_at: EventTime,
}

impl Pending {
    /// A record from its columns; the text parts are copied into one buffer, a reused one
    /// when there is one (see [`recycle`]).
    pub(crate) fn new(
        columns: TextColumns<'_>,
        user_id: Option<i64>,
        ip_address: Option<IpAddr>,
        severity: Severity,
        created_at: EventTime,
    ) -> Pending {
        let metadata = columns.metadata.unwrap_or(&[]);
        let optional = [
            columns.resource_type,
            columns.resource_id,
            columns.resource_name,
        ];
        let len = columns.username.len()
            + columns.event_type.len()
            + columns.message.len()
            + optional.iter().flatten().map(|s| s.len()).sum::<usize>()
            + metadata.iter().map(|s| s.len()).sum::<usize>();
        let mut text = recycle::buffer(len);
        let mut ends = [0; PARTS];
        for (part, value) in [columns.username, columns.event_type, columns.message]
            .into_iter()
            .enumerate()
        {
            text.push_str(value);
            ends[part] = text.len();
        }
        let mut present = 0u8;
        for (part, value) in (RESOURCE_TYPE..).zip(optional) {
            if let Some(value) = value {
                text.push_str(value);
                present |= 1 << part;
            }
            ends[part] = text.len();
        }
        for piece in metadata {
            text.push_str(piece);
        }
        ends[METADATA] = text.len();
        if columns.metadata.is_some() {
            present |= 1 << METADATA;
        }
        Pending {
            text,
            ends,
            present,
            user_id,
            ip_address,
            severity,
            created_at,
        }
    }

    fn part(&self, part: usize) -> &str {
        let start = if part == 0 { 0 } else { self.ends[part - 1] };
        // The ends were taken from this very buffer, at character boundaries.
        self.text.get(start..self.ends[part]).unwrap_or_default()
    }

    fn optional(&self, part: usize) -> Option<&str> {
        (self.present & 1 << part != 0).then(|| self.part(part))
    }

    pub(crate) fn username(&self) -> &str {
        self.part(USERNAME)
    }

    pub(crate) fn event_type(&self) -> &str {
        self.part(EVENT_TYPE)
    }

    pub(crate) fn message(&self) -> &str {
        self.part(MESSAGE)
    }

    pub(crate) fn resource_type(&self) -> Option<&str> {
        self.optional(RESOURCE_TYPE)
    }

    pub(crate) fn resource_id(&self) -> Option<&str> {
        self.optional(RESOURCE_ID)
    }

    pub(crate) fn resource_name(&self) -> Option<&str> {
        self.optional(RESOURCE_NAME)
    }

    /// A JSON object's text, or `None` for no metadata. Later duplicate keys win, as in
    /// jsonb.
    pub(crate) fn metadata(&self) -> Option<&str> {
        self.optional(METADATA)
    }

    /// The length of its text buffer.
    pub(crate) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Appends the record's binary spool form: its values, then its text buffer as it
    /// is (the inverse is [`read_spooled`](Self::read_spooled)).
    pub(crate) fn write_spooled(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.created_at.micros().to_le_bytes());
        match self.user_id {
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.to_le_bytes());
            }
            None => out.push(0),
        }
        // Stable codes, whatever the enum's order becomes.
        out.push(match self.severity {
            Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Error => 2,
            Severity::Critical => 3,
        });
        match self.ip_address {
            None => out.push(0),
            Some(IpAddr::V4(ip)) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            Some(IpAddr::V6(ip)) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.push(self.present);
        for end in self.ends {
            // A frame over 4 GiB is refused before it is written (Spool::append).
            out.extend_from_slice(&(end.min(u32::MAX as usize) as u32).to_le_bytes());
        }
        out.extend_from_slice(self.text.as_bytes());
    }

    /// Reads a record written by [`write_spooled`](Self::write_spooled) from the front of
    /// `bytes`, and what follows it; `None` for anything it did not write (a frame is
    /// checksummed, so that means a bug or another version, never a silent mistake).
    pub(crate) fn read_spooled(bytes: &[u8]) -> Option<(Pending, &[u8])> {
        fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
            let (head, rest) = bytes.split_first_chunk::<N>()?;
            *bytes = rest;
            Some(*head)
        }
        let mut rest = bytes;
        let micros = i64::from_le_bytes(take::<8>(&mut rest)?);
        // Every time the layer stamps is a date; one that is not was not written by it.
        DateTime::<Utc>::from_timestamp_micros(micros)?;
        let created_at = EventTime(micros);
        let user_id = match take::<1>(&mut rest)? {
            [0] => None,
            [1] => Some(i64::from_le_bytes(take::<8>(&mut rest)?)),
            _ => return None,
        };
        let severity = match take::<1>(&mut rest)? {
            [0] => Severity::Info,
            [1] => Severity::Warning,
            [2] => Severity::Error,
            [3] => Severity::Critical,
            _ => return None,
        };
        let ip_address = match take::<1>(&mut rest)? {
            [0] => None,
            [4] => Some(IpAddr::from(take::<4>(&mut rest)?)),
            [6] => Some(IpAddr::from(take::<16>(&mut rest)?)),
            _ => return None,
        };
        let [present] = take::<1>(&mut rest)?;
        // Only the optional parts have presence bits.
        let optional =
            (1u8 << RESOURCE_TYPE) | (1 << RESOURCE_ID) | (1 << RESOURCE_NAME) | (1 << METADATA);
        if present & !optional != 0 {
            return None;
        }
        let mut ends = [0usize; PARTS];
        for end in &mut ends {
            *end = u32::from_le_bytes(take::<4>(&mut rest)?) as usize;
        }
        let len = ends[PARTS - 1];
        if rest.len() < len || ends.windows(2).any(|w| w[0] > w[1]) {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        let text = std::str::from_utf8(text).ok()?;
        if !ends.iter().all(|end| text.is_char_boundary(*end)) {
            return None;
        }
        let mut buffer = recycle::buffer(len);
        buffer.push_str(text);
        Some((
            Pending {
                text: buffer,
                ends,
                present,
                user_id,
                ip_address,
                severity,
                created_at,
            },
            rest,
        ))
    }

    pub(crate) fn from_log(log: AuditLog) -> Pending {
        let metadata = (!log.metadata.is_empty()).then(|| Value::Object(log.metadata).to_string());
        let metadata = metadata.as_deref().map(|text| [text]);
        Pending::new(
            TextColumns {
                username: &log.username,
                event_type: &log.event_type,
                message: &log.message,
                resource_type: log.resource_type.as_deref(),
                resource_id: log.resource_id.as_deref(),
                resource_name: log.resource_name.as_deref(),
                metadata: metadata.as_ref().map(|text| &text[..]),
            },
            log.user_id,
            log.ip_address,
            log.severity,
            EventTime::from_datetime(log.created_at),
        )
    }

    /// The record as an [`AuditLog`], for the writer's rare paths (rejected records).
    pub(crate) fn to_log(&self) -> AuditLog {
        AuditLog {
            username: self.username().to_owned(),
            user_id: self.user_id,
            event_type: self.event_type().to_owned(),
            message: self.message().to_owned(),
            ip_address: self.ip_address,
            resource_type: self.resource_type().map(str::to_owned),
            resource_id: self.resource_id().map(str::to_owned),
            resource_name: self.resource_name().map(str::to_owned),
            severity: self.severity,
            metadata: match self.metadata().map(serde_json::from_str::<Value>) {
                Some(Ok(Value::Object(map))) => map,
                _ => Map::new(),
            },
            created_at: self.created_at.to_datetime(),
        }
    }
}

/// When an event happened, in microseconds since the Unix epoch: PostgreSQL's precision,
/// read from the clock without calendar arithmetic on the emitting thread, and sent to
/// `COPY` as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventTime(i64);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in microseconds since the Unix epoch.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl EventTime {
    pub(crate) fn now() -> EventTime {
        let micros = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        EventTime(match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => micros(since),
            Err(before) => -micros(before.duration()),
        })
    }

    pub(crate) fn from_datetime(time: DateTime<Utc>) -> EventTime {
        EventTime(time.timestamp_micros())
    }

    /// Microseconds since the Unix epoch, as `timestamptz` keeps them.
    pub(crate) fn micros(self) -> i64 {
        self.0
    }

    pub(crate) fn to_datetime(self) -> DateTime<Utc> {
        // Every EventTime came from the clock or from a DateTime, so it is in range.
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }
}

impl ToSql for EventTime {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&(self.0 - POSTGRES_EPOCH_MICROS).to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

impl Drop for Pending {
    fn drop(&mut self) {
        recycle::recycle(std::mem::take(&mut self.text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_record_round_trips_through_an_audit_log() {
        let mut log = AuditLog::new("alice", "authentication", "User login");
        log.resource_id = Some("42".into());
        // Microseconds, as PostgreSQL keeps them.
        log.created_at = "2026-11-27T08:00:00.123456Z".parse().unwrap();
        log.metadata.insert("site".into(), "fra1".into());
        let pending = Pending::from_log(log.clone());
        assert_eq!(pending.resource_type(), None);
        assert_eq!(pending.resource_id(), Some("42"));
        assert_eq!(pending.metadata(), Some(r#"{"site":"fra1"}"#));
        assert_eq!(pending.to_log(), log);
    }

    #[test]
    fn event_times_keep_microseconds_either_side_of_the_epochs() {
        for text in [
            "2026-11-27T08:00:00.123456Z",
            "1999-12-31T23:59:59.999999Z",
            "1969-07-20T20:17:40.000001Z",
        ] {
            let time: DateTime<Utc> = text.parse().unwrap();
            assert_eq!(EventTime::from_datetime(time).to_datetime(), time);
        }
        let now = Utc::now();
        let then = EventTime::now().to_datetime();
        assert!((then - now).num_milliseconds().abs() < 1000);
    }

    #[test]
    fn an_empty_optional_part_is_not_a_missing_one() {
        let pending = Pending::new(
            TextColumns {
                username: "u",
                event_type: "e",
                message: "",
                resource_type: Some(""),
                resource_id: None,
                resource_name: Some("name"),
                metadata: Some(&["{", r#""a":1"#, "}"]),
            },
            None,
            None,
            Severity::Info,
            EventTime::now(),
        );
        assert_eq!(pending.message(), "");
        assert_eq!(pending.resource_type(), Some(""));
        assert_eq!(pending.resource_id(), None);
        assert_eq!(pending.resource_name(), Some("name"));
        assert_eq!(pending.metadata(), Some(r#"{"a":1}"#));
    }
}
