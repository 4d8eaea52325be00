//! The application: shared state, the route table, and what every request goes through
//! (authentication, the concurrency bound, the timeout, metrics, the access record).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_layer::AuditHandle;
use deadpool_postgres::{Object, Pool};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tracing::Dispatch;

use crate::auth::TokenStore;
use crate::filters::Filters;
use crate::http::{ApiError, Body};
use crate::listen::CommitNotices;
use crate::metrics::{Extra, Metrics};
use crate::params::Params;
use crate::text_search::SharedSample;
use crate::viewer::{self, Asset};
use crate::{event_stats, export, export_link, health, logs, openapi, tail};

/// Limits and intervals of the API.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest time to answer a request (streams: to start answering).
    pub request_timeout: Duration,
    /// Reads served at once; more get 503 at once rather than queueing. Health, metrics
    /// and the OpenAPI document are not counted, so they answer under load.
    pub max_concurrent_requests: usize,
    /// Exports and event streams open at once: each holds a database connection until it
    /// ends, so they are bounded apart from (and below) the pool.
    pub max_streams: usize,
    /// How often a tail checks for newly committed rows.
    pub tail_poll_interval: Duration,
    /// Longest long-poll wait a client may ask for.
    pub max_tail_wait: Duration,
    /// How often an idle event stream sends a keep-alive comment.
    pub stream_keepalive: Duration,
    /// Rows fetched per query while exporting.
    pub export_page_rows: i64,
    /// How often the message sample that tunes text search is renewed
    /// ([`crate::text_search`]).
    pub text_sample_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 64,
            max_streams: 8,
            tail_poll_interval: Duration::from_millis(250),
            max_tail_wait: Duration::from_secs(60),
            stream_keepalive: Duration::from_secs(15),
            export_page_rows: 5000,
            text_sample_interval: Duration::from_secs(600),
        }
    }
}

/// Everything a request handler may use.
pub struct App {
    /// The database pool for queries.
    pub pool: Pool,
    /// The bearer tokens in force, replaceable while serving.
    pub tokens: Arc<TokenStore>,
    /// The timeouts, bounds and intervals in force.
    pub limits: Limits,
    /// Request, latency and row counters, rendered at /metrics.
    pub metrics: Metrics,
    permits: Arc<Semaphore>,
    stream_permits: Arc<Semaphore>,
    /// Becomes `true` when the server shuts down: streams and long polls end early.
    pub stopping: watch::Receiver<bool>,
    /// Where access records go; `None` means the global subscriber.
    pub access_audit: Option<Dispatch>,
    /// The access-audit writer, for its counters in /metrics.
    pub audit_handle: Option<Arc<AuditHandle>>,
    /// Commit notices from the audit writers (`None`: tails rely on polling alone).
    pub commit_notices: Option<CommitNotices>,
    /// Messages sampled to tune text search, renewed by the server.
    pub text_sample: Arc<SharedSample>,
    narrowed_text_searches: AtomicU64,
}

/// The routes the server answers. The OpenAPI document is checked against this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    /// A file of the viewer page.
    Viewer(crate::viewer::Asset),
    /// Liveness: the process answers.
    Healthz,
    /// Readiness: the database answers too.
    Readyz,
    /// Prometheus metrics.
    Metrics,
    /// The OpenAPI document.
    OpenApi,
    /// A page of records.
    Logs,
    /// One record, by id.
    LogById,
    /// Every matching record, streamed as NDJSON or CSV.
    Export,
    /// A signed download link for an export.
    ExportLink,
    /// Long poll for records committed after a cursor.
    Tail,
    /// Server-Sent Events of records as they are committed.
    Stream,
    /// Record counts by event type and severity.
    Stats,
}

/// A row of the route table: a path, and how requests to it are handled.
pub struct Route {
    /// Which handler serves it.
    pub id: RouteId,
    /// The request path (`{id}` stands for a record id); also the route's label in metrics
    /// and access records.
    pub path: &'static str,
    /// Needs a bearer token (when tokens are configured).
    pub protected: bool,
    /// Reads audit records, so each request is itself audited.
    pub audited: bool,
    /// Grants reads of audit records (the reading routes, and the link route that signs
    /// them), so a request refused for its token is recorded.
    pub records_refusals: bool,
}

