"""Tool calls through a round-robin load balancer with the official MCP Python SDK.

Usage: round_robin.py URL CALLS, with the bearer token in the FLEET_TOKEN environment
variable. For each mode, "legacy" (a 2025-11-25 session) and "auto" (2026-07-28, no
session), it connects through URL, calls `whoami` once and `echo` CALLS times, and checks
each answer. It prints one JSON object on standard output:

    {"legacy": {"protocol_version": ..., "subject": ..., "calls": N, "ok": N,
                "errors": [...], "statuses": {"POST 200": N, ...},
                "session_ids": [...]},
     "auto": {...}}

An httpx2 event hook records every HTTP exchange the SDK makes, so the caller can assert
that no request was refused (401) or lost its session (404). The script exits 0 whenever
it could report; the caller judges the figures.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections import Counter
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

REQUEST_TIMEOUT_S = 30


class Recorder:
    """Counts the SDK's HTTP exchanges by method and status, and the session ids sent."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.session_ids: set[str] = set()

    async def on_request(self, request: httpx2.Request) -> None:
        session = request.headers.get("mcp-session-id")
        if session is not None:
            self.session_ids.add(session)

    async def on_response(self, response: httpx2.Response) -> None:
        self.statuses[f"{response.request.method} {response.status_code}"] += 1


async def run(url: str, mode: str, token: str, calls: int) -> dict[str, Any]:
    recorder = Recorder()
    report: dict[str, Any] = {"calls": calls, "ok": 0, "errors": []}
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        event_hooks={"request": [recorder.on_request], "response": [recorder.on_response]},
        timeout=httpx2.Timeout(10, read=REQUEST_TIMEOUT_S),
    )
    try:
        async with http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(
                transport, mode=mode, cache=None, read_timeout_seconds=REQUEST_TIMEOUT_S
            ) as client:
                report["protocol_version"] = client.protocol_version
                who = await client.call_tool("whoami", {})
                report["subject"] = (who.structured_content or {}).get("subject")
                for i in range(calls):
                    text = f"{mode}-{i}"
                    try:
                        result = await client.call_tool("echo", {"text": text})
                    except Exception as e:  # noqa: BLE001 - every failure is a finding
                        report["errors"].append(f"call {i}: {e!r}")
                        continue
                    got = result.content[0].text if result.content else None
                    if result.is_error or got != text:
                        report["errors"].append(f"call {i}: {result!r}")
                    else:
                        report["ok"] += 1
    except BaseException as e:  # noqa: BLE001 - connect and close failures are findings too
        report["errors"].append("".join(traceback.format_exception(e)))
    report["statuses"] = dict(recorder.statuses)
    report["session_ids"] = sorted(recorder.session_ids)
    return report


async def main() -> None:
    url, calls = sys.argv[1], int(sys.argv[2])
    token = os.environ["FLEET_TOKEN"]
    summary = {mode: await run(url, mode, token, calls) for mode in ("legacy", "auto")}
    print(json.dumps(summary))


if __name__ == "__main__":
    anyio.run(main)
