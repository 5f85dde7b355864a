//! A fleet as an operator runs it: a [`Cluster`] whose nodes authenticate callers with
//! `--auth jwt` against one local issuer, behind a real HAProxy.
//!
//! HAProxy comes from the system (`.ci/run` installs Debian's package). Without it a test
//! is skipped with a message, unless `CI` is set: then it fails.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{Builder, Cluster, READY_DEADLINE};
use crate::issuer::{Issuer, Key, CLIENT_ID, CLIENT_SECRET};
use crate::lb::{self, Lb, Reservation};

/// The scope every token the fleet's clients get holds.
pub const SCOPE: &str = "mcp";
/// What the nodes name as their public URL when no balancer is in front of them; tokens
/// name it as their audience.
const UNBALANCED_RESOURCE: &str = "https://mcp.fleet.test/mcp";

/// How to start a fleet.
pub struct FleetBuilder {
    cluster: Builder,
    balanced: bool,
    token_exchange: bool,
    preset: Option<String>,
}

impl FleetBuilder {
    /// Leaves out the load balancer, for tests that talk to each node directly; such a
    /// fleet needs no HAProxy.
    pub fn unbalanced(mut self) -> Self {
        self.balanced = false;
        self
    }

    /// Sets environment variable `key` on every node; see [`Builder::env`].
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cluster = self.cluster.env(key, value);
        self
    }

    /// Configures the issuer for token exchange (`[auth.issuers.token_exchange]`, the
    /// endpoint read from its metadata), so tools can call `ctx.token_for`.
    pub fn token_exchange(mut self) -> Self {
        self.token_exchange = true;
        self
    }

    /// Passes `args` to every node's `serve`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.cluster = self.cluster.args(args);
        self
    }

    /// Names the issuer's claims preset (`workos`, `auth0`, ...), as `--issuer-preset`
    /// does: under `workos` and `auth0` a token's `org_id` is its tenant (see
    /// [`Fleet::token_in`]).
    pub fn issuer_preset(mut self, preset: &str) -> Self {
        self.preset = Some(preset.to_owned());
        self
    }

    /// Runs `examples/conformance` (the built-ins plus the conformance fixtures, such as
    /// `test_elicitation`) on every node instead of `mcp-fleet`.
    pub fn conformance(self) -> Self {
        self.example("conformance")
    }

    /// Runs the program of `examples/<name>` on every node instead of `mcp-fleet`.
    pub fn example(mut self, name: &str) -> Self {
        self.cluster = self.cluster.program(crate::examples::example(name));
        self
    }

    /// Starts the issuer, `n` nodes trusting it and, unless [`FleetBuilder::unbalanced`],
    /// HAProxy in front of them; waits until every node is ready and HAProxy's health
    /// checks see every node up. `None` (after saying why on standard error) when the
    /// test must be skipped because HAProxy is not installed and `CI` is not set.
    pub fn start(self, n: u64) -> Option<Fleet> {
        let haproxy = match (self.balanced, lb::binary()) {
            (false, _) => None,
            (true, Some(binary)) => Some(binary),
            (true, None) => {
                let test = std::thread::current()
                    .name()
                    .unwrap_or("this test")
                    .to_owned();
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{test}: haproxy is not installed, and CI is set (.ci/run installs it)"
                );
                eprintln!(
                    "SKIPPED {test}: haproxy is not installed (apt-get install haproxy); \
                     with CI set this is a failure"
                );
                return None;
            }
        };
        let issuer = Issuer::start();
        // The balancer's port is held from now until HAProxy starts, so the nodes can be
        // told the URL clients use: their OAuth resource, which tokens name.
        let reservation = haproxy.as_ref().map(|_| Reservation::new());
        let resource = match &reservation {
            Some(r) => format!("http://127.0.0.1:{}/mcp", r.port()),
            None => UNBALANCED_RESOURCE.to_owned(),
        };
        let cluster = if self.token_exchange {
            // No flag configures token exchange: the issuer list comes from the
            // environment, as an operator without a config file would write it.
            let preset = self
                .preset
                .as_deref()
                .map(|p| format!(", preset=\"{p}\""))
                .unwrap_or_default();
            let issuers = format!(
                "[{{issuer=\"{}\"{preset}, token_exchange={{client_id=\"{CLIENT_ID}\", \
                 client_secret=\"{CLIENT_SECRET}\"}}}}]",
                issuer.url()
            );
            self.cluster
                .env("MCP_FLEET_AUTH__ISSUERS", &issuers)
                .args(&["--auth", "jwt"])
        } else {
            let cluster = self
                .cluster
                .args(&["--auth", "jwt", "--issuer", issuer.url()]);
            match &self.preset {
                Some(preset) => cluster.args(&["--issuer-preset", preset]),
                None => cluster,
            }
        };
        let cluster = cluster.args(&["--public-url", &resource]).start(n);
        let lb = haproxy.zip(reservation).map(|(binary, reservation)| {
            let backends: Vec<_> = cluster
                .ids()
                .into_iter()
                .map(|id| (id, cluster.node(id).public()))
                .collect();
            Lb::start(&binary, reservation, &backends)
        });
        let fleet = Fleet {
            lb,
            cluster,
            issuer,
            resource,
        };
        if fleet.lb.is_some() {
            for id in fleet.cluster.ids() {
                fleet.wait_lb(id, true);
            }
        }
        Some(fleet)
    }
}

