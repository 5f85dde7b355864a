//! Authentication throughput by tier: memory-tier hits, replica hits (an opaque token
//! introspected by another authenticator on the same store), and full JWT verification
//! with cached keys (RS256 and ES256), through the authenticator and as one in-process
//! check (`jsonwebtoken::decode` with the node's checks; the signature step alone on
//! `ring` and on `RustCrypto`). Prints figures; asserts nothing about speed.
//!
//! Run with `cargo bench --bench auth`. With `AUTH_BENCH=in-process` it runs only the
//! in-process checks, 200 of each, for instruction counts that noise does not move:
//! `AUTH_BENCH=in-process valgrind --tool=callgrind target/release/deps/auth-…`, then
//! `callgrind_annotate --inclusive=yes` and divide a function's count by 200.

#[path = "../src/auth/test_issuer.rs"]
mod test_issuer;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jsonwebtoken::crypto::rust_crypto;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use mcp_fleet::internals::auth::{jwt_crypto, Authenticator, Config, Introspection, IssuerConfig};
use mcp_fleet::internals::crypto::{Key, Ring};
use mcp_fleet::internals::limits::Limits;
use mcp_fleet::internals::raft::Store;
use serde_json::json;
use test_issuer::{TestIssuer, TestKey, CLIENT_ID, CLIENT_SECRET};

const RESOURCE: &str = "https://mcp.example.com/mcp";

fn report(what: &str, count: usize, elapsed: Duration) {
    let per_sec = count as f64 / elapsed.as_secs_f64();
    let each_us = elapsed.as_secs_f64() * 1e6 / count as f64;
    println!("{what:<44} {per_sec:>12.0} /s   {each_us:>9.2} µs each   ({count} in {elapsed:.2?})");
}

/// CPU time of the calling thread so far, from `/proc/thread-self/schedstat` (Linux):
/// unlike wall time, it leaves out the time other processes on the box held the core.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Times `count` runs of `work` on this thread: wall and CPU time per run.
fn timed(what: &str, count: usize, mut work: impl FnMut(usize)) {
    let (start, cpu) = (Instant::now(), thread_cpu());
    for i in 0..count {
        work(i);
    }
    let elapsed = start.elapsed();
    let cpu = match (cpu, thread_cpu()) {
        (Some(before), Some(after)) => format!(
            "{:>9.2} µs CPU each",
            (after - before).as_secs_f64() * 1e6 / count as f64
        ),
        _ => "CPU time unknown".to_owned(),
    };
    let each_us = elapsed.as_secs_f64() * 1e6 / count as f64;
    println!("{what:<44} {each_us:>9.2} µs each  {cpu}   ({count} in {elapsed:.2?})");
}

fn config(issuer: &TestIssuer) -> Config {
    let mut trusted = IssuerConfig::new(issuer.issuer());
    trusted.jwks_uri = Some(issuer.jwks_uri());
    trusted.introspection = Some(Introspection::new(
        issuer.introspection_endpoint(),
        CLIENT_ID,
        CLIENT_SECRET,
    ));
    Config {
        issuers: vec![trusted],
        memory_capacity: 1_000_000,
        ..Config::default()
    }
}

async fn memory_hits(auth: &Authenticator, token: &str) {
    auth.authenticate(token).await.expect("accepted");
    let n = 500_000;
    let start = Instant::now();
    for _ in 0..n {
        auth.authenticate(token).await.expect("accepted");
    }
    report("memory-tier hit (1 thread)", n, start.elapsed());

    // The hot path shares no mailbox: two threads scale instead of queueing.
    let threads = 2;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let auth = auth.clone();
            let token = token.to_owned();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a runtime");
                rt.block_on(async {
                    for _ in 0..n {
                        auth.authenticate(&token).await.expect("accepted");
                    }
                });
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread ends");
    }
    report(
        "memory-tier hit (2 threads, total)",
        threads * n,
        start.elapsed(),
    );
}

async fn replica_hits(issuer: &TestIssuer, store: &Store) {
    let n = 2_000;
    let tokens: Vec<String> = (0..n).map(|i| format!("opaque-bench-{i}")).collect();
    let exp = test_issuer::now() + 3600;
    for (i, token) in tokens.iter().enumerate() {
        issuer.activate(
            token,
            json!({"sub": format!("user-{i}"), "scope": "mcp", "exp": exp, "aud": RESOURCE}),
        );
    }
    // Another node introspects them all and shares the results through the store.
    let producer =
        Authenticator::start(&config(issuer), RESOURCE, store.clone(), Limits::default());
    let start = Instant::now();
    for chunk in tokens.chunks(64) {
        for result in join_all(chunk.iter().map(|t| producer.authenticate(t))).await {
            result.expect("active");
        }
    }
    report(
        "introspection + store write (64 at a time)",
        n,
        start.elapsed(),
    );

    let consumer =
        Authenticator::start(&config(issuer), RESOURCE, store.clone(), Limits::default());
    let start = Instant::now();
    for token in &tokens {
        consumer.authenticate(token).await.expect("replica hit");
    }
    report("replica hit (memory tier empty)", n, start.elapsed());
    let stats = consumer.stats();
    assert_eq!(stats.replica_hits as usize, n, "{stats:?}");
    assert_eq!(stats.introspected, 0, "{stats:?}");
}

async fn full_verification(auth: &Authenticator, issuer: &TestIssuer, key: &TestKey, n: usize) {
    let tokens: Vec<String> = (0..n)
        .map(|i| key.sign(&issuer.claims(RESOURCE, &format!("user-{i}"))))
        .collect();
    let before = auth.stats().verified;
    let start = Instant::now();
    for token in &tokens {
        auth.authenticate(token).await.expect("accepted");
    }
    report(
        &format!("full JWT verification {:?}", key.alg),
        n,
        start.elapsed(),
    );
    assert_eq!((auth.stats().verified - before) as usize, n);
}

