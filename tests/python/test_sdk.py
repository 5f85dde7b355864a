"""mcp-fleet driven by the official MCP Python SDK (`mcp==2.3.0`).

Every test talks to a real `mcp-fleet` process (see conftest.py) and checks behaviour on
the wire as well as results: an httpx2 event hook records each HTTP request and response
the SDK makes, so the tests can assert which session id, protocol version and methods
went out. `cache=None` makes every SDK call reach the server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import (
    CreateMessageResult,
    ElicitResult,
    InputRequiredResult,
    PromptReference,
    TextContent,
)

pytestmark = pytest.mark.anyio

# Upper bound for one test, end to end; every SDK request also has its own read timeout.
TEST_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 30
LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
ANONYMOUS = {"subject": "anonymous", "tenant": None, "email": None, "scopes": []}
INVALID_PARAMS = -32602
STATIC_TEXT = "This is the content of the static text resource."


@dataclass
class Exchange:
    """One HTTP request the SDK sent, and the status and headers it got back."""

    method: str
    headers: httpx2.Headers
    body: Any
    status: int | None = None
    response_headers: httpx2.Headers | None = None

    @property
    def rpc_method(self) -> str | None:
        return self.body.get("method") if isinstance(self.body, dict) else None

    @property
    def params(self) -> dict[str, Any]:
        if isinstance(self.body, dict):
            return self.body.get("params") or {}
        return {}


@dataclass
class Recorder:
    """Records the SDK's HTTP traffic through httpx2 event hooks."""

    exchanges: list[Exchange] = field(default_factory=list)

    async def on_request(self, request: httpx2.Request) -> None:
        body: Any = None
        if request.method == "POST" and request.content:
            body = json.loads(request.content)
        exchange = Exchange(request.method, httpx2.Headers(request.headers), body)
        request.extensions["exchange"] = exchange
        self.exchanges.append(exchange)

    async def on_response(self, response: httpx2.Response) -> None:
        exchange = response.request.extensions.get("exchange")
        if exchange is not None:
            exchange.status = response.status_code
            exchange.response_headers = httpx2.Headers(response.headers)

    def http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            event_hooks={"request": [self.on_request], "response": [self.on_response]},
            timeout=httpx2.Timeout(10, read=REQUEST_TIMEOUT_S),
        )

    def posts(self, rpc_method: str | None = None) -> list[Exchange]:
        return [
            e
            for e in self.exchanges
            if e.method == "POST" and (rpc_method is None or e.rpc_method == rpc_method)
        ]

    def calls(self, tool: str) -> list[Exchange]:
        return [e for e in self.posts("tools/call") if e.params.get("name") == tool]


@asynccontextmanager
async def connect(url: str, mode: str, recorder: Recorder | None = None, **kwargs: Any) -> AsyncIterator[Client]:
    """An SDK client over Streamable HTTP; the recorder sees every request it makes."""
    recorder = recorder or Recorder()
    async with recorder.http_client() as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(
            transport, mode=mode, cache=None, read_timeout_seconds=REQUEST_TIMEOUT_S, **kwargs
        ) as client:
            yield client


def text_of(result: Any) -> str:
    """The text of a result's single text block."""
    assert len(result.content) == 1, result.content
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


class Elicitor:
    """An elicitation callback that accepts with a username and an email address."""

    def __init__(self, username: str = "alice", email: str = "alice@example.com") -> None:
        self.content = {"username": username, "email": email}
        self.seen: list[Any] = []

    async def __call__(self, ctx: Any, params: Any) -> ElicitResult:
        self.seen.append(params)
        return ElicitResult(action="accept", content=self.content)


class Sampler:
    """A sampling callback that answers with a fixed text."""

    def __init__(self, reply: str = "a sampled reply") -> None:
        self.reply = reply
        self.seen: list[Any] = []

    async def __call__(self, ctx: Any, params: Any) -> CreateMessageResult:
        self.seen.append(params)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=self.reply), model="test-model"
        )


def assert_elicited(elicitor: Elicitor, message: str, text: str) -> None:
    assert len(elicitor.seen) == 1, "the elicitation callback should run exactly once"
    params = elicitor.seen[0]
    assert params.message == message
    assert set(params.requested_schema["properties"]) >= {"username", "email"}
    assert "action=accept" in text, text
    assert elicitor.content["username"] in text and elicitor.content["email"] in text, text


