"""Calls of `examples/tenant_api` tools with the official MCP Python SDK, one per step.

Usage: tenant_api.py PLAN, where the file PLAN holds a JSON array of steps, each
`{"url": ..., "token": ..., "tool": ..., "arguments": {...}, "mode": ...}` (the tokens in
a file, not on the command line, where other users of the machine could read them). The
steps run in order, each as its own client connected to its node's URL with its bearer
token, in the SDK's `mode` (default "auto": 2026-07-28 after `server/discover`;
"legacy": a 2025-11-25 session). It prints one JSON array on standard output, one entry
per step:

    {"protocol_version": ..., "is_error": bool, "text": ..., "structured": {...} | null}

or `{"exception": "..."}` when the SDK raised. The script exits 0 whenever it could
report; the caller judges the results.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

REQUEST_TIMEOUT_S = 30


async def call(step: dict[str, Any]) -> dict[str, Any]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {step['token']}"},
        timeout=httpx2.Timeout(10, read=REQUEST_TIMEOUT_S),
    )
    try:
        async with http:
            transport = streamable_http_client(step["url"], http_client=http)
            mode = step.get("mode", "auto")
            async with Client(
                transport, mode=mode, cache=None, read_timeout_seconds=REQUEST_TIMEOUT_S
            ) as client:
                result = await client.call_tool(step["tool"], step.get("arguments") or {})
                texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
                return {
                    "protocol_version": client.protocol_version,
                    "is_error": bool(result.is_error),
                    "text": "\n".join(texts),
                    "structured": result.structured_content,
                }
    except BaseException as e:  # noqa: BLE001 - every failure is a finding
        return {"exception": "".join(traceback.format_exception(e))}


async def main() -> None:
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    print(json.dumps([await call(step) for step in plan]))


if __name__ == "__main__":
    anyio.run(main)
