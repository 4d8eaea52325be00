//! The answer a handler gives, and the access records: every read of the audit log is
//! itself an audit record (`event_type = audit_access`) naming who read what, from where,
//! with which filters, how many rows, and with what outcome; so is every refused request.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tracing::Dispatch;

use crate::http::Body;

/// Who made a request: for the access record.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The name of the caller's token, or `anonymous`.
    pub name: String,
    /// The peer's address.
    pub ip: std::net::IpAddr,
    /// Let in by a signed download link rather than a bearer token.
    pub by_link: bool,
    /// What the caller's token allows.
    pub scopes: crate::auth::Scopes,
}

/// What a handler returns besides the response: what to write in the access record.
pub struct Answer {
    /// The response to send.
    pub response: Response<Body>,
    /// `Some` for reads to record now; streams record themselves when they end.
    pub access: Option<Access>,
}

/// What the access record of a read says besides who made it.
pub struct Access {
    /// The filters applied, as JSON.
    pub filters: Value,
    /// How many records were served.
    pub rows: u64,
}

impl Answer {
    /// A response with no access details: for unaudited routes, for streams (which record
    /// themselves when they end) and for failures (recorded without filters).
    pub fn plain(response: Response<Body>) -> Self {
        Answer {
            response,
            access: None,
        }
    }
}

/// Where access records go: a dispatcher of their own (tests, a separate writer), or the
/// global subscriber.
pub struct AccessLog {
    dispatch: Option<Dispatch>,
}

impl AccessLog {
    /// Records through `dispatch`, or the global subscriber when `None`.
    pub fn new(dispatch: Option<Dispatch>) -> Self {
        AccessLog { dispatch }
    }

    /// Writes the `audit_access` record of a read: who, from where, through which route,
    /// which filters, how many rows, with what outcome.
    pub fn read(
        &self,
        caller: &Caller,
        route: &str,
        filters: &Value,
        rows: u64,
        status: StatusCode,
    ) {
        let metadata = json!({
            "route": route,
            "filters": filters,
            "rows": rows,
            "status": status.as_u16(),
        })
        .to_string();
        self.emit(caller, &metadata, false);
    }

    /// Writes the record of a request refused for its token.
    pub fn denied(&self, caller: &Caller, route: &str, had_credentials: bool) {
        // Not "token_presented": a field named like a secret would be redacted.
        let metadata =
            json!({ "route": route, "credentials_presented": had_credentials }).to_string();
        self.emit(caller, &metadata, true);
    }

    /// Writes the record of a request refused because the caller's token, though valid,
    /// does not allow what the route does (a writer reading, a reader writing).
    pub fn forbidden(&self, caller: &Caller, route: &str, needed: crate::auth::Scope) {
        let metadata = json!({
            "route": route,
            "status": 403,
            "missing_scope": needed.name(),
        })
        .to_string();
        self.emit(caller, &metadata, true);
    }

    /// The one place access records are emitted (tracing levels are per callsite, hence
    /// the two arms).
    fn emit(&self, caller: &Caller, metadata: &str, denied: bool) {
        let emit = || {
            if denied {
                tracing::warn!(
                    target: "audit",
                    event_type = "audit_access",
                    username = %caller.name,
                    ip_address = %caller.ip,
                    resource_type = "audit_logs",
                    metadata = %metadata,
                    "Unauthorized request to the audit log API"
                )
            } else {
                tracing::info!(
                    target: "audit",
                    event_type = "audit_access",
                    username = %caller.name,
                    ip_address = %caller.ip,
                    resource_type = "audit_logs",
                    metadata = %metadata,
                    "Read audit logs"
                )
            }
        };
        match &self.dispatch {
            Some(dispatch) => tracing::dispatcher::with_default(dispatch, emit),
            None => emit(),
        }
    }
}