def assert_sampled(sampler: Sampler, prompt: str, text: str) -> None:
    assert len(sampler.seen) == 1, "the sampling callback should run exactly once"
    [message] = sampler.seen[0].messages
    assert message.role == "user" and message.content.text == prompt
    assert text == f"LLM response: {sampler.reply}", text


# --- Legacy (2025-11-25) over Streamable HTTP -----------------------------------------------


async def test_legacy_session_is_reused_then_ended(fleet) -> None:
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet.url, "legacy", recorder) as client:
            assert client.protocol_version == LEGACY_VERSION
            assert client.server_info is not None and client.server_info.name == "mcp-fleet"

            names = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "whoami"} <= names, names
            assert "test_simple_text" not in names, "fixtures are served only by examples/conformance"

            result = await client.call_tool("echo", {"text": "hello fleet"})
            assert not result.is_error
            assert text_of(result) == "hello fleet"

            result = await client.call_tool("whoami", {})
            assert not result.is_error
            assert text_of(result) == "subject: anonymous, tenant: none"
            assert result.structured_content == ANONYMOUS

        # One handshake, and its session id on every later request, GET and DELETE included.
        [init] = recorder.posts("initialize")
        assert "mcp-session-id" not in init.headers
        assert init.status == 200
        session_id = init.response_headers.get("mcp-session-id")
        assert session_id, "initialize must return Mcp-Session-Id"
        assert all(0x21 <= ord(c) <= 0x7E for c in session_id), session_id
        later = [e for e in recorder.exchanges if e is not init]
        assert [e.rpc_method for e in later if e.method == "POST"] == [
            "notifications/initialized",
            "tools/list",
            "tools/call",
            "tools/call",
        ]
        for e in later:
            assert e.headers.get("mcp-session-id") == session_id, (e.method, e.rpc_method)
            assert e.headers.get("mcp-protocol-version") == LEGACY_VERSION, (e.method, e.rpc_method)
        assert recorder.posts("notifications/initialized")[0].status == 202

        # Closing the client ends the session with DELETE; the id is then unknown: 404.
        deletes = [e for e in recorder.exchanges if e.method == "DELETE"]
        assert len(deletes) == 1 and deletes[0].status in (200, 204), deletes
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(
                fleet.url,
                headers={
                    "accept": "application/json, text/event-stream",
                    "content-type": "application/json",
                    "mcp-session-id": session_id,
                    "mcp-protocol-version": LEGACY_VERSION,
                },
                json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"},
            )
        assert response.status_code == 404, (response.status_code, response.text)


async def test_legacy_elicitation_and_sampling_over_sse(fleet_conformance) -> None:
    recorder, elicitor, sampler = Recorder(), Elicitor(), Sampler()
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(
            fleet_conformance.url,
            "legacy",
            recorder,
            elicitation_callback=elicitor,
            sampling_callback=sampler,
        ) as client:
            assert client.protocol_version == LEGACY_VERSION
            message = "What is your name?"
            result = await client.call_tool("test_elicitation", {"message": message})
            assert not result.is_error
            assert_elicited(elicitor, message, text_of(result))

            prompt = "Say hello"
            result = await client.call_tool("test_sampling", {"prompt": prompt})
            assert not result.is_error
            assert_sampled(sampler, prompt, text_of(result))

    # Legacy: the server asked on the call's SSE stream and the client answered with a
    # POSTed JSON-RPC response (202); the call itself was made once, with no MRTR retry.
    for tool in ("test_elicitation", "test_sampling"):
        [call] = recorder.calls(tool)
        assert call.response_headers["content-type"].startswith("text/event-stream"), tool
        assert "inputResponses" not in call.params and "requestState" not in call.params
    answers = [e for e in recorder.posts() if isinstance(e.body, dict) and "result" in e.body]
    assert len(answers) == 2, [e.body for e in answers]
    assert all(e.status == 202 for e in answers)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_progress_notifications(fleet_conformance, mode: str) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet_conformance.url, mode) as client:
            result = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
    assert not result.is_error
    assert len(updates) >= 3, updates
    values = [p for p, _, _ in updates]
    assert values == sorted(values) and len(set(values)) == len(values), f"not increasing: {values}"
    total = updates[-1][1]
    assert total is not None and values[-1] == total, updates


