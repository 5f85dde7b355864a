//! The connections of the public listener: how many are open, and how a client leaving
//! is noticed.
//!
//! In 2026-07-28, closing the response stream is how a client cancels. actix-web by
//! default keeps serving a connection whose client closed its sending side (a
//! half-closed connection), noticing the client gone only when a later write fails. The
//! public listener runs with `h1_allow_half_closed(false)` instead: when actix reads the
//! end of the stream, it ends the connection at once, dropping the request's handler and
//! response body, and with them the drop guard that cancels the call. So nothing watches
//! the socket on the side, and a connection costs one file descriptor (it cost two while
//! each connection kept a duplicate of its socket to watch, and three while a 2026-07-28
//! call ran). A client that half-closes its connection after sending a request gets no
//! answer; HTTP clients do not do that.

use std::any::Any;

use actix_web::dev::Extensions;
use prometheus_client::metrics::gauge::Gauge;

use super::keys::MAX_CONNECTIONS;
use crate::limits::Limits;

/// One open connection, counted in the in-use gauge of `http.max_connections` until the
/// connection (and with it its extensions) is dropped.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `HttpServer::on_connect` hook: counts each accepted connection while it is open.
///
/// The cap itself is actix's (`max_connections` per worker): a connection over it waits
/// in the listener's backlog and is never accepted, so there is no request to refuse and
/// no refusal to count; the gauge shows how close the node is.
pub(crate) fn on_connect(
    limits: &Limits,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    limits.declare(MAX_CONNECTIONS);
    let gauge = limits.gauge(MAX_CONNECTIONS);
    move |_connection, extensions| {
        gauge.inc();
        extensions.insert(Open(gauge.clone()));
    }
}