/// One full check in process, without the authenticator around it: header, signature,
/// time, issuer and audience (`jsonwebtoken::decode` as `auth::jwt` calls it), then the
/// signature step alone on each backend.
fn in_process_checks(issuer: &TestIssuer, key: &TestKey, n: usize) {
    let alg = key.alg;
    let jwk: Jwk = serde_json::from_value(key.jwk().clone()).expect("a JWK");
    let decoding = DecodingKey::from_jwk(&jwk).expect("a key");
    let tokens: Vec<String> = (0..n)
        .map(|i| key.sign(&issuer.claims(RESOURCE, &format!("user-{i}"))))
        .collect();
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer.issuer()]);
    validation.set_audience(&[RESOURCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let backend = if jwt_crypto::installed() {
        "ring"
    } else {
        "RustCrypto"
    };
    timed(
        &format!("one full check {alg:?} in-process ({backend})"),
        n,
        |i| {
            jsonwebtoken::decode::<serde_json::Value>(&tokens[i], &decoding, &validation)
                .expect("accepted");
        },
    );

    let signed: Vec<(&str, String)> = tokens
        .iter()
        .map(|t| {
            let (message, signature) = t.rsplit_once('.').expect("a JWS");
            (message, signature.to_owned())
        })
        .collect();
    timed(&format!("  signature only {alg:?} ({backend})"), n, |i| {
        let (message, signature) = &signed[i];
        let ok = jsonwebtoken::crypto::verify(signature, message.as_bytes(), &decoding, alg);
        assert!(ok.expect("checked"));
    });
    timed(
        &format!("  signature only {alg:?} (RustCrypto, before)"),
        n,
        |i| {
            let (message, signature) = &signed[i];
            let bytes = base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                signature,
            )
            .expect("base64url");
            let verifier =
                (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&alg, &decoding).expect("a key");
            verifier
                .verify(message.as_bytes(), &bytes)
                .expect("genuine");
        },
    );
}

async fn negative_hits(auth: &Authenticator, issuer: &TestIssuer) {
    let before = issuer.introspections();
    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        auth.authenticate("opaque-never-issued")
            .await
            .expect_err("inactive");
    }
    report("refused opaque token (negative tier)", n, start.elapsed());
    println!(
        "  introspections for {n} attempts with one unknown token: {}",
        issuer.introspections() - before
    );
}

/// Made-up bearers, each new, `at_once` in flight, against an issuer that takes `delay`
/// to answer: how many reach the issuer, and how many are refused for want of a slot.
async fn random_bearers(store: &Store, n: usize, at_once: usize, delay: Duration) {
    let issuer = TestIssuer::start(&[]);
    issuer.set_mode(test_issuer::Mode::Slow(delay));
    let limits = Limits::default();
    let config = config(&issuer);
    let cap = config.max_concurrent_introspections;
    let auth = Authenticator::start(&config, RESOURCE, store.clone(), limits.clone());
    let tokens: Vec<String> = (0..n).map(|i| format!("made-up-{i}")).collect();
    let start = Instant::now();
    let (mut refused, mut busy) = (0, 0);
    for chunk in tokens.chunks(at_once) {
        for result in join_all(chunk.iter().map(|t| auth.authenticate(t))).await {
            match result {
                Err(mcp_fleet::internals::auth::AuthError::Unavailable(_)) => busy += 1,
                Err(_) => refused += 1,
                Ok(_) => unreachable!("no token is active"),
            }
        }
    }
    println!(
        "{n} made-up bearers, {at_once} at a time, issuer answering in {delay:?}, cap {cap}: \
         {} sent to the issuer, {refused} refused 401, {busy} refused 503, in {:.2?}",
        issuer.introspections(),
        start.elapsed()
    );
}

async fn run() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (store, _runtime) = Store::open_single(dir.path(), Ring::single(Key::generate()))
        .await
        .expect("a one-node store");
    let (rsa1, ec1) = (TestKey::rsa1(), TestKey::ec1());
    let issuer = TestIssuer::start(&[&rsa1, &ec1]);
    let auth = Authenticator::start(&config(&issuer), RESOURCE, store.clone(), Limits::default());

    let token = rsa1.sign(&issuer.claims(RESOURCE, "alice"));
    memory_hits(&auth, &token).await;
    replica_hits(&issuer, &store).await;
    full_verification(&auth, &issuer, &rsa1, 2_000).await;
    full_verification(&auth, &issuer, &ec1, 2_000).await;
    in_process_checks(&issuer, &rsa1, 2_000);
    in_process_checks(&issuer, &ec1, 2_000);
    negative_hits(&auth, &issuer).await;
    println!("{:?}", auth.stats());
    for delay in [50, 250] {
        random_bearers(&store, 2_000, 256, Duration::from_millis(delay)).await;
    }
    store.shutdown().await;
}

fn main() {
    // First, as a node does: the first use of `jsonwebtoken` fixes its backend.
    jwt_crypto::install();
    mcp_fleet::internals::actors::install_tls_provider();
    if std::env::var("AUTH_BENCH").as_deref() == Ok("in-process") {
        let (rsa1, ec1) = (TestKey::rsa1(), TestKey::ec1());
        let issuer = TestIssuer::start(&[&rsa1, &ec1]);
        in_process_checks(&issuer, &rsa1, 200);
        in_process_checks(&issuer, &ec1, 200);
        return;
    }
    actix::System::new().block_on(run());
}
