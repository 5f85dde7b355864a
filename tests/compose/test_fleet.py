"""The shipped compose fleet (three nodes behind HAProxy), run for real.

Scenarios, in order, each from a healthy stack and leaving one behind. The client is the
official MCP Python SDK through the port the load balancer publishes, in both eras
(legacy sessions and 2026-07-28 stateless calls); what the nodes know is read inside
them with `docker exec`. Each scenario prints its figures (`pytest -s` shows them; the
compose-test script runs with `-rA` so they are in the summary of passed tests).
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx2
import pytest

from conftest import ISSUER, NODES, Pki, Stack, run
from fleet_load import RETRYABLE, Load, Recorder, connect, whoami

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
# Workers of the load (each its own user) in the scenarios under load.
WORKERS = 4


def figures(name: str, values: dict[str, Any]) -> None:
    print(f"\n[compose] {name}: {json.dumps(values, sort_keys=True)}")


def sdk(coro_fn, *args):
    """Runs one async SDK interaction to completion."""
    return anyio.run(coro_fn, *args)


async def call_whoami(url: str, token: str, mode: str) -> tuple[dict[str, Any], str]:
    async with connect(url, token, mode, Recorder()) as client:
        return await whoami(client), client.protocol_version


async def open_sessions(url: str, token: str, count: int) -> list[str]:
    """`count` legacy sessions made with the SDK and left open when its client closes;
    their ids."""
    ids = []
    for _ in range(count):
        recorder = Recorder()
        async with connect(url, token, "legacy", recorder, keep=True) as client:
            await whoami(client)
        ids.append(recorder.session_ids[-1])
    return ids


# --- Raw requests, for probing particular sessions and nodes ------------------------------

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def rpc_body(method: str, params: dict[str, Any] | None = None, id: int = 1) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}})


def call_on_session(url: str, token: str, session: str) -> tuple[int, Any]:
    """`tools/call whoami` on a legacy session through the balancer: (status, JSON-RPC)."""
    headers = {**HEADERS, "Authorization": f"Bearer {token}", "Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
    r = httpx2.post(url, headers=headers, content=rpc_body("tools/call", {"name": "whoami", "arguments": {}}), timeout=30)
    return r.status_code, parse_reply(r.text)


def parse_reply(text: str) -> Any:
    """The JSON-RPC message of a JSON or SSE answer (None when there is none)."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip().startswith("{"):
            return json.loads(line[5:])
    return None


def post_on_node(stack: Stack, node: str, token: str, body: str, headers: dict[str, str]) -> int:
    """The status of a POST of `body` to `node` itself (inside its container), with the
    headers every MCP POST carries plus `headers`."""
    sent = {**HEADERS, "Authorization": f"Bearer {token}", **headers}
    curl = [arg for name, value in sent.items() for arg in ("-H", f"{name}: {value}")]
    status, _ = stack.http_in(node, "/mcp", "-X", "POST", *curl, "--data", body)
    return status


def probe_on_node(stack: Stack, node: str, token: str, session: str | None) -> int:
    """The status of a `tools/call whoami` sent to `node` itself: on `session` (legacy),
    or stateless (2026-07-28) when `session` is None."""
    if session is None:
        body = rpc_body("tools/call", {"name": "whoami", "arguments": {},
                                       "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                                 "io.modelcontextprotocol/clientCapabilities": {}}})
        headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "whoami"}
    else:
        body = rpc_body("tools/call", {"name": "whoami", "arguments": {}})
        headers = {"Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
    return post_on_node(stack, node, token, body, headers)


def new_session_on_node(stack: Stack, node: str, token: str) -> int:
    """The status of an `initialize` (a write: a new session) sent to `node` itself."""
    body = rpc_body("initialize", {"protocolVersion": LEGACY, "capabilities": {},
                                   "clientInfo": {"name": "compose-probe", "version": "1"}})
    return post_on_node(stack, node, token, body, {})


def delete_session(url: str, token: str, session: str, deadline_s: float = 60) -> int:
    """DELETE a legacy session through the balancer, retrying a 503 as a client would."""
    headers = {"Authorization": f"Bearer {token}", "Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
    deadline = time.monotonic() + deadline_s
    while True:
        status = httpx2.delete(url, headers=headers, timeout=30).status_code
        if status not in RETRYABLE or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def foreign_token() -> str:
    """A well-formed token for the right issuer and audience signed by another key."""
    return Pki().token("mallory")


def container_state(stack: Stack, service: str) -> dict[str, Any]:
    out = run(["docker", "inspect", stack.container(service)]).stdout
    return json.loads(out)[0]


# --- Scenarios ---------------------------------------------------------------------------


def test_the_stack_comes_up_healthy_forms_one_group_and_serves_authenticated_calls(stack: Stack) -> None:
    started = time.monotonic()
    leader = stack.wait_healthy()
    # Every container's own health check turns green (nodes: /health; lb: its monitor URI).
    for service in (*NODES, "lb"):
        stack.wait_for(
            f"{service} healthy",
            lambda s=service: container_state(stack, s)["State"].get("Health", {}).get("Status") == "healthy",
        )
    up_s = time.monotonic() - started

    status = stack.status("node1")
    members = status.get("members") if isinstance(status, dict) else None
    assert members is not None, status
    voters = sorted(m["id"] for m in members if m.get("voter", True))
    assert voters == [1, 2, 3], status
    assert {stack.leader(s) for s in NODES} == {leader}

    # The image as shipped: not root, read-only root file system, only /data writable.
    node = container_state(stack, "node1")
    assert node["HostConfig"]["ReadonlyRootfs"] is True, node["HostConfig"]
    assert stack.exec("node1", "id", "-u").stdout.strip() != "0"
    assert stack.exec("node1", "touch", "/usr/local/bin/x", check=False).returncode != 0
    assert stack.exec("node1", "touch", "/data/x", check=False).returncode == 0

    url = stack.url
    token = stack.pki.token("alice")
    for mode, version in (("legacy", LEGACY), ("auto", MODERN)):
        me, negotiated = sdk(call_whoami, url, token, mode)
        assert me["subject"] == "alice", me
        assert negotiated == version, (mode, negotiated)

    # Authentication is real: no token, or one the issuer did not sign, is a 401.
    for headers in ({}, {"Authorization": "Bearer " + foreign_token()}):
        r = httpx2.post(url, headers={**HEADERS, **headers}, content=rpc_body(
            "initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}))
        assert r.status_code == 401, (r.status_code, r.text)
        assert "resource_metadata" in r.headers.get("www-authenticate", ""), r.headers

    # The internal listener is not on the balancer's network.
    lb = stack.container("lb")
    resolved = run(["docker", "exec", lb, "getent", "hosts", "raft1"], check=False)
    assert resolved.returncode != 0, f"raft1 resolves from the load balancer: {resolved.stdout}"
    figures("up", {"healthy_after_s": round(up_s, 1), "leader": leader})


def kill_and_measure(stack: Stack, victim: str, others: list[str], started: float) -> dict[str, Any]:
    """After `victim` was killed at `started`: when a survivor names a new leader."""
    def new_leader() -> int | None:
        for s in others:
            leader = stack.leader(s)
            if leader is not None and stack.node_of(leader) != victim:
                return leader
        return None

    leader = stack.wait_for("a new leader among the survivors", new_leader, deadline_s=60, interval_s=0.05)
    return {"new_leader": leader, "new_leader_after_s": round(time.monotonic() - started, 2)}


def test_killing_the_leader_under_load_loses_no_session_and_asks_nobody_to_log_in_again(stack: Stack) -> None:
    leader = stack.wait_healthy()
    victim = stack.node_of(leader)
    others = [s for s in NODES if s != victim]
    tokens = [stack.pki.token(f"kill-user-{i}") for i in range(WORKERS)]
    with Load(stack.url, tokens) as load:
        load.wait_rounds(3 * WORKERS)
        killed_at = time.monotonic()
        run(["docker", "kill", stack.container(victim)])
        election = kill_and_measure(stack, victim, others, killed_at)
        # Let the clients run on the survivors for a while.
        time.sleep(8)
        restarted = True
        try:
            stack.wait_for(f"{victim} restarted by its restart policy",
                           lambda: container_state(stack, victim)["State"]["Running"], deadline_s=15)
        except AssertionError:
            restarted = False
            stack.compose("start", victim)
        stack.wait_healthy()
        time.sleep(2)
    summary = load.tally.summary()
    window = load.tally.window(killed_at)
    figures("leader kill", {**summary, **window, **election, "restart_policy_restarted_it": restarted})
    assert summary["reauthentications"] == 0, summary
    assert summary["lost_sessions"] == 0, summary
    assert summary["failed_after_retry"] == 0, (summary, load.tally.failed()[:5])
    assert window["first_clean_write_after_s"] is not None, window
    # The restarted node caught up: it serves what was written while it was down.
    after = sdk(open_sessions, stack.url, stack.pki.token("after-kill"), 3)
    for node in NODES:
        for session in after:
            stack.wait_for(f"{node} serves a session made after the restart",
                           lambda n=node, s=session: probe_on_node(stack, n, stack.pki.token("after-kill"), s) == 200,
                           deadline_s=30)


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_a_partitioned_node_refuses_writes_serves_nothing_stale_and_heals(stack: Stack, role: str) -> None:
    leader = stack.wait_healthy()
    if role == "leader":
        victim = stack.node_of(leader)
    else:
        victim = next(s for s in NODES if s != stack.node_of(leader))
    majority = [s for s in NODES if s != victim]
    url = stack.url

    # Before the cut: dave's session (deleted on the majority side during it) and erin's
    # session and token (erin is revoked during it); the cut-off node serves both now.
    dave, erin = stack.pki.token(f"dave-{role}"), stack.pki.token(f"erin-{role}")
    dave_session = sdk(open_sessions, url, dave, 1)[0]
    erin_session = sdk(open_sessions, url, erin, 1)[0]
    for token, session in ((dave, dave_session), (erin, erin_session)):
        stack.wait_for(f"{victim} serves the session", lambda t=token, s=session: probe_on_node(stack, victim, t, s) == 200,
                       deadline_s=30)

    tokens = [stack.pki.token(f"partition-{role}-{i}") for i in range(WORKERS)]
    with Load(url, tokens) as load:
        load.wait_rounds(3 * WORKERS)
        cut_at = time.monotonic()
        stack.cut(victim)

        # The majority elects (when the leader was cut off) and serves.
        def majority_leader() -> int | None:
            leaders = {stack.leader(s) for s in majority}
            (one,) = leaders if len(leaders) == 1 else (None,)
            return one if one is not None and stack.node_of(one) in majority else None

        new_leader = stack.wait_for("a leader among the majority", majority_leader, deadline_s=60, interval_s=0.1)
        elected_s = time.monotonic() - cut_at

        # The cut-off node leaves rotation by its own /ready.
        stack.wait_for(f"{victim} /ready 503", lambda: stack.ready(victim) == 503, deadline_s=60)
        out_of_rotation_s = time.monotonic() - cut_at

        # The majority ends dave's session and revokes erin.
        assert delete_session(url, dave, dave_session) in (200, 202, 204)
        stack.fleet(majority[0], "cluster", "revoke", "--issuer", ISSUER, "--subject", f"erin-{role}")

        # The cut-off node, asked directly: writes refused, nothing stale served.
        answered_in: dict[str, float] = {}

        def timed(name: str, probe, *args) -> int:
            began = time.monotonic()
            status = probe(*args)
            answered_in[name] = round(time.monotonic() - began, 2)
            return status

        write = timed("write", new_session_on_node, stack, victim, stack.pki.token("newcomer"))
        stale = {
            "deleted_session": timed("deleted_session", probe_on_node, stack, victim, dave, dave_session),
            "revoked_token_stateless": timed("revoked_token", probe_on_node, stack, victim, erin, None),
            "revoked_users_session": timed("revoked_session", probe_on_node, stack, victim, erin, erin_session),
        }
        time.sleep(3)
        healed_at = time.monotonic()
        stack.heal(victim)
        stack.wait_healthy()
        healed_s = time.monotonic() - healed_at
        time.sleep(2)
    # After healing, the node knows what the majority did.
    after = {
        "deleted_session": probe_on_node(stack, victim, dave, dave_session),
        "revoked_token_stateless": probe_on_node(stack, victim, erin, None),
    }
    summary = load.tally.summary()
    window = load.tally.window(cut_at)
    figures(f"partition of the {role}", {
        **summary, **window, "victim": victim, "new_leader": new_leader,
        "majority_leader_after_s": round(elected_s, 2), "victim_unready_after_s": round(out_of_rotation_s, 2),
        "healed_after_s": round(healed_s, 2), "write_on_cut_node": write, "stale_probes": stale, "probes_answered_in_s": answered_in,
        "after_heal": after,
    })
    assert write == 503, write
    assert 200 not in stale.values(), stale
    assert after["deleted_session"] == 404, after
    assert after["revoked_token_stateless"] == 401, after
    assert summary["reauthentications"] == 0, summary
    assert summary["lost_sessions"] == 0, summary
    assert summary["failed_after_retry"] == 0, (summary, load.tally.failed()[:5])


def test_a_rolling_restart_under_load_fails_no_request_after_an_ordinary_retry(stack: Stack) -> None:
    stack.wait_healthy()
    tokens = [stack.pki.token(f"rolling-{i}") for i in range(WORKERS)]
    with Load(stack.url, tokens) as load:
        load.wait_rounds(3 * WORKERS)
        started = time.monotonic()
        for node in NODES:
            stack.compose("restart", node)
            stack.wait_healthy()
        took = time.monotonic() - started
        time.sleep(2)
    summary = load.tally.summary()
    figures("rolling restart", {**summary, **load.tally.window(started), "restarts_took_s": round(took, 1)})
    assert summary["failed_after_retry"] == 0, (summary, load.tally.failed()[:5])
    # A graceful stop drains: a request a node has answered 200 gets its answer from it.
    assert summary["dropped_after_2xx"] == 0, summary
    assert summary["reauthentications"] == 0, summary
    assert summary["lost_sessions"] == 0, summary


def test_every_session_and_secret_survives_down_and_up_with_the_volumes_kept(stack: Stack) -> None:
    stack.wait_healthy()
    url = stack.url
    users = {f"restart-user-{i}": stack.pki.token(f"restart-user-{i}", lifetime_s=7200) for i in range(5)}
    sessions = {user: sdk(open_sessions, url, token, 4) for user, token in users.items()}
    stack.fleet("node1", "secrets", "set", "--tenant", "acme", "--name", "api_key", input="s3cret-value\n")
    before = json.loads(stack.fleet("node2", "secrets", "list", "--tenant", "acme"))

    stack.compose("down", "--timeout", "30")
    assert not stack.compose("ps", "-q").strip(), "containers left after down"
    stack.compose("up", "-d", "--no-build")
    stack.wait_healthy()
    url = stack.url  # a new port: the balancer's container is new

    lost = []
    for user, ids in sessions.items():
        for session in ids:
            status, reply = call_on_session(url, users[user], session)
            if status != 200 or (reply or {}).get("result", {}).get("structuredContent", {}).get("subject") != user:
                lost.append((user, session[:8], status, reply))
    after = json.loads(stack.fleet("node3", "secrets", "list", "--tenant", "acme"))
    figures("down and up", {"sessions": sum(len(v) for v in sessions.values()), "lost": len(lost), "secrets": after})
    assert not lost, lost
    assert after == before and "api_key" in json.dumps(after), (before, after)


def test_a_fourth_node_joins_and_catches_up_by_snapshot(stack: Stack) -> None:
    stack.wait_healthy()
    # Enough writes that the log is compacted behind a snapshot (64 entries, override.yml).
    sdk(open_sessions, stack.url, stack.pki.token("scale-out"), 150)
    stack.compose("--profile", "scale-out", "up", "-d", "--no-build", "node4")
    started = time.monotonic()
    stack.fleet("node1", "cluster", "join", "--node-id", "4", "--raft-addr", "raft4:7000")

    def caught_up() -> dict[str, Any] | None:
        mine, leader = stack.report("node4"), stack.report(stack.node_of(stack.leader("node1")))
        if not mine or not leader or mine.get("applied_index") is None:
            return None
        voters = [m["id"] for m in mine.get("members", []) if m.get("voter")]
        return mine if 4 in voters and mine["applied_index"] >= (leader.get("committed_index") or 0) - 64 else None

    report = stack.wait_for("node4 a voter and caught up", caught_up, deadline_s=120)
    took = time.monotonic() - started
    figures("scale out", {"caught_up_after_s": round(took, 1), "snapshot_index": report.get("snapshot_index"),
                          "applied_index": report.get("applied_index")})
    assert report.get("snapshot_index") is not None, f"node4 holds no snapshot: {report}"
    assert stack.wait_for("node4 ready", lambda: stack.ready("node4") == 200, deadline_s=60)
    # It serves the sessions the others made before it existed.
    token = stack.pki.token("scale-out-2")
    session = sdk(open_sessions, stack.url, token, 1)[0]
    stack.wait_for("node4 serves a session made elsewhere", lambda: probe_on_node(stack, "node4", token, session) == 200,
                   deadline_s=30)


def test_the_tls_front_of_deploy_serves_over_https_with_its_certificate(stack: Stack) -> None:
    import ssl

    stack.wait_healthy()
    url = f"https://127.0.0.1:{stack.port(8443)}/mcp"
    trusted = ssl.create_default_context(cadata=stack.pki.ca_pem().decode())
    token = stack.pki.token("tls-user")

    async def over_tls(mode: str) -> tuple[str, str]:
        async with connect(url, token, mode, Recorder(), verify=trusted) as client:
            return (await whoami(client))["subject"], client.protocol_version

    for mode, version in (("legacy", LEGACY), ("auto", MODERN)):
        assert sdk(over_tls, mode) == ("tls-user", version)
    # A client that does not trust the certificate's CA refuses it; plain HTTP on the TLS
    # port gets no MCP answer.
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"https://127.0.0.1:{stack.port(8443)}/health", timeout=10)
    plain = None
    try:
        plain = httpx2.get(f"http://127.0.0.1:{stack.port(8443)}/health", timeout=10).status_code
    except httpx2.HTTPError:
        pass
    assert plain != 200, plain
    r = httpx2.get(f"https://127.0.0.1:{stack.port(8443)}/health", verify=trusted, timeout=10)
    assert r.status_code == 200 and "max-age" in r.headers.get("strict-transport-security", ""), r.headers