/// The route table: every path the server answers (see `route_for`).
pub const ROUTES: &[Route] = &[
    Route {
        id: RouteId::Viewer(Asset::Page),
        path: "/",
        protected: false,
        audited: false,
        records_refusals: false,
    },
    Route {
        id: RouteId::Viewer(Asset::Script),
        path: "/viewer.js",
        protected: false,
        audited: false,
        records_refusals: false,
    },
    Route {
        id: RouteId::Viewer(Asset::Style),
        path: "/viewer.css",
        protected: false,
        audited: false,
        records_refusals: false,
    },
    Route {
        id: RouteId::Healthz,
        path: "/healthz",
        protected: false,
        audited: false,
        records_refusals: false,
    },
    Route {
        id: RouteId::Readyz,
        path: "/readyz",
        protected: false,
        audited: false,
        records_refusals: false,
    },
    Route {
        id: RouteId::Metrics,
        path: "/metrics",
        protected: true,
        audited: false,
        records_refusals: false,
    },
    Route {
        id: RouteId::OpenApi,
        path: "/api/v1/openapi.json",
        protected: false,
        audited: false,
        records_refusals: false,
    },
    Route {
        id: RouteId::Logs,
        path: "/api/v1/logs",
        protected: true,
        audited: true,
        records_refusals: true,
    },
    Route {
        id: RouteId::Export,
        path: "/api/v1/logs/export",
        protected: true,
        audited: true,
        records_refusals: true,
    },
    Route {
        id: RouteId::ExportLink,
        path: "/api/v1/logs/export/link",
        protected: true,
        // The download it leads to is the read, and is recorded as one.
        audited: false,
        records_refusals: true,
    },
    Route {
        id: RouteId::Tail,
        path: "/api/v1/logs/tail",
        protected: true,
        audited: true,
        records_refusals: true,
    },
    Route {
        id: RouteId::Stream,
        path: "/api/v1/logs/stream",
        protected: true,
        audited: true,
        records_refusals: true,
    },
    Route {
        id: RouteId::LogById,
        path: "/api/v1/logs/{id}",
        protected: true,
        audited: true,
        records_refusals: true,
    },
    Route {
        id: RouteId::Stats,
        path: "/api/v1/stats",
        protected: true,
        audited: true,
        records_refusals: true,
    },
];

/// Finds the route for a path, and the `{id}` segment when the route has one.
pub fn route_for(path: &str) -> Option<(&'static Route, Option<&str>)> {
    if let Some(route) = ROUTES.iter().find(|r| r.path == path) {
        return Some((route, None));
    }
    let id = path.strip_prefix("/api/v1/logs/")?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    ROUTES
        .iter()
        .find(|r| r.id == RouteId::LogById)
        .map(|r| (r, Some(id)))
}

fn timeout_error(limit: Duration) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "request_timeout",
        format!("no answer within {limit:?}; narrow the filters"),
    )
}

/// Who made a request: for the access record.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The name of the caller's token, or `anonymous`.
    pub name: String,
    /// The peer's address.
    pub ip: std::net::IpAddr,
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

impl App {
    /// The shared state of a server; the concurrency bounds come from `limits`.
    pub fn new(
        pool: Pool,
        tokens: Arc<TokenStore>,
        limits: Limits,
        stopping: watch::Receiver<bool>,
        access_audit: Option<Dispatch>,
        audit_handle: Option<Arc<AuditHandle>>,
        commit_notices: Option<CommitNotices>,
    ) -> Self {
        App {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            stream_permits: Arc::new(Semaphore::new(limits.max_streams)),
            pool,
            tokens,
            limits,
            metrics: Metrics::default(),
            stopping,
            access_audit,
            audit_handle,
            commit_notices,
            text_sample: Arc::default(),
            narrowed_text_searches: AtomicU64::new(0),
        }
    }

    /// The filters of a request, taken out of `params`, with text search tuned to the
    /// current message sample.
    pub fn filters(&self, params: &mut Params) -> Result<Filters, ApiError> {
        let mut filters = Filters::parse(params)?;
        if filters.narrow_text_search(&self.text_sample.current()) {
            self.narrowed_text_searches.fetch_add(1, Ordering::Relaxed);
        }
        Ok(filters)
    }

