//! DNS-rebinding protection: `Origin` and `Host` checks on the MCP endpoint.

use std::net::IpAddr;

use actix_web::http::header::{HOST, ORIGIN};
use actix_web::HttpRequest;

use super::Config;

/// Whether `origin` (scheme://host[:port]) is one this server accepts from browsers.
pub(crate) fn origin_allowed(config: &Config, origin: &str) -> bool {
    if config.allowed_origins.iter().any(|allowed| allowed == "*") {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    let host = strip_port(rest);
    if is_loopback_host(host) {
        return true;
    }
    config
        .allowed_origins
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
}

/// Checks a request's `Origin` and its `Host`: on a listener bound to loopback address
/// `listen`, `Host` must be a loopback name (`localhost`, `127.0.0.1`, `::1`), `listen`
/// itself (the URL the node prints), or listed in `http.allowed_hosts`; elsewhere, listed
/// when the list is not empty. Returns the reason for refusal.
pub(crate) fn check(config: &Config, listen: IpAddr, req: &HttpRequest) -> Result<(), String> {
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(config, origin) {
            return Err(format!("Origin not allowed: {origin}"));
        }
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host_only = strip_port(host);
    let listed = config
        .allowed_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(host_only));
    let loopback = listen.is_loopback();
    // Only the listener's own address, not any loopback address: a page that reached us
    // through DNS rebinding names its own host, never an address literal.
    let own = host_only.parse::<IpAddr>().is_ok_and(|ip| ip == listen);
    if loopback && !is_loopback_host(host_only) && !own && !listed {
        return Err(format!("Host not allowed: {host}"));
    }
    if !loopback && !config.allowed_hosts.is_empty() && !listed {
        return Err(format!("Host not allowed: {host}"));
    }
    Ok(())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8080
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "::1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let mut c = Config::default();
        assert!(origin_allowed(&c, "http://localhost:6274"));
        assert!(origin_allowed(&c, "http://127.0.0.1"));
        assert!(origin_allowed(&c, "http://[::1]:3000"));
        assert!(!origin_allowed(&c, "http://evil.example.com"));
        assert!(!origin_allowed(&c, "http://localhost.evil.com"));
        assert!(!origin_allowed(&c, "null"));
        c.allowed_origins.push("https://app.example.com".into());
        assert!(origin_allowed(&c, "https://app.example.com"));
    }

    fn host_check(listen: &str, host: &str) -> Result<(), String> {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("host", host))
            .to_http_request();
        check(&Config::default(), listen.parse().unwrap(), &req)
    }

    #[test]
    fn a_loopback_listener_accepts_its_own_address_and_refuses_foreign_hosts() {
        assert_eq!(host_check("127.0.0.2", "127.0.0.2:8080"), Ok(()));
        assert_eq!(host_check("127.0.0.2", "localhost:8080"), Ok(()));
        assert_eq!(host_check("127.0.0.1", "127.0.0.1:8080"), Ok(()));
        assert_eq!(host_check("::1", "[::1]:8080"), Ok(()));
        for (listen, host) in [
            ("127.0.0.2", "evil.example.com:8080"),
            ("127.0.0.2", "127.0.0.3:8080"),
            ("127.0.0.1", "127.0.0.2:8080"),
            ("127.0.0.2", "127.0.0.2.evil.example.com"),
        ] {
            assert_eq!(
                host_check(listen, host),
                Err(format!("Host not allowed: {host}")),
                "{listen} {host}"
            );
        }
        // Off loopback the Host is free unless http.allowed_hosts lists some.
        assert_eq!(host_check("10.0.0.1", "anything.example.com"), Ok(()));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("localhost:8080"), "localhost");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
