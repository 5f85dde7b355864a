"""Resource updates across nodes, received by the official MCP Python SDK.

Usage: notifications.py ANNOUNCE_URL LEGACY_URL MODERN_URL URI, with the bearer token in
the FLEET_TOKEN environment variable. A legacy (2025-11-25) client on LEGACY_URL
subscribes to URI with `subscribe_resource` (its updates come on the session's GET
stream); a 2026-07-28 client on MODERN_URL opens `Client.listen` for URI. A third client,
on ANNOUNCE_URL, calls `test_update_resource` for URI until both have received
`notifications/resources/updated` for it (the SDK opens the GET stream on its own and
says nothing when it is open, so the first announcements may come before it is) or the
deadline passes. It prints one JSON object on standard output:

    {"legacy": [uri, ...], "modern": [uri, ...], "announcements": N, "errors": [...]}

and exits 0 whenever it could report; the caller judges the figures.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated

TIMEOUT_S = 30
ANNOUNCE_EVERY_S = 0.2


def connect(url: str, token: str, mode: str, **kwargs: Any) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(10, read=TIMEOUT_S),
    )
    transport = streamable_http_client(url, http_client=http)
    return http, Client(transport, mode=mode, cache=None, read_timeout_seconds=TIMEOUT_S, **kwargs)


async def main() -> None:
    announce_url, legacy_url, modern_url, uri = sys.argv[1:5]
    token = os.environ["FLEET_TOKEN"]
    report: dict[str, Any] = {"legacy": [], "modern": [], "announcements": 0, "errors": []}
    got_legacy, got_modern = anyio.Event(), anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            report["legacy"].append(message.params.uri)
            if message.params.uri == uri:
                got_legacy.set()

    try:
        legacy_http, legacy = connect(legacy_url, token, "legacy", message_handler=on_message)
        modern_http, modern = connect(modern_url, token, "auto")
        announce_http, announcer = connect(announce_url, token, "auto")
        async with legacy_http, modern_http, announce_http, legacy, modern, announcer:
            await legacy.subscribe_resource(uri)
            async with modern.listen(resource_subscriptions=[uri]) as subscription:

                async def receive() -> None:
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated):
                            report["modern"].append(event.uri)
                            if event.uri == uri:
                                got_modern.set()
                                return

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(receive)
                    with anyio.move_on_after(TIMEOUT_S):
                        while not (got_legacy.is_set() and got_modern.is_set()):
                            await announcer.call_tool("test_update_resource", {"uri": uri})
                            report["announcements"] += 1
                            with anyio.move_on_after(ANNOUNCE_EVERY_S):
                                await got_legacy.wait()
                                await got_modern.wait()
                    tasks.cancel_scope.cancel()
    except BaseException as e:  # noqa: BLE001 - every failure is a finding
        report["errors"].append("".join(traceback.format_exception(e)))
    print(json.dumps(report))


if __name__ == "__main__":
    anyio.run(main)