    /// A slot for an export or event stream, held until it ends; or 503.
    pub fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.stream_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("exports and event streams"))
    }

    /// A pooled connection, or 503.
    pub async fn client(&self) -> Result<Object, ApiError> {
        self.pool.get().await.map_err(|e| {
            tracing::warn!(error = %e, "no database connection for a request");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "no database connection is available; try again",
            )
        })
    }

    /// Serves one request, whatever happens: every outcome is a response.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let Some((route, id)) = route_for(request.uri().path()) else {
            let response =
                ApiError::not_found("no such route; see /api/v1/openapi.json").into_response();
            self.metrics
                .observe("unmatched", response.status().as_u16(), started.elapsed());
            return response;
        };
        let label = route.path;
        let response = self
            .handle_route(route, id.map(str::to_owned), request, peer)
            .await;
        self.metrics
            .observe(label, response.status().as_u16(), started.elapsed());
        response
    }

    async fn handle_route(
        self: &Arc<Self>,
        route: &'static Route,
        id: Option<String>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET is supported",
            )
            .into_response();
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let Some(caller) = self.authenticate(route, &request, peer) else {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required: Authorization: Bearer <token>",
            )
            .into_response();
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"auditd\""),
            );
            return response;
        };
        if !route.audited {
            // Health, metrics, the OpenAPI document: cheap, and needed most under load.
            let params = Params::parse(request.uri().query());
            let work = async { self.dispatch(route, id, params?, &request, caller).await };
            return match tokio::time::timeout(self.limits.request_timeout, work).await {
                Ok(Ok(answer)) => answer.response,
                Ok(Err(e)) => e.into_response(),
                Err(_) => timeout_error(self.limits.request_timeout).into_response(),
            };
        }
        let answer = self.read(route, id, &request, caller.clone()).await;
        match &answer.access {
            Some(access) => {
                self.metrics.rows_served(route.path, access.rows);
                self.record_access(
                    &caller,
                    route,
                    &access.filters,
                    access.rows,
                    answer.response.status(),
                );
            }
            // Streams record their own access when they end; every failure is recorded here.
            None if !answer.response.status().is_success() => {
                self.record_access(&caller, route, &Value::Null, 0, answer.response.status());
            }
            None => {}
        }
        answer.response
    }

    /// Serves a read of the audit logs within the concurrency bound and the timeout.
    async fn read(
        self: &Arc<Self>,
        route: &'static Route,
        id: Option<String>,
        request: &Request<Incoming>,
        caller: Caller,
    ) -> Answer {
        // Beyond the bound, answer at once: queueing would only turn overload into timeouts.
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return Answer::plain(ApiError::overloaded("requests").into_response());
        };
        let work = async {
            let params = Params::parse(request.uri().query())?;
            self.dispatch(route, id, params, request, caller).await
        };
        match tokio::time::timeout(self.limits.request_timeout, work).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Answer::plain(e.into_response()),
            Err(_) => Answer::plain(timeout_error(self.limits.request_timeout).into_response()),
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        route: &'static Route,
        id: Option<String>,
        params: Params,
        request: &Request<Incoming>,
        caller: Caller,
    ) -> Result<Answer, ApiError> {
        match route.id {
            RouteId::Viewer(asset) => Ok(Answer::plain(viewer::serve(asset))),
            RouteId::Healthz => Ok(Answer::plain(health::healthz())),
            RouteId::Readyz => Ok(Answer::plain(health::readyz(self).await)),
            RouteId::Metrics => Ok(Answer::plain(self.render_metrics())),
            RouteId::OpenApi => Ok(Answer::plain(openapi::document())),
            RouteId::Logs => logs::list(self, params).await,
            RouteId::LogById => logs::by_id(self, id.as_deref().unwrap_or(""), params).await,
            RouteId::Export => export::export(self, params, caller, route).await,
            RouteId::ExportLink => export_link::issue(self, request.uri().query(), &caller),
            RouteId::Tail => tail::long_poll(self, params).await,
            RouteId::Stream => {
                let last_event_id = request
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                tail::stream(self, params, last_event_id, caller, route).await
            }
            RouteId::Stats => event_stats::stats(self, params).await,
        }
    }

    /// The caller, or `None` when a token is required and missing or wrong (recorded).
    fn authenticate(
        &self,
        route: &Route,
        request: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Option<Caller> {
        let anonymous = Caller {
            name: "anonymous".to_owned(),
            ip: peer.ip(),
        };
        let tokens = self.tokens.current();
        if !route.protected || tokens.is_empty() {
            return Some(anonymous);
        }
        let header = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        let from_link = || {
            // A download link stands in for the token that signed it (`export_link`).
            (route.id == RouteId::Export)
                .then(|| request.uri().path_and_query())
                .flatten()
                .and_then(|target| export_link::signer(&tokens, target.as_str()))
        };
        match tokens.check(header).map(str::to_owned).or_else(from_link) {
            Some(name) => Some(Caller {
                name,
                ip: peer.ip(),
            }),
            None => {
                if route.records_refusals {
                    let link = request
                        .uri()
                        .query()
                        .is_some_and(|q| q.contains("link_signature="));
                    self.record_denied(&anonymous, route, header.is_some() || link);
                }
                None
            }
        }
    }

    /// Writes the `audit_access` record of a read: who, from where, which filters, how many
    /// rows, with what outcome.
    pub fn record_access(
        &self,
        caller: &Caller,
        route: &Route,
        filters: &Value,
        rows: u64,
        status: StatusCode,
    ) {
        let metadata = json!({
            "route": route.path,
            "filters": filters,
            "rows": rows,
            "status": status.as_u16(),
        })
        .to_string();
        self.emit_access(caller, &metadata, false);
    }

    fn record_denied(&self, caller: &Caller, route: &Route, had_token: bool) {
        // Not "token_presented": a field named like a secret would be redacted.
        let metadata =
            json!({ "route": route.path, "credentials_presented": had_token }).to_string();
        self.emit_access(caller, &metadata, true);
    }

    /// The one place access records are emitted (tracing levels are per callsite, hence
    /// the two arms).
    fn emit_access(&self, caller: &Caller, metadata: &str, denied: bool) {
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
        match &self.access_audit {
            Some(dispatch) => tracing::dispatcher::with_default(dispatch, emit),
            None => emit(),
        }
    }

    fn render_metrics(&self) -> Response<Body> {
        let pool = self.pool.status();
        let mut extra = vec![
            Extra {
                name: "auditd_db_pool_connections",
                kind: "gauge",
                help: "Open database connections.",
                value: pool.size as f64,
            },
            Extra {
                name: "auditd_db_pool_available",
                kind: "gauge",
                help: "Idle database connections.",
                value: pool.available as f64,
            },
            Extra {
                name: "auditd_db_pool_waiting",
                kind: "gauge",
                help: "Requests waiting for a database connection.",
                value: pool.waiting as f64,
            },
            Extra {
                name: "auditd_db_pool_max",
                kind: "gauge",
                help: "Most database connections allowed.",
                value: pool.max_size as f64,
            },
            Extra {
                name: "auditd_http_requests_in_flight",
                kind: "gauge",
                help: "Requests being served now.",
                value: (self.limits.max_concurrent_requests - self.permits.available_permits())
                    as f64,
            },
            Extra {
                name: "auditd_text_search_sample_messages",
                kind: "gauge",
                help:
                    "Messages in the sample that tunes text search (0 without the trigram index).",
                value: self.text_sample.current().len() as f64,
            },
            Extra {
                name: "auditd_text_searches_narrowed_total",
                kind: "counter",
                help: "Text searches whose index lookup left out parts common in the sample.",
                value: self.narrowed_text_searches.load(Ordering::Relaxed) as f64,
            },
        ];
        if let Some(handle) = &self.audit_handle {
            let s = handle.stats();
            for (name, help, value) in [
                (
                    "auditd_access_records_written_total",
                    "Access records committed.",
                    s.written,
                ),
                (
                    "auditd_access_records_dropped_total",
                    "Access records dropped (queue full or writer stopped).",
                    s.dropped,
                ),
                (
                    "auditd_access_records_rejected_total",
                    "Access records refused by PostgreSQL.",
                    s.rejected,
                ),
                (
                    "auditd_access_writer_retries_total",
                    "Retried writes of access records.",
                    s.retries,
                ),
            ] {
                extra.push(Extra {
                    name,
                    kind: "counter",
                    help,
                    value: value as f64,
                });
            }
        }
        crate::http::response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            self.metrics.render(&extra),
        )
    }
}
