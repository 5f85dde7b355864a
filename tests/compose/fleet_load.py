"""Clients of the compose suite: the official MCP Python SDK through the load balancer.

A `Load` runs workers, each a user with its own token, until told to stop. Every round a
worker
- calls `whoami` on the legacy session it opened first (a read; that session must never
  be lost: a 404 on it is a lost session),
- opens a new legacy session and calls `whoami` in it (a write: a session created, then
  deleted when the SDK closes it),
- makes a 2026-07-28 stateless `whoami` call.

Each of these is one *operation*, retried the way an ordinary client retries: on a 502,
503 or 504 from the balancer, a dropped connection (also one that drops after a 200, while
the node that answered runs the request and dies) or no answer within `CALL_TIMEOUT_S`, up
to `RETRIES` more times with a growing pause. A 401 (sent back to log in) or a 404 on a
session are never retried: they are what must not happen. The SDK hides the HTTP status behind its exception, so httpx2
event hooks record them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED

REQUEST_TIMEOUT_S = 30
RETRIES = 4
RETRY_PAUSE_S = 0.3
RETRYABLE = {502, 503, 504}
# One try of an operation; a try that takes longer counts as a dropped connection.
CALL_TIMEOUT_S = 15


@dataclass
class Recorder:
    """Records the HTTP statuses of one worker's requests."""

    statuses: Counter = field(default_factory=Counter)
    last_post: int | None = None
    session_ids: list[str] = field(default_factory=list)
    # The first few answers of 400 or above: what they were.
    refusals: list[str] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code >= 400 and len(self.refusals) < 5:
            await response.aread()
            self.refusals.append(f"{response.request.method} {response.status_code} {response.text[:200]}")
        if response.request.method == "POST":
            self.last_post = response.status_code
        sid = response.headers.get("mcp-session-id")
        if sid and sid not in self.session_ids:
            self.session_ids.append(sid)

    def http(self, token: str, verify: Any = True) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            event_hooks={"response": [self.on_response]},
            timeout=httpx2.Timeout(10, read=REQUEST_TIMEOUT_S),
        )


@asynccontextmanager
async def connect(
    url: str, token: str, mode: str, recorder: Recorder, keep: bool = False, verify: Any = True
) -> AsyncIterator[Client]:
    """An SDK client ("legacy": a 2025-11-25 session; "auto": 2026-07-28); with `keep`,
    a legacy session is left open when the client closes (no DELETE)."""
    async with recorder.http(token, verify) as http:
        transport = streamable_http_client(url, http_client=http, terminate_on_close=not keep)
        async with Client(transport, mode=mode, cache=None, read_timeout_seconds=REQUEST_TIMEOUT_S) as client:
            yield client


async def whoami(client: Client) -> dict[str, Any]:
    result = await client.call_tool("whoami", {})
    if result.is_error:
        raise RuntimeError(f"whoami failed: {result}")
    return result.structured_content or json.loads(result.content[0].text)


@dataclass
class Op:
    """One operation: when it started (monotonic), its kind, attempts, and outcome."""

    started: float
    kind: str
    attempts: int
    ok: bool
    first_status: int | None
    error: str | None = None
    finished: float = field(default_factory=time.monotonic)


@dataclass
class Tally:
    ops: list[Op] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    # Requests on a worker's long-lived legacy session answered 404: sessions lost.
    lost_sessions: int = 0
    refusals: list[str] = field(default_factory=list)
    # Tries that got no answer within CALL_TIMEOUT_S.
    timeouts: int = 0
    # Tries whose connection dropped after a 2xx, the answer never coming (its node died).
    dropped_after_answer: int = 0

    def failed(self) -> list[Op]:
        return [op for op in self.ops if not op.ok]

    def retried(self) -> list[Op]:
        return [op for op in self.ops if op.attempts > 1]

    def summary(self) -> dict[str, Any]:
        return {
            "operations": len(self.ops),
            "retried": len(self.retried()),
            "failed_after_retry": len(self.failed()),
            "statuses": dict(sorted(self.statuses.items())),
            "reauthentications": self.statuses.get(401, 0),
            "lost_sessions": self.lost_sessions,
            "timed_out_tries": self.timeouts,
            "dropped_after_2xx": self.dropped_after_answer,
            "refusals": self.refusals[:5],
            # What the operations that failed after their retries raised, in full.
            "failures": [f"{op.kind} after {op.attempts} tries: {op.error}" for op in self.failed()[:3]],
        }

    def window(self, after: float) -> dict[str, Any]:
        """What happened from `after` on: the span of operations whose first try failed
        (the window clients noticed), the operations served meanwhile, and when the first
        write (a new session) started after `after` succeeded at its first try."""
        later = [op for op in self.ops if op.started >= after]
        hit = [op for op in later if op.attempts > 1 or not op.ok]
        first_write = next(
            (op.started - after for op in sorted(later, key=lambda o: o.started) if op.kind == "session" and op.attempts == 1 and op.ok),
            None,
        )
        span = (max(op.finished for op in hit) - min(op.started for op in hit)) if hit else 0.0
        writes = [op for op in later if op.kind == "session" and op.started <= after + 10]
        longest_write = max((op.finished - op.started for op in writes), default=None)
        during = [op for op in later if hit and min(o.started for o in hit) <= op.started <= max(o.started for o in hit)]
        return {
            "first_try_failures": len(hit),
            "unavailability_s": round(span, 2),
            "served_meanwhile": sum(1 for op in during if op.ok and op.attempts == 1),
            "first_clean_write_after_s": None if first_write is None else round(first_write, 2),
            "longest_write_s": None if longest_write is None else round(longest_write, 2),
        }


