"""A legacy session's calls whose event streams the server closes, resumed by the
official MCP Python SDK through a round-robin load balancer.

Usage: resume.py URL CALLS, with the bearer token in the FLEET_TOKEN environment variable.
It opens a 2025-11-25 session through URL and calls the conformance example's
`test_reconnection` CALLS times: each call's stream ends after its priming event, and the
SDK reconnects with GET and Last-Event-ID, wherever the balancer sends it, to read the
result. It prints one JSON object on standard output:

    {"calls": N, "ok": N, "errors": [...], "statuses": {"POST 200": N, "GET 200": N, ...}}

The script exits 0 whenever it could report; the caller judges the figures.
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
EXPECTED = "Reconnection test completed successfully"


async def run(url: str, token: str, calls: int) -> dict[str, Any]:
    statuses: Counter[str] = Counter()

    async def on_response(response: httpx2.Response) -> None:
        statuses[f"{response.request.method} {response.status_code}"] += 1

    report: dict[str, Any] = {"calls": calls, "ok": 0, "errors": []}
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        event_hooks={"response": [on_response]},
        timeout=httpx2.Timeout(10, read=REQUEST_TIMEOUT_S),
    )
    try:
        async with http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(
                transport, mode="legacy", cache=None, read_timeout_seconds=REQUEST_TIMEOUT_S
            ) as client:
                for i in range(calls):
                    try:
                        result = await client.call_tool("test_reconnection", {})
                    except Exception as e:  # noqa: BLE001 - every failure is a finding
                        report["errors"].append(f"call {i}: {e!r}")
                        continue
                    got = result.content[0].text if result.content else ""
                    if result.is_error or EXPECTED not in got:
                        report["errors"].append(f"call {i}: {result!r}")
                    else:
                        report["ok"] += 1
    except BaseException as e:  # noqa: BLE001 - connect and close failures are findings too
        report["errors"].append("".join(traceback.format_exception(e)))
    report["statuses"] = dict(statuses)
    return report


async def main() -> None:
    url, calls = sys.argv[1], int(sys.argv[2])
    print(json.dumps(await run(url, os.environ["FLEET_TOKEN"], calls)))


if __name__ == "__main__":
    anyio.run(main)
