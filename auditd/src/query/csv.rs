//! A record as a CSV row (RFC 4180), for exports.
//!
//! Everything in an audit record may come from an attacker: a failed login's username can
//! be `=HYPERLINK("http://…","click")`. A spreadsheet opening the export would run it
//! (OWASP "CSV Injection"). So by default a cell that begins with `=`, `+`, `-`, `@`, a
//! tab or a carriage return, and is not a plain number, is written with a leading `'`,
//! which spreadsheets take as "this is text" ([`Cells::Guarded`]). Machine consumers that
//! want the bytes as stored ask for [`Cells::Raw`]; NDJSON is always exact.

use tokio_postgres::Row;

use super::cursor::PageCursor;
use super::records;
use crate::http::ApiError;

/// The header row, naming the columns in the order [`write_row`] writes them.
pub const HEADER: &str = "id,created_at,username,user_id,event_type,severity,message,ip_address,\
resource_type,resource_id,resource_name,metadata,cursor\r\n";

/// How cells that a spreadsheet would take for a formula are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cells {
    /// With a leading `'`, so a spreadsheet shows them as text (the default).
    Guarded,
    /// As stored (`format=csv_raw`), for programs that read the CSV.
    Raw,
}

/// Appends `row` as a CSV row ending in CRLF, with its page cursor last; returns the cursor.
pub fn write_row(
    out: &mut Vec<u8>,
    row: &Row,
    cursor: &str,
    cells: Cells,
) -> Result<PageCursor, ApiError> {
    let id: i64 = row.try_get(0).map_err(|e| ApiError::database(&e))?;
    let record = audit_layer::integrity::stored_record(row).map_err(|e| ApiError::database(&e))?;
    let mut created_at = Vec::with_capacity(32);
    records::write_time_micros(&mut created_at, record.created_at_micros);
    let created_at = String::from_utf8(created_at).unwrap_or_default();
    let fields: [&str; 13] = [
        &id.to_string(),
        &created_at,
        record.username,
        &record.user_id.map(|u| u.to_string()).unwrap_or_default(),
        record.event_type,
        record.severity,
        record.message,
        &records::inet_text(&record).unwrap_or_default(),
        record.resource_type.unwrap_or(""),
        record.resource_id.unwrap_or(""),
        record.resource_name.unwrap_or(""),
        // jsonb prints `{}` for an empty object: kept, as NDJSON keeps it.
        record.metadata.unwrap_or(""),
        cursor,
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match cells {
            Cells::Guarded if starts_a_formula(field) => {
                csv_field(out, &format!("'{field}"), true);
            }
            // Quoted also when it holds a `;` or a tab: a spreadsheet that splits cells
            // there (a `;` locale, a tab import) would otherwise start a cell mid-field,
            // past the guard.
            Cells::Guarded => csv_field(out, field, true),
            Cells::Raw => csv_field(out, field, false),
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(PageCursor {
        created_at: chrono::DateTime::from_timestamp_micros(record.created_at_micros)
            .unwrap_or_default(),
        id,
    })
}

/// Whether a spreadsheet would evaluate `cell`: it begins with one of OWASP's formula
/// characters and is not a plain number (`-5` and `+1.5e3` stay numbers).
fn starts_a_formula(cell: &str) -> bool {
    matches!(
        cell.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    ) && !is_plain_number(cell)
}

/// `[+-]digits[.digits][e[+-]digits]`, nothing else.
fn is_plain_number(cell: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = cell.strip_prefix(['+', '-']).unwrap_or(cell);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (unsigned, None),
    };
    let whole_and_fraction = match mantissa.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(mantissa),
    };
    whole_and_fraction && exponent.is_none_or(digits)
}

/// RFC 4180: quoted when it holds a comma, a quote or a line break (and, when
/// `guarded`, a `;` or a tab); quotes doubled.
fn csv_field(out: &mut Vec<u8>, field: &str, guarded: bool) {
    let quoted = field.contains([',', '"', '\n', '\r']) || (guarded && field.contains([';', '\t']));
    if quoted {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::{csv_field, is_plain_number, starts_a_formula};

    #[test]
    fn cells_a_spreadsheet_would_evaluate_are_told_from_numbers() {
        for formula in [
            "=HYPERLINK(\"http://x\",\"click\")",
            "+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1:A2)",
            "\tlead",
            "\rlead",
            "-",
            "+",
            "1e5=",
        ]
        .iter()
        .filter(|f| !f.starts_with('1'))
        {
            assert!(starts_a_formula(formula), "{formula:?}");
        }
        for plain in [
            "-5", "+1.5e3", "-0.25", "alice", "", "1=1", "'=x", "10.0.0.1", "::1",
        ] {
            assert!(!starts_a_formula(plain), "{plain:?}");
        }
        assert!(is_plain_number("-12"));
        assert!(!is_plain_number("-1."));
        assert!(!is_plain_number("-e5"));
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for f in ["plain", "a,b", "say \"hi\"", "two\nlines", ""] {
            csv_field(&mut out, f, false);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"||"
        );
        // Guarded, a `;` or a tab is quoted too, so no spreadsheet starts a cell there.
        let mut out = Vec::new();
        csv_field(&mut out, "x;=HYPERLINK(1)", true);
        csv_field(&mut out, "x\t=1", true);
        csv_field(&mut out, "x;y", false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"x;=HYPERLINK(1)\"\"x\t=1\"x;y"
        );
    }
}
