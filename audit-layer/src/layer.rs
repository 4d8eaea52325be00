//! The tracing [`Layer`]: where an audit event becomes an [`AuditLog`](crate::AuditLog).
//!
//! Selection happens in a per-layer [`Filter`] that looks only at callsite metadata, so
//! tracing caches the verdict per callsite: events that are not audit events cost this
//! layer close to nothing, and the layer never hides any event from other layers.
//!
//! Spans are seen when they carry a column this layer passes on (`username`, `user_id`,
//! `ip_address`, `resource_*`) or have the audit target; their values live in the span's
//! extensions, updated by `Span::record`, and are merged into each event innermost first.

use std::cell::RefCell;
use std::sync::Arc;

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::capture::{
    self, is_inherited_field, CallsitePlan, Capture, Draft, Members, Redactor, Scope,
};
use crate::queue::{EventTime, RecordSender};
use crate::stats::Counters;

/// The tracing target that marks audit events, as in `info!(target: "audit", ...)`.
pub const DEFAULT_TARGET: &str = "audit";

/// The layer that turns audit events into records and queues them for the writer.
///
/// Built, together with its per-layer filter and the writer, by
/// [`AuditLayer::builder`](crate::AuditLayer::builder).
pub struct AuditLayer {
    /// Tells this layer's span data from another audit layer's in the same registry.
    pub(crate) id: usize,
    pub(crate) sender: RecordSender,
    pub(crate) redactor: Redactor,
    pub(crate) target: Arc<str>,
    pub(crate) max_message_bytes: usize,
    pub(crate) counters: Arc<Counters>,
    /// When set, the time of each record instead of the system clock's.
    pub(crate) clock: Option<fn() -> chrono::DateTime<chrono::Utc>>,
    /// Where the OpenTelemetry context of spans is found (`crate::trace`).
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel: crate::trace::Subscriber,
}

impl std::fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLayer")
            .field("target", &self.target)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

/// Whether `target` is `audit` itself or a sub-target such as `audit::auth`.
fn is_audit_target(audit: &str, target: &str) -> bool {
    match target.strip_prefix(audit) {
        Some("") => true,
        Some(rest) => rest.starts_with("::"),
        None => false,
    }
}

/// What each audit layer captured from a span, kept in the span's extensions. A registry
/// may hold more than one audit layer (two targets, two databases), and extensions hold one
/// value per type, so the drafts are keyed by layer.
#[derive(Default)]
struct SpanDrafts(Vec<(usize, Draft)>);

impl SpanDrafts {
    fn of(&self, layer: usize) -> Option<&Draft> {
        self.0.iter().find(|(id, _)| *id == layer).map(|(_, d)| d)
    }
}

impl AuditLayer {
    fn store(
        &self,
        extensions: &mut tracing_subscriber::registry::ExtensionsMut<'_>,
        later: Draft,
    ) {
        if extensions.get_mut::<SpanDrafts>().is_none() {
            extensions.insert(SpanDrafts::default());
        }
        let Some(drafts) = extensions.get_mut::<SpanDrafts>() else {
            return;
        };
        // Every event in the span inherits its address: it is parsed once, here.
        if let Some((_, draft)) = drafts.0.iter_mut().find(|(id, _)| *id == self.id) {
            draft.update(later);
            draft.parse_ip();
        } else {
            let mut draft = later;
            draft.parse_ip();
            drafts.0.push((self.id, draft));
        }
    }

    fn span_scope(&self, metadata: &Metadata<'_>) -> Scope {
        if is_audit_target(&self.target, metadata.target()) {
            Scope::Everything
        } else {
            Scope::InheritedColumns
        }
    }

