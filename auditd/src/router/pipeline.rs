//! What every request goes through, in order: the route, the method, the token, the bound
//! on reads at once, the timeout, the handler, the metrics and the access record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use super::table::{route_for, Route, RouteId};
use crate::access::{Answer, Caller};
use crate::auth::{links, Scopes};
use crate::handlers::{
    bundle, export, export_link, health, ingest, logs, metrics, openapi, overview, proof, stats,
    tail, viewer,
};
use crate::http::{ApiError, Body};
use crate::query::Params;
use crate::state::App;

fn timeout_error(limit: Duration) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "request_timeout",
        format!("no answer within {limit:?}; narrow the filters"),
    )
}

/// Serves one request, whatever happens: every outcome is a response.
pub async fn handle(
    app: &Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let Some((route, id)) = route_for(request.uri().path()) else {
        let response =
            ApiError::not_found("no such route; see /api/v1/openapi.json").into_response();
        app.metrics
            .observe("unmatched", response.status().as_u16(), started.elapsed());
        return response;
    };
    let label = route.path;
    let response = handle_route(app, route, id.map(str::to_owned), request, peer).await;
    app.metrics
        .observe(label, response.status().as_u16(), started.elapsed());
    response
}

async fn handle_route(
    app: &Arc<App>,
    route: &'static Route,
    id: Option<String>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    if !route.methods.allow(request.method()) {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route answers {} only", route.methods.header()),
        )
        .into_response();
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(route.methods.header()));
        return response;
    }
    let Some(caller) = authenticate(app, route, &request, peer) else {
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
    if route.protected && !caller.scopes.allow(route.scope) {
        if route.records_refusals {
            app.access.forbidden(&caller, route.path, route.scope);
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token may not {} the audit log: it needs the {} scope (name:secret:{} in the token file)",
                route.scope.name(),
                route.scope.name(),
                route.scope.name(),
            ),
        )
        .into_response();
    }
    if route.id == RouteId::Ingest {
        // A write: bounded apart from the reads, under the same timeout, and answered by
        // the ingest handler, which takes the request's body.
        let Some(slot) = app.ingest_slot() else {
            return ApiError::overloaded("writes").into_response();
        };
        return ingest::ingest(app, request, caller, slot).await;
    }
    if !route.audited {
        // Health, metrics, the OpenAPI document: cheap, and needed most under load.
        let params = Params::parse(request.uri().query());
        let work = async { dispatch(app, route, id, params?, &request, caller).await };
        return match tokio::time::timeout(app.limits.request_timeout, work).await {
            Ok(Ok(answer)) => answer.response,
            Ok(Err(e)) => e.into_response(),
            Err(_) => timeout_error(app.limits.request_timeout).into_response(),
        };
    }
    let answer = read(app, route, id, &request, caller.clone()).await;
    match &answer.access {
        Some(access) => app.record_read(
            &caller,
            route.path,
            &access.filters,
            access.rows,
            answer.response.status(),
        ),
        // Streams record their own access when they end; every failure is recorded here.
        None if !answer.response.status().is_success() => {
            app.access.read(
                &caller,
                route.path,
                &Value::Null,
                0,
                answer.response.status(),
            );
        }
        None => {}
    }
    answer.response
}

/// Serves a read of the audit logs within the concurrency bound and the timeout.
async fn read(
    app: &Arc<App>,
    route: &'static Route,
    id: Option<String>,
    request: &Request<Incoming>,
    caller: Caller,
) -> Answer {
    // Beyond the bound, answer at once: queueing would only turn overload into timeouts.
    let Some(_slot) = app.read_slot() else {
        return Answer::plain(ApiError::overloaded("requests").into_response());
    };
    let work = async {
        let params = Params::parse(request.uri().query())?;
        dispatch(app, route, id, params, request, caller).await
    };
    match tokio::time::timeout(app.limits.request_timeout, work).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Answer::plain(e.into_response()),
        Err(_) => Answer::plain(timeout_error(app.limits.request_timeout).into_response()),
    }
}

async fn dispatch(
    app: &Arc<App>,
    route: &'static Route,
    id: Option<String>,
    params: Params,
    request: &Request<Incoming>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    match route.id {
        RouteId::Viewer(asset) => Ok(Answer::plain(viewer::serve(asset))),
        RouteId::Healthz => Ok(Answer::plain(health::healthz())),
        RouteId::Readyz => Ok(Answer::plain(health::readyz(app).await)),
        RouteId::Metrics => Ok(Answer::plain(metrics::render(app))),
        RouteId::OpenApi => Ok(Answer::plain(openapi::document())),
        RouteId::Logs => logs::list(app, params).await,
        RouteId::LogById => logs::by_id(app, id.as_deref().unwrap_or(""), params).await,
        RouteId::Export => export::export(app, params, caller, route.path).await,
        RouteId::ExportLink => export_link::issue(app, request.uri().query(), &caller),
        RouteId::Tail => tail::long_poll(app, params).await,
        RouteId::Stream => {
            let last_event_id = request
                .headers()
                .get("last-event-id")
                // Bytes that are not text are kept as text that is no event id (refused).
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            tail::stream(app, params, last_event_id, caller, route.path).await
        }
        RouteId::Stats => stats::stats(app, params).await,
        RouteId::Overview => overview::overview(app, params).await,
        RouteId::LogProof => proof::record_proof(app, id.as_deref().unwrap_or(""), params).await,
        RouteId::Bundle => bundle::bundle(app, params).await,
        RouteId::Checkpoints => proof::checkpoints(app, params).await,
        RouteId::Consistency => proof::consistency(app, params).await,
        // Answered before dispatch, with the request's body (`handle_route`).
        RouteId::Ingest => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "ingest is not a read",
        )),
    }
}

/// The caller, or `None` when a token is required and missing or wrong (recorded).
fn authenticate(
    app: &App,
    route: &Route,
    request: &Request<Incoming>,
    peer: SocketAddr,
) -> Option<Caller> {
    let anonymous = Caller {
        name: "anonymous".to_owned(),
        ip: peer.ip(),
        by_link: false,
        // With no tokens (loopback only) everything is open; a refusal's record names
        // the caller anonymous.
        scopes: Scopes::ALL,
    };
    let tokens = app.tokens.current();
    if !route.protected || tokens.is_empty() {
        return Some(anonymous);
    }
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    // A download link stands in for the token that signed it (`auth::links`); a request
    // carrying a link's parameters is let in by them or not at all, so a bad link is a
    // 401, whatever else it carries.
    let link = route.id == RouteId::Export && links::is_link(request.uri().query());
    let admitted = if link {
        // A link grants the one export it names: a read.
        request
            .uri()
            .path_and_query()
            .and_then(|target| links::signer(&tokens, target.as_str()))
            .map(|name| (name, true, Scopes::READ))
    } else {
        tokens
            .check(header)
            .map(|(name, scopes)| (name.to_owned(), false, scopes))
    };
    match admitted {
        Some((name, by_link, scopes)) => Some(Caller {
            name,
            ip: peer.ip(),
            by_link,
            scopes,
        }),
        None => {
            if route.records_refusals {
                app.access
                    .denied(&anonymous, route.path, header.is_some() || link);
            }
            None
        }
    }
}
