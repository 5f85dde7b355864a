"""mcp-fleet `--auth dev` driven by the official MCP Python SDK (`mcp==2.3.0`).

The server's development issuer prints a bearer token at start (see the `fleet_dev_auth`
fixture in conftest.py). The SDK carries it as a default header of its httpx2 client, in
both eras; without it, or with a bad one, every request is a 401 whose
`WWW-Authenticate` challenge points at the protected-resource metadata. The SDK does not
expose the HTTP status on the exception (a 401 with a JSON-RPC body surfaces as that
`MCPError`), so an httpx2 event hook records the statuses and challenges the tests check.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio

TEST_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 30
LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
MODES = {"auto": MODERN_VERSION, "legacy": LEGACY_VERSION}
DEV_SUBJECT = "dev-user"


@dataclass
class Exchange:
    """One HTTP request the SDK sent, and what came back."""

    method: str
    rpc_method: str | None
    authorization: str | None
    status: int | None = None
    challenge: str | None = None


@dataclass
class Recorder:
    """Records the SDK's HTTP traffic through httpx2 event hooks."""

    exchanges: list[Exchange] = field(default_factory=list)

    async def on_request(self, request: httpx2.Request) -> None:
        rpc_method = None
        if request.method == "POST" and request.content:
            body = json.loads(request.content)
            rpc_method = body.get("method") if isinstance(body, dict) else None
        exchange = Exchange(request.method, rpc_method, request.headers.get("authorization"))
        request.extensions["exchange"] = exchange
        self.exchanges.append(exchange)

    async def on_response(self, response: httpx2.Response) -> None:
        exchange = response.request.extensions.get("exchange")
        if exchange is not None:
            exchange.status = response.status_code
            exchange.challenge = response.headers.get("www-authenticate")

    def http_client(self, token: str | None) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx2.AsyncClient(
            headers=headers,
            event_hooks={"request": [self.on_request], "response": [self.on_response]},
            timeout=httpx2.Timeout(10, read=REQUEST_TIMEOUT_S),
        )


@asynccontextmanager
async def connect(url: str, mode: str, token: str | None, recorder: Recorder) -> AsyncIterator[Client]:
    """An SDK client over Streamable HTTP presenting `token` (none: no Authorization)."""
    async with recorder.http_client(token) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, cache=None, read_timeout_seconds=REQUEST_TIMEOUT_S) as client:
            yield client


def challenge_params(header: str) -> dict[str, str]:
    """The parameters of a `Bearer k="v", k=v` challenge."""
    scheme, _, rest = header.strip().partition(" ")
    assert scheme.lower() == "bearer", header
    params = {}
    for match in re.finditer(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))', rest):
        name, quoted, bare = match.groups()
        value = bare if bare is not None else re.sub(r"\\(.)", r"\1", quoted)
        assert name.lower() not in params, header
        params[name.lower()] = value
    return params


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def whoami(client: Client) -> dict[str, Any]:
    result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return result.structured_content


# --- With the printed token --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_printed_token_is_the_dev_user(fleet_dev_auth, mode: str) -> None:
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet_dev_auth.url, mode, fleet_dev_auth.token, recorder) as client:
            assert client.protocol_version == MODES[mode]
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "whoami"} <= names, names
            who = await whoami(client)
            assert who["subject"] == DEV_SUBJECT, who
            assert set(who) == {"subject", "tenant", "email", "scopes"}, who
            result = await client.call_tool("echo", {"text": "authenticated"})
            assert not result.is_error and result.content[0].text == "authenticated"

    # Every request carried the token and none was refused.
    assert recorder.exchanges, "no traffic recorded"
    for e in recorder.exchanges:
        assert e.authorization == f"Bearer {fleet_dev_auth.token}", (e.method, e.rpc_method)
        assert e.status is not None and e.status < 400, (e.method, e.rpc_method, e.status)
    first = recorder.exchanges[0].rpc_method
    assert first == ("server/discover" if mode == "auto" else "initialize"), first


async def test_client_config_names_the_endpoint_and_the_token(fleet_dev_auth) -> None:
    servers = fleet_dev_auth.client_config["mcpServers"]
    assert isinstance(servers, dict) and servers, fleet_dev_auth.client_config
    entries = [s for s in servers.values() if s.get("url") == fleet_dev_auth.url]
    assert entries, fleet_dev_auth.client_config
    assert entries[0]["headers"]["Authorization"] == f"Bearer {fleet_dev_auth.token}"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_minted_token_is_its_subject(fleet_dev_auth, mode: str) -> None:
    wanted = {"subject": "alice", "scopes": ["a", "b"], "tenant": "acme", "email": "alice@example.com"}
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(f"{fleet_dev_auth.base}/dev-issuer/token", json=wanted)
        assert response.status_code == 200, (response.status_code, response.text)
        minted = response.json()
        assert minted["token_type"] == "Bearer" and minted["expires_in"] == 86400, minted
        async with connect(fleet_dev_auth.url, mode, minted["access_token"], Recorder()) as client:
            assert await whoami(client) == wanted


async def test_the_metadata_names_the_dev_issuer(fleet_dev_auth) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
            response = await http.get(fleet_dev_auth.base + path)
            assert response.status_code == 200, (path, response.status_code, response.text)
            document = response.json()
            assert document["resource"] == fleet_dev_auth.url, document
            assert document["authorization_servers"] == [f"{fleet_dev_auth.base}/dev-issuer"], document
            assert document["bearer_methods_supported"] == ["header"], document


# --- Without a token, or with a bad one ---------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["missing", "invalid"])
async def test_connecting_without_a_valid_token_fails_with_401(fleet_dev_auth, mode: str, token: str | None) -> None:
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT_S):
        with pytest.raises(Exception) as failed:
            async with connect(fleet_dev_auth.url, mode, token, recorder):
                pass
    # The SDK turns the 401's JSON-RPC error body into an MCPError (inside the task
    # groups' exception groups); the HTTP status is only visible on the wire.
    errors = leaves(failed.value)
    assert any(isinstance(e, MCPError) for e in errors), errors

    posts = [e for e in recorder.exchanges if e.method == "POST"]
    expected_first = "server/discover" if mode == "auto" else "initialize"
    assert posts and posts[0].rpc_method == expected_first, [(e.rpc_method, e.status) for e in posts]
    # `auto` falls back to `initialize` after the refused probe; that is refused too.
    assert "initialize" in [e.rpc_method for e in posts]
    metadata = f"{fleet_dev_auth.base}/.well-known/oauth-protected-resource/mcp"
    for e in posts:
        assert e.status == 401, (e.rpc_method, e.status)
        assert e.challenge is not None, e.rpc_method
        params = challenge_params(e.challenge)
        assert params.get("resource_metadata") == metadata, e.challenge
        if token is None:
            assert "error" not in params, e.challenge
        else:
            assert params.get("error") == "invalid_token", e.challenge
