"""Fixtures for the Python SDK tests: real `mcp-fleet` processes on port 0.

The binary comes from `MCP_FLEET_BIN` (default `<repo>/target/debug/mcp-fleet`; build it
with `cargo build`); the server with the conformance fixtures from
`MCP_FLEET_CONFORMANCE_BIN` (default `<repo>/target/debug/examples/conformance`; build it
with `cargo build --examples`), and the other examples from the same directory. Each server gets its own temporary data directory; its stderr (the
logs) goes to a file there and is shown when a test fails.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LISTENING_PREFIX = "mcp-fleet listening on "
INTERNAL_PREFIX = "mcp-fleet internal listener on "
TOKEN_PREFIX = "mcp-fleet bearer token: "
CLIENT_CONFIG_PREFIX = "mcp-fleet client config: "
# How long a server may take to print its endpoint line.
START_TIMEOUT_S = 30.0
# How long a server may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0


@dataclass
class FleetServer:
    """A running `mcp-fleet dev` process."""

    url: str
    process: subprocess.Popen[str]
    log_path: Path
    # The stdout lines after the first, as the reader thread gets them (None at EOF).
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue, repr=False)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def next_line(self, prefix: str, timeout: float = START_TIMEOUT_S) -> str:
        """The next stdout line, which must start with `prefix`; returns the rest of it."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no line {prefix!r} within {timeout}s\n{self.logs()}") from None
        if line is None or not line.startswith(prefix):
            raise RuntimeError(f"expected a line {prefix!r}, got {line!r}\n{self.logs()}")
        return line[len(prefix) :].strip()


@dataclass
class DevAuthServer:
    """An `mcp-fleet dev --auth dev` server and what it printed at start."""

    server: FleetServer
    # The bearer token it printed (subject `dev-user`).
    token: str
    # The `mcpServers` snippet it printed.
    client_config: dict

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base(self) -> str:
        """The origin, for paths other than /mcp."""
        return self.server.url.removesuffix("/mcp")


def fleet_bin() -> Path:
    """The server binary under test."""
    return Path(os.environ.get("MCP_FLEET_BIN", REPO / "target" / "debug" / "mcp-fleet"))


def conformance_bin() -> Path:
    """The example server with the conformance fixtures (`examples/conformance`)."""
    default = REPO / "target" / "debug" / "examples" / "conformance"
    return Path(os.environ.get("MCP_FLEET_CONFORMANCE_BIN", default))


@pytest.fixture(scope="session")
def mcp_fleet_bin() -> Path:
    path = fleet_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"mcp-fleet binary not found at {path}: run `cargo build` or set MCP_FLEET_BIN")
    return path


@pytest.fixture(scope="session")
def mcp_fleet_conformance_bin() -> Path:
    path = conformance_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"conformance example not found at {path}: run `cargo build --examples` or set MCP_FLEET_CONFORMANCE_BIN"
        )
    return path


def example_bin(name: str) -> Path:
    """The example server `examples/<name>`, built beside the conformance example."""
    return conformance_bin().with_name(name)


@pytest.fixture(scope="session")
def mcp_fleet_quickstart_bin() -> Path:
    path = example_bin("quickstart")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"quickstart example not found at {path}: run `cargo build --examples` (it is looked "
            "for beside the conformance example, MCP_FLEET_CONFORMANCE_BIN)"
        )
    return path


def server_env() -> dict[str, str]:
    """The environment for a server: ours, minus MCP_FLEET_BIN and MCP_FLEET_CONFORMANCE_BIN.

    The server reads every `MCP_FLEET_*` variable as configuration and refuses unknown
    keys, so the variables that name the binaries must not reach it.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("MCP_FLEET_BIN", "MCP_FLEET_CONFORMANCE_BIN")}
    env["NO_COLOR"] = "1"
    return env


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)


def start_server(binary: Path, data_dir: Path, *extra: str) -> FleetServer:
    """Starts `mcp-fleet dev` on a free loopback port and waits for its endpoint line.

    The server prints exactly one line to stdout when it is listening; it is read with a
    bounded deadline (a reader thread and a queue), never by sleeping and polling.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.stderr.log"
    log = open(log_path, "w")  # noqa: SIM115 - kept open for the process's lifetime
    cmd = [str(binary), "dev", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *extra]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=server_env(),
    )
    log.close()
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        # Keep draining stdout so the server never blocks on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="mcp-fleet-stdout", daemon=True).start()
    try:
        first = lines.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        _stop(proc)
        raise RuntimeError(
            f"{' '.join(cmd)} printed nothing within {START_TIMEOUT_S}s\n{log_path.read_text()}"
        ) from None
    if first is None or not first.startswith(LISTENING_PREFIX):
        status = proc.poll()
        _stop(proc)
        raise RuntimeError(
            f"{' '.join(cmd)}: unexpected first stdout line {first!r} "
            f"(exit status {status})\n{log_path.read_text()}"
        )
    url = first[len(LISTENING_PREFIX) :].strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp"), url
    return FleetServer(url=url, process=proc, log_path=log_path, lines=lines)


def _serve(binary: Path, tmp: Path, request: pytest.FixtureRequest, *extra: str) -> Iterator[FleetServer]:
    server = start_server(binary, tmp / "data", *extra)
    try:
        yield server
    finally:
        _stop(server.process)
        failed = getattr(request.session, "testsfailed", 0)
        if failed:
            # Server-side logs next to pytest's failure report.
            print(f"\n--- mcp-fleet {' '.join(extra)} stderr ({server.log_path}) ---")
            print(server.logs()[-20000:])


@pytest.fixture(scope="session")
def fleet(mcp_fleet_bin: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A plain `mcp-fleet dev` server (built-in tools only)."""
    yield from _serve(mcp_fleet_bin, tmp_path_factory.mktemp("fleet"), request)


@pytest.fixture(scope="session")
def fleet_conformance(
    mcp_fleet_conformance_bin: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
):
    """An `examples/conformance dev` server (built-ins plus the conformance fixtures)."""
    yield from _serve(mcp_fleet_conformance_bin, tmp_path_factory.mktemp("fleet-conformance"), request)


@pytest.fixture(scope="session")
def fleet_quickstart(
    mcp_fleet_quickstart_bin: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
):
    """An `examples/quickstart dev` server: one tool, one resource, one prompt."""
    yield from _serve(mcp_fleet_quickstart_bin, tmp_path_factory.mktemp("fleet-quickstart"), request)


@pytest.fixture(scope="session")
def fleet_dev_auth(
    mcp_fleet_bin: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DevAuthServer]:
    """An `mcp-fleet dev --auth dev` server (the built-in development issuer), with the
    token and client configuration it printed on its third and fourth stdout lines."""
    serving = _serve(mcp_fleet_bin, tmp_path_factory.mktemp("fleet-dev-auth"), request, "--auth", "dev")
    server = next(serving)
    try:
        server.next_line(INTERNAL_PREFIX)
        token = server.next_line(TOKEN_PREFIX)
        client_config = json.loads(server.next_line(CLIENT_CONFIG_PREFIX))
        yield DevAuthServer(server=server, token=token, client_config=client_config)
    finally:
        serving.close()  # stops the server (the `finally` in `_serve`)


@pytest.fixture
def anyio_backend() -> str:
    # The SDK runs on anyio; asyncio is the backend it is tested with.
    return "asyncio"
