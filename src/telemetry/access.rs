//! What a tool call leaves for its request's access line, so that one line per call says
//! who called which tool and how it ended.
//!
//! The public listener attaches an [`AccessNote`] to each request's span; a tool call
//! running inside that span leaves its tool, caller and outcome in it, and the access
//! line takes them. A call that ends after its request's line was written (a stream that
//! outlives the response head, a task), or that runs outside any request (stdio), finds
//! no open note and logs its own line instead, so no outcome goes unlogged.

use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Registry;

/// One tool call, as the access line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolCall {
    /// The tool's name.
    pub tool: String,
    /// The caller's subject.
    pub subject: String,
    /// How the call ended, as `mcp_fleet_tool_calls_total` labels it.
    pub outcome: &'static str,
}

#[derive(Default)]
struct State {
    /// The access line is written: later calls log their own line.
    written: bool,
    call: Option<ToolCall>,
}

/// The request's note: open until its access line is written.
#[derive(Default)]
pub(crate) struct AccessNote(Mutex<State>);

impl AccessNote {
    /// A new note kept in `span`'s extensions, where code running inside the span finds it.
    /// `None` when the span is disabled (its line would not be written either).
    pub(crate) fn attach(span: &tracing::Span) -> Option<Arc<Self>> {
        span.with_subscriber(|(id, dispatch)| {
            let span = dispatch.downcast_ref::<Registry>()?.span(id)?;
            let note = Arc::new(Self::default());
            span.extensions_mut().replace(note.clone());
            Some(note)
        })
        .flatten()
    }

    /// The note of the request the current code runs for: on the current span or the
    /// nearest enclosing one that has one.
    pub(crate) fn current() -> Option<Arc<Self>> {
        tracing::dispatcher::get_default(|dispatch| {
            let current = dispatch.current_span();
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(current.id()?)?;
            span.scope()
                .find_map(|s| s.extensions().get::<Arc<Self>>().cloned())
        })
    }

    /// Leaves `call` for the access line. Gives it back when the line is already written,
    /// or a call of the same request (a batch) already left one: the caller logs it.
    pub(crate) fn leave(&self, call: ToolCall) -> Result<(), ToolCall> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if state.written || state.call.is_some() {
            return Err(call);
        }
        state.call = Some(call);
        Ok(())
    }

    /// Closes the note for the access line being written, with the call it carries.
    pub(crate) fn take(&self) -> Option<ToolCall> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.written = true;
        state.call.take()
    }
}
