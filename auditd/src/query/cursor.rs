//! Opaque cursors: where a page, an export or a tail left off.
//!
//! A page cursor is a position in `(created_at, id)`, the order every listing uses, so the
//! next page is an index range scan that costs the same at any depth and never skips or
//! repeats a row, whatever arrives meanwhile. A tail cursor is a position in
//! `(tx_id, id)`, commit order (see migration 0002). Both are hex text so that clients treat
//! them as opaque; the version tag lets the format change without breaking old cursors.
//!
//! Anyone can make a cursor, so every text of the documented form is a position: the hex
//! of `p1:` or `t1:` and two decimal numbers of up to 19 digits, an optional `-` before
//! each (`PAGE_CURSOR_PATTERN`, `TAIL_CURSOR_PATTERN` in the OpenAPI document). A number
//! beyond 64 bits is taken as the nearest one within, and a time beyond what `timestamptz`
//! holds as its nearest end: the rows after such a position are the same, and no
//! position can make PostgreSQL fail.

use chrono::{DateTime, Utc};

use crate::hex;

/// The earliest `timestamptz`, 4714-11-24 00:00 BC UTC, in microseconds since the Unix
/// epoch.
const EARLIEST_TIMESTAMPTZ_MICROS: i64 = -210_866_803_200_000_000;

/// After this row, in listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// The row's id, which orders rows created at the same time.
    pub id: i64,
}

/// After this row, in commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailCursor {
    /// The transaction that inserted the row.
    pub tx_id: i64,
    /// The row's id, which orders rows of the same transaction.
    pub id: i64,
}

impl PageCursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        to_hex(&format!(
            "p1:{}:{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    /// Reads what `encode` wrote; `None` for anything else, a tail cursor included, and
    /// for a time PostgreSQL's `timestamptz` cannot hold (anyone can make a cursor).
    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = two_numbers(text, "p1")?;
        // chrono's latest time (in 262143 AD) comes before timestamptz's (294276 AD).
        let latest = DateTime::<Utc>::MAX_UTC.timestamp_micros();
        let micros = micros.clamp(EARLIEST_TIMESTAMPTZ_MICROS, latest);
        Some(PageCursor {
            created_at: DateTime::from_timestamp_micros(micros)?,
            id,
        })
    }
}

impl TailCursor {
    /// The later of two positions in commit order.
    pub fn max_with(self, other: TailCursor) -> TailCursor {
        if (self.tx_id, self.id) >= (other.tx_id, other.id) {
            self
        } else {
            other
        }
    }

    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        to_hex(&format!("t1:{}:{}", self.tx_id, self.id))
    }

    /// Reads what `encode` wrote; `None` for anything else, a page cursor included.
    pub fn decode(text: &str) -> Option<Self> {
        let (tx_id, id) = two_numbers(text, "t1")?;
        Some(TailCursor { tx_id, id })
    }
}

fn two_numbers(hex: &str, tag: &str) -> Option<(i64, i64)> {
    let text = from_hex(hex)?;
    let mut parts = text.split(':');
    if parts.next()? != tag {
        return None;
    }
    let a = saturating_number(parts.next()?)?;
    let b = saturating_number(parts.next()?)?;
    parts.next().is_none().then_some((a, b))
}

/// An optional `-` and 1 to 19 decimal digits, as the nearest 64-bit integer.
fn saturating_number(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if !(1..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // 19 digits fit in an i128 with room; then to the nearest i64.
    let magnitude: i128 = digits.parse().ok()?;
    let value = if negative { -magnitude } else { magnitude };
    Some(i64::try_from(value).unwrap_or(if negative { i64::MIN } else { i64::MAX }))
}

fn to_hex(text: &str) -> String {
    hex::encode(text.as_bytes())
}

fn from_hex(text: &str) -> Option<String> {
    // No cursor is longer: refuse before decoding.
    if text.len() > 128 {
        return None;
    }
    String::from_utf8(hex::decode(text)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_each_other() {
        let page = PageCursor {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: 42,
        };
        assert_eq!(PageCursor::decode(&page.encode()), Some(page));
        let tail = TailCursor {
            tx_id: 1234,
            id: 99,
        };
        assert_eq!(TailCursor::decode(&tail.encode()), Some(tail));
        assert_eq!(TailCursor::decode(&page.encode()), None);
        assert_eq!(PageCursor::decode(&tail.encode()), None);
        assert_eq!(PageCursor::decode("zz"), None);
        // Anything of the documented form is a position, the nearest one when out of range.
        let far = |text: &str| PageCursor::decode(&hex::encode(text.as_bytes()));
        assert!(far("p1:-9999999999999999999:1").is_some());
        assert!(far("p1:9999999999999999999:9999999999999999999").is_some());
        assert_eq!(far("p1:+5:1"), None);
        assert_eq!(far("p1:5:"), None);
        assert_eq!(far("p1:12345678901234567890:1"), None);
        assert_eq!(PageCursor::decode("' OR 1=1 --"), None);
    }
}
