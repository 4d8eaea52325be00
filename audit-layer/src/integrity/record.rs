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
    /// `ip_address`'s netmask length when it is shorter than the address (an `inet` such
    /// as `192.0.2.1/24`, which only SQL writes: the layer stores host addresses), so
    /// that a mask added afterwards, which changes what searches by address find,
    /// changes the leaf. `None` for a host address.
    pub ip_prefix: Option<u8>,
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
        let ip = self.ip_address.map(|ip| {
            let mut bytes = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            // One byte more, only for a network: host addresses encode as before.
            bytes.extend(self.ip_prefix);
            bytes
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
     event_type, severity, message, ip_address, masklen(ip_address) AS ip_prefix, \
     resource_type, resource_id, resource_name, \
     metadata::text AS metadata_text";

/// The stored values of a row read with [`STORED_RECORD_COLUMNS`] (other columns may
/// come before them).
pub fn stored_record(row: &tokio_postgres::Row) -> Result<StoredRecord<'_>, tokio_postgres::Error> {
    // Found once, then read by position: a verifier reads millions of rows, and a lookup
    // by name is a scan of the columns for each value.
    let at = row
        .columns()
        .iter()
        .position(|c| c.name() == "stream_id")
        .unwrap_or(0);
    let created_at: chrono::DateTime<chrono::Utc> = row.try_get(at + 2)?;
    let ip_address: Option<IpAddr> = row.try_get(at + 8)?;
    let masklen: Option<i32> = row.try_get(at + 9)?;
    let ip_prefix = match (ip_address, masklen) {
        (Some(IpAddr::V4(_)), Some(bits)) if bits < 32 => Some(bits as u8),
        (Some(IpAddr::V6(_)), Some(bits)) if bits < 128 => Some(bits as u8),
        _ => None,
    };
    Ok(StoredRecord {
        stream_id: row.try_get(at)?,
        seq: row.try_get(at + 1)?,
        created_at_micros: created_at.timestamp_micros(),
        username: row.try_get(at + 3)?,
        user_id: row.try_get(at + 4)?,
        event_type: row.try_get(at + 5)?,
        severity: row.try_get(at + 6)?,
        message: row.try_get(at + 7)?,
        ip_address,
        ip_prefix,
        resource_type: row.try_get(at + 10)?,
        resource_id: row.try_get(at + 11)?,
        resource_name: row.try_get(at + 12)?,
        metadata: row.try_get(at + 13)?,
    })
}

/// The canonical encoding of a row read with [`STORED_RECORD_COLUMNS`], recomputed
/// from what PostgreSQL holds.
pub fn stored_encoding(row: &tokio_postgres::Row) -> Result<Vec<u8>, tokio_postgres::Error> {
    let record = stored_record(row)?;
    let mut out = Vec::with_capacity(256 + record.message.len());
    record.encode(&mut out);
    Ok(out)
}

/// The leaf hash of a row read with [`STORED_RECORD_COLUMNS`], recomputed from what
/// PostgreSQL holds.
pub fn stored_leaf(row: &tokio_postgres::Row) -> Result<Hash, tokio_postgres::Error> {
    Ok(stored_record(row)?.leaf())
}

/// Why bytes are not a record encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnEncoding(&'static str);

impl std::fmt::Display for NotAnEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a record encoding (version 1): {}", self.0)
    }
}

impl std::error::Error for NotAnEncoding {}

impl<'a> StoredRecord<'a> {
    /// Reads an encoding (version 1) back, so that a record shown beside its proof can
    /// be compared with the bytes the proof covers. The exact inverse of
    /// [`encode`](Self::encode): anything else (trailing bytes, a wrong width, text that
    /// is not UTF-8) is refused.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, NotAnEncoding> {
        let mut fields = Fields { rest: bytes };
        if fields.take(1)? != [RECORD_ENCODING_V1] {
            return Err(NotAnEncoding("the version byte"));
        }
        // In the encoding's order.
        let stream_id = fields.int()?;
        let seq = fields.int()?;
        let created_at_micros = fields.int()?.ok_or(NotAnEncoding("created_at is NULL"))?;
        let username = fields.text()?.ok_or(NotAnEncoding("username is NULL"))?;
        let user_id = fields.int()?;
        let event_type = fields.text()?.ok_or(NotAnEncoding("event_type is NULL"))?;
        let severity = fields.text()?.ok_or(NotAnEncoding("severity is NULL"))?;
        let message = fields.text()?.ok_or(NotAnEncoding("message is NULL"))?;
        let (ip_address, ip_prefix) = fields.ip()?;
        let resource_type = fields.text()?;
        let resource_id = fields.text()?;
        let resource_name = fields.text()?;
        let metadata = fields.text()?;
        if !fields.rest.is_empty() {
            return Err(NotAnEncoding("bytes after the last field"));
        }
        Ok(StoredRecord {
            stream_id,
            seq,
            created_at_micros,
            username,
            user_id,
            event_type,
            severity,
            message,
            ip_address,
            ip_prefix,
            resource_type,
            resource_id,
            resource_name,
            metadata,
        })
    }
}

struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotAnEncoding> {
        if self.rest.len() < n {
            return Err(NotAnEncoding("cut short"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<Option<&'a [u8]>, NotAnEncoding> {
        match self.take(1)? {
            [0] => Ok(None),
            [1] => {
                let mut length = [0u8; 4];
                length.copy_from_slice(self.take(4)?);
                Ok(Some(self.take(u32::from_be_bytes(length) as usize)?))
            }
            _ => Err(NotAnEncoding("a field marker is neither 0 nor 1")),
        }
    }

    fn int(&mut self) -> Result<Option<i64>, NotAnEncoding> {
        match self.field()? {
            None => Ok(None),
            Some(bytes) => <[u8; 8]>::try_from(bytes)
                .map(|b| Some(i64::from_be_bytes(b)))
                .map_err(|_| NotAnEncoding("an integer is not 8 bytes")),
        }
    }

    /// An address (4 or 16 bytes), with one byte more for a netmask shorter than it.
    fn ip(&mut self) -> Result<(Option<IpAddr>, Option<u8>), NotAnEncoding> {
        let Some(bytes) = self.field()? else {
            return Ok((None, None));
        };
        let (address, prefix) = match bytes.len() {
            4 | 16 => (bytes, None),
            5 | 17 => (&bytes[..bytes.len() - 1], bytes.last().copied()),
            _ => {
                return Err(NotAnEncoding(
                    "ip_address is not 4 or 16 bytes (and a mask)",
                ))
            }
        };
        let ip = match <[u8; 4]>::try_from(address) {
            Ok(v4) => IpAddr::from(v4),
            Err(_) => IpAddr::from(
                <[u8; 16]>::try_from(address).map_err(|_| NotAnEncoding("ip_address"))?,
            ),
        };
        let full = if ip.is_ipv4() { 32 } else { 128 };
        // A mask as long as the address is written without one: one form per value.
        if prefix.is_some_and(|p| p >= full) {
            return Err(NotAnEncoding("ip_address has a full-length mask byte"));
        }
        Ok((Some(ip), prefix))
    }

    fn text(&mut self) -> Result<Option<&'a str>, NotAnEncoding> {
        self.field()?
            .map(|bytes| std::str::from_utf8(bytes).map_err(|_| NotAnEncoding("text is not UTF-8")))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_decodes_to_the_record_and_nothing_else_does() {
        let mut bytes = Vec::new();
        record().encode(&mut bytes);
        assert_eq!(StoredRecord::decode(&bytes), Ok(record()));
        let v6 = StoredRecord {
            ip_address: Some("2001:db8::1".parse().unwrap()),
            metadata: None,
            ..record()
        };
        let mut v6_bytes = Vec::new();
        v6.encode(&mut v6_bytes);
        assert_eq!(StoredRecord::decode(&v6_bytes), Ok(v6));
        for network in [
            StoredRecord {
                ip_prefix: Some(24),
                ..record()
            },
            StoredRecord {
                ip_address: Some("2001:db8::".parse().unwrap()),
                ip_prefix: Some(64),
                ..record()
            },
        ] {
            let mut bytes = Vec::new();
            network.encode(&mut bytes);
            assert_eq!(StoredRecord::decode(&bytes), Ok(network));
        }
        for cut in 0..bytes.len() {
            assert!(StoredRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(StoredRecord::decode(&longer).is_err());
    }

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
            ip_prefix: None,
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
            // A netmask added to the address changes what address searches find.
            StoredRecord {
                ip_prefix: Some(24),
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
