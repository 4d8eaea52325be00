//! A record as a CSV row (RFC 4180), for exports.

use tokio_postgres::Row;

use super::cursor::PageCursor;
use crate::http::ApiError;

/// The header row, naming the columns in the order [`write_row`] writes them.
pub const HEADER: &str = "id,created_at,username,user_id,event_type,severity,message,ip_address,\
resource_type,resource_id,resource_name,metadata,cursor\r\n";

/// Appends `row` as a CSV row ending in CRLF, with its page cursor last; returns the cursor.
pub fn write_row(out: &mut Vec<u8>, row: &Row, cursor: &str) -> Result<PageCursor, ApiError> {
    let id: i64 = row.try_get("id").map_err(|e| ApiError::database(&e))?;
    let log = audit_layer::AuditLog::from_row(row).map_err(|e| ApiError::database(&e))?;
    let metadata = if log.metadata.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(log.metadata.clone()).to_string()
    };
    let fields: [&str; 13] = [
        &id.to_string(),
        &log.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        &log.username,
        &log.user_id.map(|u| u.to_string()).unwrap_or_default(),
        &log.event_type,
        log.severity.as_str(),
        &log.message,
        &log.ip_address.map(|ip| ip.to_string()).unwrap_or_default(),
        log.resource_type.as_deref().unwrap_or(""),
        log.resource_id.as_deref().unwrap_or(""),
        log.resource_name.as_deref().unwrap_or(""),
        &metadata,
        cursor,
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_field(out, field);
    }
    out.extend_from_slice(b"\r\n");
    Ok(PageCursor {
        created_at: log.created_at,
        id,
    })
}

/// RFC 4180: quoted when it holds a comma, a quote or a line break; quotes doubled.
fn csv_field(out: &mut Vec<u8>, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for f in ["plain", "a,b", "say \"hi\"", "two\nlines", ""] {
            csv_field(&mut out, f);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"||"
        );
    }
}
