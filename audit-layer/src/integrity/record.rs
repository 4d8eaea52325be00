//! The canonical encoding of a stored record, version 1: the bytes whose hash is the
//! record's leaf, the same whether computed by the writer before `COPY` or by a verifier
//! from the row PostgreSQL holds.
//!
//! Every stored value is in it, each in the form PostgreSQL keeps it: times as
//! microseconds since the Unix epoch (`timestamptz`'s resolution), addresses as their
//! bytes, text as its UTF-8 bytes (no column normalises text), `metadata` as `jsonb`
//! prints it ([`jsonb_text`](super::jsonb_text)). A field is `0x00` when NULL, else `0x01`,
//! its length (4 bytes, big-endian) and its bytes, in a fixed order after a version byte,
//! so no two records encode alike.

use std::net::IpAddr;

use super::merkle::{leaf_hash, Hash};

/// The version byte that starts encoding version 1.
pub const RECORD_ENCODING_V1: u8 = 1;

/// A record's stored values, as the encoding takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRecord<'a> {
    /// The writer's stream (`NULL` for rows written by other means).
    pub stream_id: Option<i64>,
    /// Its place in the stream.
    pub seq: Option<i64>,
    /// `created_at`, in microseconds since the Unix epoch.
    pub created_at_micros: i64,
    /// `username`.
    pub username: &'a str,
    /// `user_id`.
    pub user_id: Option<i64>,
    /// `event_type`.
    pub event_type: &'a str,
    /// `severity`.
    pub severity: &'a str,
    /// `message`.
    pub message: &'a str,
    /// `ip_address`.
    pub ip_address: Option<IpAddr>,
    /// `resource_type`.
    pub resource_type: Option<&'a str>,
    /// `resource_id`.
    pub resource_id: Option<&'a str>,
    /// `resource_name`.
    pub resource_name: Option<&'a str>,
    /// `metadata` as `jsonb` prints it.
    pub metadata: Option<&'a str>,
}

fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            // Values are far below 4 GiB (the message cap is 64 KiB; PostgreSQL's limit
            // for a field is 1 GiB).
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

impl StoredRecord<'_> {
    /// Appends the encoding (version 1) of this record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(RECORD_ENCODING_V1);
        let stream = self.stream_id.map(i64::to_be_bytes);
        let seq = self.seq.map(i64::to_be_bytes);
        let user_id = self.user_id.map(i64::to_be_bytes);
        let ip = self.ip_address.map(|ip| match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        });
        field(out, stream.as_ref().map(|b| &b[..]));
        field(out, seq.as_ref().map(|b| &b[..]));
        field(out, Some(&self.created_at_micros.to_be_bytes()));
        field(out, Some(self.username.as_bytes()));
        field(out, user_id.as_ref().map(|b| &b[..]));
        field(out, Some(self.event_type.as_bytes()));
        field(out, Some(self.severity.as_bytes()));
        field(out, Some(self.message.as_bytes()));
        field(out, ip.as_deref());
        field(out, self.resource_type.map(str::as_bytes));
        field(out, self.resource_id.map(str::as_bytes));
        field(out, self.resource_name.map(str::as_bytes));
        field(out, self.metadata.map(str::as_bytes));
    }

    /// The record's leaf hash: `SHA-256(0x00 || encoding)`.
    pub fn leaf(&self) -> Hash {
        let mut bytes = Vec::with_capacity(256 + self.message.len());
        self.encode(&mut bytes);
        leaf_hash(&bytes)
    }
}

/// The columns to select for [`stored_leaf`]: every stored value, `metadata` as the text
/// PostgreSQL prints for it.
pub const STORED_RECORD_COLUMNS: &str = "stream_id, seq, created_at, username, user_id, \
     event_type, severity, message, ip_address, resource_type, resource_id, resource_name, \
     metadata::text AS metadata_text";

/// The leaf hash of a row read with [`STORED_RECORD_COLUMNS`], recomputed from what
/// PostgreSQL holds.
pub fn stored_leaf(row: &tokio_postgres::Row) -> Result<Hash, tokio_postgres::Error> {
    let created_at: chrono::DateTime<chrono::Utc> = row.try_get("created_at")?;
    Ok(StoredRecord {
        stream_id: row.try_get("stream_id")?,
        seq: row.try_get("seq")?,
        created_at_micros: created_at.timestamp_micros(),
        username: row.try_get("username")?,
        user_id: row.try_get("user_id")?,
        event_type: row.try_get("event_type")?,
        severity: row.try_get("severity")?,
        message: row.try_get("message")?,
        ip_address: row.try_get("ip_address")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        resource_name: row.try_get("resource_name")?,
        metadata: row.try_get("metadata_text")?,
    }
    .leaf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StoredRecord<'static> {
        StoredRecord {
            stream_id: Some(7),
            seq: Some(1),
            created_at_micros: 1_764_000_000_000_000,
            username: "alice",
            user_id: Some(2),
            event_type: "authentication",
            severity: "info",
            message: "User login",
            ip_address: Some("10.1.2.3".parse().unwrap()),
            resource_type: None,
            resource_id: None,
            resource_name: None,
            metadata: Some(r#"{"site": "fra1"}"#),
        }
    }

    #[test]
    fn every_stored_value_changes_the_leaf() {
        let base = record();
        let leaf = base.leaf();
        let changed = [
            StoredRecord {
                stream_id: Some(8),
                ..base
            },
            StoredRecord {
                seq: Some(2),
                ..base
            },
            StoredRecord {
                created_at_micros: base.created_at_micros + 1,
                ..base
            },
            StoredRecord {
                username: "alicf",
                ..base
            },
            StoredRecord {
                user_id: None,
                ..base
            },
            StoredRecord {
                event_type: "authenticatioN",
                ..base
            },
            StoredRecord {
                severity: "error",
                ..base
            },
            StoredRecord {
                message: "User logout",
                ..base
            },
            StoredRecord {
                ip_address: Some("10.1.2.4".parse().unwrap()),
                ..base
            },
            StoredRecord {
                resource_type: Some(""),
                ..base
            },
            StoredRecord {
                resource_id: Some("x"),
                ..base
            },
            StoredRecord {
                resource_name: Some("x"),
                ..base
            },
            StoredRecord {
                metadata: Some(r#"{"site": "fra2"}"#),
                ..base
            },
            StoredRecord {
                metadata: None,
                ..base
            },
        ];
        for (i, other) in changed.iter().enumerate() {
            assert_ne!(other.leaf(), leaf, "change {i} left the leaf as it was");
        }
        // Moving bytes from one field to the next is a change too.
        let a = StoredRecord {
            username: "ab",
            event_type: "c",
            ..base
        };
        let b = StoredRecord {
            username: "a",
            event_type: "bc",
            ..base
        };
        assert_ne!(a.leaf(), b.leaf());
    }
}