# --- 2026-07-28 (the SDK default: server/discover, no sessions) -----------------------------


async def test_default_mode_discovers_and_is_stateless(fleet) -> None:
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet.url, "auto", recorder) as client:
            assert client.protocol_version == MODERN_VERSION
            assert client.server_info is not None and client.server_info.name == "mcp-fleet"
            assert client.server_capabilities is not None and client.server_capabilities.tools is not None

            names = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "whoami"} <= names, names

            result = await client.call_tool("echo", {"text": "stateless"})
            assert not result.is_error and text_of(result) == "stateless"

            result = await client.call_tool("whoami", {})
            assert not result.is_error
            assert text_of(result) == "subject: anonymous, tenant: none"
            assert result.structured_content == ANONYMOUS

    # The first request is server/discover, answered directly; no handshake follows.
    first = recorder.exchanges[0]
    assert first.method == "POST" and first.rpc_method == "server/discover"
    assert first.headers.get("mcp-method") == "server/discover"
    assert first.status == 200
    assert recorder.posts("initialize") == []
    assert [e.rpc_method for e in recorder.exchanges] == [
        "server/discover",
        "tools/list",
        "tools/call",
        "tools/call",
    ]
    # Stateless: no session id either way, no GET stream, no DELETE.
    for e in recorder.exchanges:
        assert e.method == "POST", e.method
        assert "mcp-session-id" not in e.headers, e.rpc_method
        assert "mcp-session-id" not in e.response_headers, e.rpc_method
        assert e.headers.get("mcp-protocol-version") == MODERN_VERSION
        assert e.params["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN_VERSION
    for e in recorder.posts("tools/call"):
        assert e.headers.get("mcp-name") == e.params["name"]


async def test_mrtr_elicitation_through_callback(fleet_conformance) -> None:
    recorder, elicitor = Recorder(), Elicitor(username="bob", email="bob@example.org")
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet_conformance.url, "auto", recorder, elicitation_callback=elicitor) as client:
            assert client.protocol_version == MODERN_VERSION
            message = "Who are you?"
            result = await client.call_tool("test_elicitation", {"message": message})
    assert not result.is_error
    assert_elicited(elicitor, message, text_of(result))

    # Two rounds: the call, then its retry with the answer and the echoed requestState.
    first, retry = recorder.calls("test_elicitation")
    assert "inputResponses" not in first.params and "requestState" not in first.params
    assert retry.params["arguments"] == {"message": message}
    [answer] = retry.params["inputResponses"].values()
    assert answer == {"action": "accept", "content": elicitor.content}
    assert isinstance(retry.params["requestState"], str) and retry.params["requestState"]
    assert first.body["id"] != retry.body["id"]
    for e in (first, retry):
        assert "mcp-session-id" not in e.headers and e.status == 200


async def test_mrtr_sampling_through_callback(fleet_conformance) -> None:
    recorder, sampler = Recorder(), Sampler(reply="forty-two")
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet_conformance.url, "auto", recorder, sampling_callback=sampler) as client:
            prompt = "What is the answer?"
            result = await client.call_tool("test_sampling", {"prompt": prompt})
    assert not result.is_error
    assert_sampled(sampler, prompt, text_of(result))
    first, retry = recorder.calls("test_sampling")
    [answer] = retry.params["inputResponses"].values()
    assert answer["content"] == {"type": "text", "text": "forty-two"}
    assert retry.params["requestState"]


async def test_mrtr_round_trip_by_hand(fleet_conformance) -> None:
    """The raw `input_required` result, answered manually through the SDK's session."""
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet_conformance.url, "auto", elicitation_callback=Elicitor()) as client:
            args = {"message": "Manual?"}
            first = await client.session.call_tool("test_elicitation", args, allow_input_required=True)
            assert isinstance(first, InputRequiredResult), first
            assert first.result_type == "input_required"
            assert first.request_state
            [(key, request)] = first.input_requests.items()
            assert request.method == "elicitation/create"
            assert request.params.message == "Manual?"

            answer = ElicitResult(action="accept", content={"username": "carol", "email": "c@example.net"})
            final = await client.session.call_tool(
                "test_elicitation",
                args,
                input_responses={key: answer},
                request_state=first.request_state,
                allow_input_required=True,
            )
            assert not isinstance(final, InputRequiredResult), final
            assert "carol" in text_of(final)

            # A tampered requestState, or one replayed for other arguments, is refused.
            state = first.request_state
            middle = len(state) // 2  # a middle character carries six full bits
            forged = state[:middle] + ("B" if state[middle] == "A" else "A") + state[middle + 1 :]
            for bad_args, bad_state in ((args, forged), ({"message": "Other?"}, state)):
                with pytest.raises(MCPError) as refused:
                    await client.session.call_tool(
                        "test_elicitation",
                        bad_args,
                        input_responses={key: answer},
                        request_state=bad_state,
                        allow_input_required=True,
                    )
                assert refused.value.error.code == INVALID_PARAMS, refused.value


