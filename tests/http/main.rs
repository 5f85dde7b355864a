//! The real `mcp-fleet` binary over real HTTP: bad input is refused with the right status
//! and JSON-RPC error, and leaves the server serving.

mod client;
#[path = "../support/examples.rs"]
mod examples;
mod harness;
#[path = "../support/issuer.rs"]
mod issuer;
#[path = "../support/python.rs"]
mod python;

mod auth;

mod config;
mod embed;
mod jsonrpc;
mod keys;
mod limits;
mod metrics;
mod modern;
mod mrtr;
mod ops;
mod own_server;
mod security;
mod session_cap;
mod sessions;
mod streams;
mod tasks;
mod tools;
