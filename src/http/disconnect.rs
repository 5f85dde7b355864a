//! Noticing that a client closed its connection while its request runs.
//!
//! In 2026-07-28, closing the response stream is how a client cancels. actix-web neither
//! drops a handler nor ends a response body when the peer goes away; it notices only when
//! a later write fails. So each connection keeps a duplicate of its socket, and a
//! request that must be cancelled on disconnect watches that duplicate for end-of-file.

use std::os::fd::{AsFd, OwnedFd};

use actix_web::dev::Extensions;
use actix_web::HttpRequest;
use tokio_util::sync::CancellationToken;

/// A duplicate of a connection's socket, kept in the connection's extensions.
struct PeerSocket(OwnedFd);

/// `HttpServer::on_connect` hook: remembers a duplicate of each accepted TCP socket.
pub(crate) fn on_connect(conn: &dyn std::any::Any, extensions: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            extensions.insert(PeerSocket(fd));
        }
    }
}

/// Cancels `cancel` if the client closes the connection before `done` is cancelled.
pub(crate) fn watch(req: &HttpRequest, cancel: CancellationToken, done: CancellationToken) {
    let Some(socket) = req.conn_data::<PeerSocket>() else {
        return;
    };
    let Ok(fd) = socket.0.try_clone() else {
        return;
    };
    let std_stream = std::net::TcpStream::from(fd);
    if std_stream.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
        return;
    };
    actix_web::rt::spawn(async move {
        let mut probe = [0u8; 1];
        tokio::select! {
            () = done.cancelled() => {}
            read = stream.peek(&mut probe) => match read {
                // End of file or a broken connection: the client is gone.
                Ok(0) | Err(_) => cancel.cancel(),
                // More bytes (a pipelined request): the client is still there.
                Ok(_) => {}
            },
        }
    });
}
