//! Trace correlation (the `opentelemetry` feature): a record emitted inside an
//! OpenTelemetry span (through `tracing-opentelemetry`) carries that span's trace and span
//! ids, so that an audit record leads to the trace of the request that caused it, and a
//! trace to the audit records it left.
//!
//! They go into the record's metadata (`trace_id`, 32 hex digits, and `span_id`, 16), not
//! columns of their own: the record's hash covers them with no change to its encoding,
//! a schema without them serves everyone who does not trace, and auditd's `trace_id`
//! filter is answered by a partial index of the records that carry one (migration 0009). A field of the event or of
//! its spans with the same name wins: the application said so explicitly.

use std::fmt::Write as _;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::span::Id;
use tracing::{Dispatch, Event};

use crate::capture::Members;

/// The metadata key of the trace id.
pub const TRACE_ID_KEY: &str = "trace_id";

/// The metadata key of the span id.
pub const SPAN_ID_KEY: &str = "span_id";

/// The subscriber the layer is part of, where tracing-opentelemetry keeps each span's
/// context. Kept from `on_register_dispatch`: inside `on_event` the current dispatcher
/// cannot be asked for (tracing refuses re-entry while an event is being dispatched).
#[derive(Debug, Default)]
pub(crate) struct Subscriber(OnceLock<WeakDispatch>);

impl Subscriber {
    pub(crate) fn register(&self, dispatch: &Dispatch) {
        // A layer in two subscribers keeps the first: its spans are the ones it sees.
        let _ = self.0.set(dispatch.downgrade());
    }

    /// Puts the trace and span ids of the OpenTelemetry span `event` is emitted in before
    /// `members`, when it has a valid context.
    pub(crate) fn prepend_ids(
        &self,
        event: &Event<'_>,
        span_exists: impl Fn(&Id) -> bool,
        members: &mut Members,
    ) {
        let Some(dispatch) = self.0.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        // Asked of the subscriber, not of the layer's context: that one skips the spans
        // the audit filter does not select, and the innermost span, selected or not, is
        // the one the trace shows.
        let span: Option<Id> = match event.parent() {
            Some(parent) => Some(parent.clone()),
            None if event.is_contextual() => dispatch.current_span().id().cloned(),
            None => None,
        };
        // An explicit parent may be a span already closed, which tracing-opentelemetry
        // would not find (and panics on).
        let Some(span) = span.filter(|id| span_exists(id)) else {
            return;
        };
        let Some(context) = tracing_opentelemetry::get_otel_context(&span, &dispatch) else {
            return;
        };
        let otel_span = context.span();
        let ids = otel_span.span_context();
        if !ids.is_valid() {
            return;
        }
        let mut own = Members::default();
        own.key(TRACE_ID_KEY);
        let _ = write!(own.0, "\"{}\"", ids.trace_id());
        own.key(SPAN_ID_KEY);
        let _ = write!(own.0, "\"{}\"", ids.span_id());
        members.prepend(&own);
    }
}