/// A running fleet: the balancer, the nodes and the issuer, stopped in that order when
/// dropped (fields drop in declaration order).
pub struct Fleet {
    lb: Option<Lb>,
    /// The nodes.
    pub cluster: Cluster,
    /// The issuer every node trusts.
    pub issuer: Issuer,
    resource: String,
}

impl Fleet {
    /// A fleet of nodes behind a balancer, to configure before starting.
    pub fn builder() -> FleetBuilder {
        FleetBuilder {
            cluster: Cluster::builder(),
            balanced: true,
            token_exchange: false,
            preset: None,
        }
    }

    /// The load balancer; panics for an [`FleetBuilder::unbalanced`] fleet.
    pub fn lb(&self) -> &Lb {
        self.lb.as_ref().expect("this fleet has no load balancer")
    }

    /// The MCP endpoint through the load balancer.
    pub fn url(&self) -> String {
        self.lb().url()
    }

    /// A 2026-07-28 call of `tool` with `args` through node `id` as `token`: the answer's
    /// text and whether it is a tool error.
    pub fn tool_text(&self, id: u64, token: &str, tool: &str, args: Value) -> (String, bool) {
        let url = self.cluster.node(id).mcp_url();
        let reply = crate::client::modern_call(&url, Some(token), tool, args.clone())
            .unwrap_or_else(|e| panic!("{tool} {args} through node {id}: {e}"));
        assert_eq!(
            reply.status, 200,
            "{tool} {args} through node {id}: {reply:?}"
        );
        let message = reply.message().expect("a JSON-RPC answer");
        let result = &message["result"];
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        (text, result["isError"] == json!(true))
    }

    /// A signed token for `subject` holding [`SCOPE`], valid for an hour.
    pub fn token(&self, subject: &str) -> String {
        self.issuer
            .token(Key::Rsa1, &self.resource)
            .subject(subject)
            .scope(SCOPE)
            .sign()
    }

    /// A signed token for `subject` of tenant `tenant` (the `org_id` claim, as the
    /// `workos` and `auth0` presets read it), holding [`SCOPE`].
    pub fn token_in(&self, tenant: &str, subject: &str) -> String {
        self.issuer
            .token(Key::Rsa1, &self.resource)
            .subject(subject)
            .scope(SCOPE)
            .set("org_id", tenant)
            .sign()
    }

    /// Waits until HAProxy's health checks say node `id` is up (or, with `up` false,
    /// down).
    pub fn wait_lb(&self, id: u64, up: bool) {
        let state = if up { "up" } else { "down" };
        let lb = self.lb();
        self.eventually(
            &format!("haproxy to see node {id} {state}"),
            READY_DEADLINE,
            || (lb.is_up(id) == up).then_some(()),
        );
    }

    /// [`Cluster::eventually`], with HAProxy's log and counters in the failure message.
    #[track_caller]
    pub fn eventually<T>(
        &self,
        what: &str,
        deadline: Duration,
        probe: impl FnMut() -> Option<T>,
    ) -> T {
        crate::harness::poll(deadline, probe).unwrap_or_else(|| {
            panic!(
                "timed out after {deadline:?} waiting for {what}\n{}",
                self.logs()
            )
        })
    }

    /// Opens a session as `user` through `url` once one can be opened there (within
    /// [`READY_DEADLINE`]), and checks that every node serves it: what a healed fleet owes.
    #[track_caller]
    pub fn new_session_served_everywhere(&self, url: &str, user: &str, token: &str) {
        let fresh = self.eventually("a new session through it", READY_DEADLINE, || {
            crate::client::Session::create_as(url, user, token).ok()
        });
        for id in self.cluster.ids() {
            let via = self.cluster.node(id).mcp_url();
            assert_eq!(fresh.echo(&via, "everywhere"), Ok("everywhere".to_owned()));
        }
    }

    /// The nodes' logs and HAProxy's, for failure messages.
    pub fn logs(&self) -> String {
        let lb = self
            .lb
            .as_ref()
            .map(|lb| format!("--- haproxy ---\n{}\n{:?}\n", lb.log(), lb.stats()))
            .unwrap_or_default();
        format!("{}{lb}", self.cluster.logs())
    }
}
