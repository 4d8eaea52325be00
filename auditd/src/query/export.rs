//! What an export asks for: its parameters, parsed once for the export itself and for the
//! download link that leads to it.

use super::csv::Cells;
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
    /// RFC 4180 CSV with a header row: `format=csv` with formula cells guarded,
    /// `format=csv_raw` with every cell as stored.
    Csv(Cells),
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
    /// ([`crate::auth::links`]) are taken and left to it when `by_link` (the request was
    /// let in by them); otherwise they would do nothing, so they are refused.
    pub fn parse(
        filters: Filters,
        mut params: Params,
        by_link: bool,
    ) -> Result<ExportRequest, ApiError> {
        let order = Order::take(&mut params)?;
        let cursor = take_cursor(&mut params)?;
        let format = params
            .take_parsed("format", |v| match v {
                "ndjson" => Ok(Format::Ndjson),
                "csv" => Ok(Format::Csv(Cells::Guarded)),
                "csv_raw" => Ok(Format::Csv(Cells::Raw)),
                _ => Err("must be ndjson, csv or csv_raw".to_owned()),
            })?
            .unwrap_or(Format::Ndjson);
        let max_rows = params.take_parsed("limit", |v| match v.parse::<i64>() {
            Ok(n) if n > 0 => Ok(n.unsigned_abs()),
            _ => Err(format!("must be an integer from 1 to {}", i64::MAX)),
        })?;
        for name in links::PARAMETERS {
            if params.take(name)?.is_some() && !by_link {
                return Err(ApiError::bad_parameter(
                    name,
                    "belongs to a download link, and this request is not one",
                ));
            }
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