def leaves(e: BaseException) -> list[BaseException]:
    """`e`, or the exceptions it groups: the SDK's clients raise from task groups."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for inner in e.exceptions for leaf in leaves(inner)]
    return [e]


def dropped_after_answer(e: BaseException, status: int | None) -> bool:
    """Whether the connection dropped after the server had answered the POST with a 2xx:
    the request was running on a node that died, and the SDK, unable to resume its
    stream, gives up with a CONNECTION_CLOSED error it makes itself. (This server sends
    that code only with a 4xx status, never on a 2xx answer.)"""
    return (
        status is not None
        and 200 <= status < 300
        and any(isinstance(leaf, MCPError) and leaf.code == CONNECTION_CLOSED for leaf in leaves(e))
    )


async def attempt(kind: str, tally: Tally, recorder: Recorder, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Runs `fn` as one operation, retrying what an ordinary client retries."""
    started = time.monotonic()
    first_status = None
    error = None
    for n in range(1, RETRIES + 2):
        recorder.last_post = None
        try:
            with anyio.fail_after(CALL_TIMEOUT_S):
                value = await fn()
            tally.ops.append(Op(started, kind, n, True, first_status if n > 1 else recorder.last_post))
            return True if value is None else value
        except Exception as e:  # noqa: BLE001 - judged below
            status = recorder.last_post
            if n == 1:
                first_status = status
            error = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves(e)) + f" (HTTP {status})"
            # No answer: a dropped connection, or none within the client's timeout (the
            # status is then that of an earlier request of the same operation).
            dropped = dropped_after_answer(e, status)
            transport = status is None or isinstance(e, TimeoutError) or dropped
            if isinstance(e, TimeoutError):
                tally.timeouts += 1
            if dropped:
                tally.dropped_after_answer += 1
            if not (transport or status in RETRYABLE) or n == RETRIES + 1:
                break
            await anyio.sleep(RETRY_PAUSE_S * n)
    tally.ops.append(Op(started, kind, n, False, first_status, error))
    return None


class Load:
    """Workers through the balancer until `stop()`; then `tally` says what they saw."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url = url
        self.tokens = tokens
        self.tally = Tally()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> Load:
        """Runs the load in a thread of its own until the block ends."""
        self._thread = threading.Thread(target=anyio.run, args=(self.run,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        assert self._thread is not None
        self._thread.join(timeout=2 * (CALL_TIMEOUT_S * (RETRIES + 1)))

    def wait_rounds(self, rounds: int, timeout_s: float = 120) -> None:
        """Waits until the workers have done `rounds` rounds in all (the load is running)."""
        deadline = time.monotonic() + timeout_s
        while self.rounds < rounds:
            assert time.monotonic() < deadline, f"load did only {self.rounds} rounds: {self.tally.summary()}"
            time.sleep(0.1)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for token in self.tokens:
                tg.start_soon(self._worker, token)

    async def _worker(self, token: str) -> None:
        recorder = Recorder()
        try:
            await self._rounds(token, recorder)
        finally:
            self.tally.statuses.update(recorder.statuses)
            self.tally.refusals.extend(recorder.refusals)

    async def _rounds(self, token: str, recorder: Recorder) -> None:
        async def fresh_session() -> None:
            async with connect(self.url, token, "legacy", recorder) as c:
                await whoami(c)

        async def stateless() -> None:
            async with connect(self.url, token, "auto", recorder) as c:
                await whoami(c)

        # The long-lived session: one SDK client for as long as it works. A dropped
        # connection can end the SDK's client (it cannot reopen a session); then the
        # worker opens another long-lived session. That is not a lost session: the server
        # never answered 404 for it. Opening is retried like any operation (outside
        # `attempt`: the client's context must be left by the task that entered it).
        opened_at, tries = time.monotonic(), 0
        while not self._stop.is_set():
            tries += 1
            try:
                async with connect(self.url, token, "legacy", recorder) as long_lived:
                    self.tally.ops.append(Op(opened_at, "open", tries, True, None))
                    tries = 0
                    await self._on(long_lived, token, recorder, fresh_session, stateless)
                opened_at = time.monotonic()
            except Exception as e:  # noqa: BLE001 - opening failed
                if tries == 0:
                    # The client failed after it opened (the SDK ended it): open another.
                    opened_at = time.monotonic()
                    continue
                if tries > RETRIES:
                    self.tally.ops.append(Op(opened_at, "open", tries, False, recorder.last_post, repr(e)))
                    opened_at, tries = time.monotonic(), 0
                await anyio.sleep(RETRY_PAUSE_S * max(tries, 1))

    async def _on(self, long_lived: Client, token: str, recorder: Recorder, fresh_session, stateless) -> None:
        """Rounds on the long-lived session until it fails or the load stops."""
        while not self._stop.is_set():
            self.rounds += 1
            before = recorder.statuses.get(404, 0)

            async def on_session() -> None:
                await whoami(long_lived)

            done = await attempt("read", self.tally, recorder, on_session)
            if recorder.statuses.get(404, 0) > before:
                self.tally.lost_sessions += 1
            if done is None:
                return
            await attempt("session", self.tally, recorder, fresh_session)
            await attempt("stateless", self.tally, recorder, stateless)
            await anyio.sleep(0.05)
