//! The route table: every path the server answers, and how requests to it are handled.
//! The OpenAPI document is checked against it.

use crate::auth::Scope;
use crate::handlers::viewer::Asset;

/// The routes the server answers. The OpenAPI document is checked against this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    /// A file of the viewer page.
    Viewer(Asset),
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
    /// Records over time by severity, and the most common values of the filters.
    Overview,
    /// A record's proof: in its batch, its batch in the signed log.
    LogProof,
    /// Records with their proofs, to check offline.
    Bundle,
    /// The signed checkpoints of the log.
    Checkpoints,
    /// A consistency proof between two sizes of the log.
    Consistency,
    /// Records sent by producers in any language, written through the audit layer.
    Ingest,
}

/// The methods a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// `GET` and `HEAD`: every reading route.
    Read,
    /// `POST` only.
    Post,
}

impl Methods {
    /// Whether `method` is one of these.
    pub fn allow(self, method: &hyper::Method) -> bool {
        match self {
            Methods::Read => method == hyper::Method::GET || method == hyper::Method::HEAD,
            Methods::Post => method == hyper::Method::POST,
        }
    }

    /// The `Allow` header's value.
    pub fn header(self) -> &'static str {
        match self {
            Methods::Read => "GET, HEAD",
            Methods::Post => "POST",
        }
    }
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
    /// them) or writes them, so a request refused for its token is recorded.
    pub records_refusals: bool,
    /// The methods it answers.
    pub methods: Methods,
    /// What its caller's token must allow (when it is protected).
    pub scope: Scope,
}

/// The route table: every path the server answers (see `route_for`).
pub const ROUTES: &[Route] = &[
    Route {
        id: RouteId::Viewer(Asset::Page),
        path: "/",
        protected: false,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Viewer(Asset::Script),
        path: "/viewer.js",
        protected: false,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Viewer(Asset::Style),
        path: "/viewer.css",
        protected: false,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Healthz,
        path: "/healthz",
        protected: false,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Readyz,
        path: "/readyz",
        protected: false,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Metrics,
        path: "/metrics",
        protected: true,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::OpenApi,
        path: "/api/v1/openapi.json",
        protected: false,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Logs,
        path: "/api/v1/logs",
        protected: true,
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Export,
        path: "/api/v1/logs/export",
        protected: true,
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::ExportLink,
        path: "/api/v1/logs/export/link",
        protected: true,
        // The download it leads to is the read, and is recorded as one.
        audited: false,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Tail,
        path: "/api/v1/logs/tail",
        protected: true,
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Stream,
        path: "/api/v1/logs/stream",
        protected: true,
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Bundle,
        path: "/api/v1/logs/bundle",
        protected: true,
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::LogById,
        path: "/api/v1/logs/{id}",
        protected: true,
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Stats,
        path: "/api/v1/stats",
        protected: true,
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Overview,
        path: "/api/v1/overview",
        protected: true,
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::LogProof,
        path: "/api/v1/logs/{id}/proof",
        protected: true,
        // A proof carries the record's encoding: it is a read of the record.
        audited: true,
        records_refusals: true,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Checkpoints,
        path: "/api/v1/checkpoints",
        protected: true,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Consistency,
        path: "/api/v1/checkpoints/consistency",
        protected: true,
        audited: false,
        records_refusals: false,
        methods: Methods::Read,
        scope: Scope::Read,
    },
    Route {
        id: RouteId::Ingest,
        path: "/api/v1/events",
        protected: true,
        // Writes, recorded as the records themselves (each names its sender).
        audited: false,
        records_refusals: true,
        methods: Methods::Post,
        scope: Scope::Write,
    },
];

/// Finds the route for a path, and the `{id}` segment when the route has one.
pub fn route_for(path: &str) -> Option<(&'static Route, Option<&str>)> {
    if let Some(route) = ROUTES.iter().find(|r| r.path == path) {
        return Some((route, None));
    }
    let rest = path.strip_prefix("/api/v1/logs/")?;
    let (id, route) = match rest.split_once('/') {
        None => (rest, RouteId::LogById),
        Some((id, "proof")) => (id, RouteId::LogProof),
        Some(_) => return None,
    };
    if id.is_empty() {
        return None;
    }
    ROUTES.iter().find(|r| r.id == route).map(|r| (r, Some(id)))
}