# --- Resources, prompts and completion (both eras) ------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_resources_prompts_and_completion(fleet_conformance, mode: str) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet_conformance.url, mode) as client:
            uris = {str(r.uri) for r in (await client.list_resources()).resources}
            assert "test://static-text" in uris, uris
            read = await client.read_resource("test://static-text")
            [contents] = read.contents
            assert str(contents.uri) == "test://static-text"
            assert contents.mime_type == "text/plain"
            assert contents.text == STATIC_TEXT

            templates = (await client.list_resource_templates()).resource_templates
            assert "test://template/{id}/data" in {t.uri_template for t in templates}
            [contents] = (await client.read_resource("test://template/abc123/data")).contents
            assert "abc123" in contents.text

            prompts = {p.name: p for p in (await client.list_prompts()).prompts}
            assert "test_prompt_with_arguments" in prompts, prompts.keys()
            assert {a.name for a in prompts["test_prompt_with_arguments"].arguments} == {"arg1", "arg2"}
            prompt = await client.get_prompt("test_prompt_with_arguments", {"arg1": "first", "arg2": "second"})
            [message] = prompt.messages
            assert message.role == "user"
            assert "first" in message.content.text and "second" in message.content.text

            ref = PromptReference(type="ref/prompt", name="test_prompt_with_arguments")
            completion = (await client.complete(ref, {"name": "arg1", "value": "te"})).completion
            assert completion.values, "expected suggestions for arg1"
            assert all(v.startswith("te") for v in completion.values), completion.values
            nothing = (await client.complete(ref, {"name": "arg1", "value": "zzz"})).completion
            assert nothing.values == []


# --- examples/quickstart -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_quickstart_example_serves_its_tool_resource_and_prompt(fleet_quickstart, mode: str) -> None:
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with connect(fleet_quickstart.url, mode) as client:
            assert client.server_info is not None and client.server_info.name == "quickstart"
            assert [t.name for t in (await client.list_tools()).tools] == ["greet"]
            result = await client.call_tool("greet", {"name": "Ada"})
            assert not result.is_error
            assert text_of(result) == "Hello, Ada, from anonymous!"

            resources = (await client.list_resources()).resources
            assert [str(r.uri) for r in resources] == ["docs://readme"]
            [contents] = (await client.read_resource("docs://readme")).contents
            assert contents.mime_type == "text/plain" and contents.text == "Try `greet`."

            prompts = (await client.list_prompts()).prompts
            assert [p.name for p in prompts] == ["haiku"]
            assert [(a.name, a.required) for a in prompts[0].arguments] == [("topic", True)]
            [message] = (await client.get_prompt("haiku", {"topic": "rain"})).messages
            assert message.role == "user"
            assert message.content.text == "Write a haiku about rain."


# --- stdio ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,version", [("auto", MODERN_VERSION), ("legacy", LEGACY_VERSION)])
async def test_stdio(mcp_fleet_bin: Path, tmp_path: Path, mode: str, version: str) -> None:
    params = StdioServerParameters(command=str(mcp_fleet_bin), args=["stdio"], cwd=str(tmp_path))
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with Client(params, mode=mode, cache=None, read_timeout_seconds=REQUEST_TIMEOUT_S) as client:
            assert client.protocol_version == version
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "whoami"} <= names, names
            result = await client.call_tool("echo", {"text": "over stdio"})
            assert not result.is_error and text_of(result) == "over stdio"
            result = await client.call_tool("whoami", {})
            assert result.structured_content == ANONYMOUS