    fn capture(
        &self,
        metadata: &'static Metadata<'static>,
        values: impl FnOnce(&mut Capture<'_>),
    ) -> Draft {
        let mut draft = Draft::default();
        let plan = CallsitePlan::of(metadata, &self.redactor);
        let mut capture = Capture::new(
            &mut draft,
            &self.redactor,
            &plan,
            self.span_scope(metadata),
            self.max_message_bytes,
        );
        values(&mut capture);
        draft
    }
}

impl<S> Layer<S> for AuditLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    #[cfg(feature = "opentelemetry")]
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.otel.register(subscriber);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let draft = self.capture(attrs.metadata(), |c| attrs.record(c));
        if draft.is_empty() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            self.store(&mut span.extensions_mut(), draft);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // Format the values before taking the extensions lock: user `Debug` impls may do
        // anything, including touching this span.
        let later = self.capture(span.metadata(), |c| values.record(c));
        if later.is_empty() {
            return;
        }
        self.store(&mut span.extensions_mut(), later);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let created_at = match self.clock {
            None => EventTime::now(),
            Some(now) => EventTime::from_datetime(now()),
        };
        let (record, fixups) = with_scratch(|scratch| {
            let Scratch {
                draft,
                span_metadata,
            } = scratch;
            let plan = CallsitePlan::of(event.metadata(), &self.redactor);
            event.record(&mut Capture::new(
                draft,
                &self.redactor,
                &plan,
                Scope::Everything,
                self.max_message_bytes,
            ));
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    let extensions = span.extensions();
                    let Some(span_draft) =
                        extensions.get::<SpanDrafts>().and_then(|d| d.of(self.id))
                    else {
                        continue;
                    };
                    draft.inherit(span_draft);
                    if !span_draft.metadata.is_empty() {
                        // Innermost first here; outer spans' members must come first.
                        span_metadata.prepend(&span_draft.metadata);
                        // What was repaired in them is noted in every record that has them.
                        draft.notes.extend(span_draft.notes.iter().cloned());
                    }
                }
            }
            #[cfg(feature = "opentelemetry")]
            self.otel
                .prepend_ids(event, |id| ctx.exists(id), span_metadata);
            capture::finish(
                draft,
                span_metadata,
                *event.metadata().level(),
                created_at,
                self.max_message_bytes,
            )
        });
        if fixups > 0 {
            Counters::add(&self.counters.fixups, fixups);
        }
        self.sender.push(record);
    }
}

/// The buffers an event is captured into, kept per thread and reused, so that capturing
/// allocates nothing (the record itself is one allocation, made by `sanitize::finish`).
#[derive(Default)]
struct Scratch {
    draft: Draft,
    span_metadata: Members,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `build` with this thread's scratch buffers, emptied; or with fresh ones when they
/// are in use or gone (a thread being torn down). In use cannot happen through tracing,
/// which never re-enters a subscriber from its own calls on the same thread; the fallback
/// keeps that an assumption this layer does not depend on.
fn with_scratch<T>(build: impl Fn(&mut Scratch) -> T) -> T {
    SCRATCH
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.draft.clear();
                scratch.span_metadata.clear();
                build(&mut scratch)
            }
            Err(_) => build(&mut Scratch::default()),
        })
        .unwrap_or_else(|_| build(&mut Scratch::default()))
}

/// The per-layer filter that selects audit events, and the spans that carry their context.
///
/// It decides from callsite metadata alone, so tracing caches each verdict per callsite.
#[derive(Debug, Clone)]
pub struct AuditFilter {
    target: Arc<str>,
}

impl AuditFilter {
    pub(crate) fn new(target: Arc<str>) -> Self {
        AuditFilter { target }
    }

    fn wants(&self, metadata: &Metadata<'_>) -> bool {
        if is_audit_target(&self.target, metadata.target()) {
            return true;
        }
        metadata.is_span()
            && metadata
                .fields()
                .iter()
                .any(|field| is_inherited_field(field.name()))
    }
}

impl<S> Filter<S> for AuditFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.wants(metadata)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.wants(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_audit_target;

    #[test]
    fn audit_target_matches_itself_and_sub_targets_only() {
        assert!(is_audit_target("audit", "audit"));
        assert!(is_audit_target("audit", "audit::auth"));
        assert!(!is_audit_target("audit", "audit_layer::writer"));
        assert!(!is_audit_target("audit", "auditd"));
        assert!(!is_audit_target("audit", "myapp::audit"));
    }
}
