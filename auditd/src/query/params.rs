//! Query parameters, taken one by one by the routes, so that an unknown one (a typo, a
//! filter this route does not support) is an error instead of being silently ignored.

use crate::http::ApiError;
use crate::query_string;

/// A request's query parameters that no route has taken yet.
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Values longer than this, in characters (as the OpenAPI document's `maxLength` counts),
/// are refused: no filter needs more, and it bounds the work a single request can ask of
/// the database.
const MAX_VALUE_CHARS: usize = 1024;

/// Parameter names longer than this are refused (the longest a route knows is a few
/// dozen bytes; `meta.<path>` names are bounded further by their filter).
const MAX_NAME_BYTES: usize = 256;

impl Params {
    /// Decodes a query string (`None`: no parameters). A value over 1024 characters is an
    /// error, and so is a NUL byte in a name or a value: PostgreSQL can neither store nor
    /// compare one, so it would fail the query (SQLSTATE 22021) instead of matching nothing.
    pub fn parse(query: Option<&str>) -> Result<Params, ApiError> {
        let pairs = query_string::parse(query.unwrap_or(""))
            .map_err(|e| ApiError::bad_parameter(&e.parameter, e.message))?;
        for (name, value) in &pairs {
            if name.len() > MAX_NAME_BYTES {
                return Err(ApiError::bad_parameter(
                    "query",
                    format!("a parameter name is longer than {MAX_NAME_BYTES} bytes"),
                ));
            }
            if value.len() > MAX_VALUE_CHARS && value.chars().count() > MAX_VALUE_CHARS {
                return Err(ApiError::bad_parameter(
                    name,
                    format!("longer than {MAX_VALUE_CHARS} characters"),
                ));
            }
            if name.contains('\0') || value.contains('\0') {
                return Err(ApiError::bad_parameter(
                    name,
                    "contains a NUL byte (%00), which no audit record can hold",
                ));
            }
        }
        Ok(Params { pairs })
    }

    /// The value of a parameter that may appear once.
    pub fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut values = self.take_all(name);
        match values.len() {
            0 => Ok(None),
            1 => Ok(values.pop()),
            _ => Err(ApiError::bad_parameter(name, "given more than once")),
        }
    }

    /// Every value of a parameter that may repeat; comma-separated values are split.
    pub fn take_list(&mut self, name: &str) -> Vec<String> {
        self.take_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Every value of a parameter that may repeat, comma-separated values split, each
    /// exactly as given (no trimming, no empty value dropped): for values from a fixed
    /// set, where anything else is an error.
    pub fn take_list_exact(&mut self, name: &str) -> Vec<String> {
        self.take_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::to_owned)
            .collect()
    }

    /// Parses a parameter with `parse`, naming it in the error.
    pub fn take_parsed<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        match self.take(name)? {
            None => Ok(None),
            Some(value) => parse(&value)
                .map(Some)
                .map_err(|e| ApiError::bad_parameter(name, e)),
        }
    }

    /// Removes `name`, which must be `true` or `false` when given.
    pub fn take_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        self.take_parsed(name, |v| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        })
    }

    /// Removes and returns every parameter whose name starts with `prefix`.
    pub fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let (matching, rest) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(n, _)| n.starts_with(prefix));
        self.pairs = rest;
        matching
    }

    fn take_all(&mut self, name: &str) -> Vec<String> {
        let (matching, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.pairs = rest;
        matching.into_iter().map(|(_, v)| v).collect()
    }

    /// Fails on the first parameter nobody took.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.pairs.into_iter().next() {
            None => Ok(()),
            Some((name, _)) => Err(ApiError::bad_parameter(&name, "unknown parameter")),
        }
    }
}

/// Parses an integer limit within `1..=max`.
pub fn limit(max: i64) -> impl FnOnce(&str) -> Result<i64, String> {
    move |text| match text.parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be an integer from 1 to {max}")),
    }
}
