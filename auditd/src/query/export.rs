//! What an export asks for: its parameters, parsed once for the export itself and for the
//! download link that leads to it.

use super::cursor::PageCursor;
use super::filters::Filters;
use super::params::Params;
use super::records::{take_cursor, Order};
use crate::auth::links;
use crate::http::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// What an export was asked for.
pub struct ExportRequest {
    /// Which records.
    pub filters: Filters,
    /// In which order.
    pub order: Order,
    /// After which record.
    pub cursor: Option<PageCursor>,
    /// As what.
    pub format: Format,
    /// At most how many (`limit`); all when `None`.
    pub max_rows: Option<u64>,
}

impl ExportRequest {
    /// Takes every parameter of an export but its `filters` (taken already) out of
    /// `params`; any other is an error. The parameters of a download link
    /// ([`crate::auth::links`]) are taken and left to it.
    pub fn parse(filters: Filters, mut params: Params) -> Result<ExportRequest, ApiError> {
        let order = Order::take(&mut params)?;
        let cursor = take_cursor(&mut params)?;
        let format = params
            .take_parsed("format", |v| match v {
                "ndjson" => Ok(Format::Ndjson),
                "csv" => Ok(Format::Csv),
                _ => Err("must be ndjson or csv".to_owned()),
            })?
            .unwrap_or(Format::Ndjson);
        let max_rows = params.take_parsed("limit", |v| match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err("must be a positive integer".to_owned()),
        })?;
        for name in links::PARAMETERS {
            params.take(name)?;
        }
        params.finish()?;
        Ok(ExportRequest {
            filters,
            order,
            cursor,
            format,
            max_rows,
        })
    }
}
