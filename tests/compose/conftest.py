"""The shipped `docker-compose.yml`, run for real: fixtures for the compose suite.

`scripts/compose-test` builds the images (local stand-ins for the Debian, Rust and HAProxy
images, then the shipped `Dockerfile` as `mcp-fleet:local`) and runs this suite. Each test
session runs one compose project of its own (`mcp-fleet-test-<random>`) from the shipped
`docker-compose.yml` plus `tests/compose/override.yml`, with an env file the session
writes: generated sealing key and cluster secret, and a test issuer served over https by
the HAProxy image with a certificate from a CA this session generates. The nodes trust
that CA through `auth.ca_file`; tokens are signed here with a key whose JWKS the issuer
serves.

Clients reach the stack only through the port the load balancer publishes on 127.0.0.1;
what the nodes know (cluster status, `/ready`) is read with `docker exec` inside them.
The scenarios are ordered (pytest runs a file top to bottom) and each starts from a
healthy stack, which the previous one leaves behind.

Environment: `FLEET_COMPOSE` (the compose command: "docker compose" or "docker-compose",
default the latter), `FLEET_IMAGE` (default `mcp-fleet:local`), `FLEET_KEEP=1` to leave the
project running after the session for a look.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE = shlex.split(os.environ.get("FLEET_COMPOSE", "docker-compose"))
IMAGE = os.environ.get("FLEET_IMAGE", "mcp-fleet:local")
# What the nodes are told (env file): the issuer as tokens name it, reached on the compose
# network, and the URL clients use (the OAuth resource tokens name as their audience).
ISSUER = "https://issuer:8443"
PUBLIC_URL = "https://mcp.fleet.test/mcp"
KID = "compose-test-1"
# Where override.yml mounts the test CA in the nodes.
CA_IN_CONTAINER = "/run/fleet-test/issuer-ca.pem"
NODES = ("node1", "node2", "node3")
# Generous: containers start slowly on a shared 2-core machine.
STACK_DEADLINE_S = 180.0
COMMAND_TIMEOUT_S = 300.0


# --- Certificates and tokens ------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Pki:
    """A CA made for this session, server certificates it signs, and the token key."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self._not_before = now - datetime.timedelta(hours=1)
        self._not_after = now + datetime.timedelta(days=2)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("mcp-fleet compose test CA"))
            .issuer_name(_name("mcp-fleet compose test CA"))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.token_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def server_pem(self, dns: list[str], ips: list[str] = ()) -> bytes:
        """A server certificate for `dns`/`ips` signed by the CA, followed by its key
        (the single file HAProxy's `crt` takes)."""
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns[0]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + _pem_key(key)

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.token_key.public_key()))
        jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def token(self, subject: str, lifetime_s: int = 3600) -> str:
        """A token of the test issuer for `subject`, for the fleet's public URL."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": PUBLIC_URL,
            "iat": now,
            "exp": now + lifetime_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.token_key, algorithm="RS256", headers={"kid": KID})


ISSUER_HAPROXY_CFG = """\
# The compose suite's token issuer: HAProxy serving the metadata and key set the test
# generated, over https with a certificate from the test's own CA.
global
    log stdout format raw local0 info
defaults
    mode http
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend issuer
    bind :8443 ssl crt /usr/local/etc/haproxy/issuer.pem
    http-request return status 200 content-type application/json file /usr/local/etc/haproxy/metadata.json if { path /.well-known/openid-configuration } || { path /.well-known/oauth-authorization-server }
    http-request return status 200 content-type application/json file /usr/local/etc/haproxy/jwks.json if { path /jwks }
    http-request return status 404
"""


def write_issuer(pki: Pki, folder: Path) -> None:
    folder.mkdir(mode=0o755)
    metadata = {
        "issuer": ISSUER,
        "jwks_uri": f"{ISSUER}/jwks",
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))
    (folder / "jwks.json").write_text(json.dumps(pki.jwks()))
    (folder / "issuer.pem").write_bytes(pki.server_pem(["issuer"]))
    (folder / "haproxy.cfg").write_text(ISSUER_HAPROXY_CFG)
    for path in folder.iterdir():
        path.chmod(0o644)


# --- The compose project ----------------------------------------------------------------


def run(argv: list[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT_S, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


class Stack:
    """One compose project of the shipped files plus the test override."""

    def __init__(self, project: str, folder: Path, pki: Pki) -> None:
        self.project = project
        self.folder = folder
        self.pki = pki
        self.env_file = folder / "fleet.env"
        # The shipped TLS front (deploy/) is part of every run: the scenarios use the plain
        # port, one test calls through TLS.
        self.files = [REPO / "docker-compose.yml", REPO / "deploy" / "docker-compose.tls.yml", HERE / "override.yml"]

    # Commands.

    def compose_argv(self, *args: str) -> list[str]:
        argv = [*COMPOSE, "--project-name", self.project, "--env-file", str(self.env_file)]
        for f in self.files:
            argv += ["--file", str(f)]
        return [*argv, *args]

    def compose(self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> str:
        return run(self.compose_argv(*args), check=check, timeout=timeout).stdout

    def container(self, service: str) -> str:
        """The container id of `service` (its one replica)."""
        cid = self.compose("ps", "-q", service).strip()
        assert cid, f"{service} has no container"
        return cid.splitlines()[0]

    def exec(self, service: str, *argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        interactive = ["-i"] if input is not None else []
        return run(["docker", "exec", *interactive, self.container(service), *argv], check=check, input=input, timeout=60)

    def http_in(self, service: str, path: str, *curl: str, timeout_s: int = 60) -> tuple[int, str]:
        """An HTTP request to `service`'s public listener from inside it: (status, body;
        status 0 when no answer came within `timeout_s`)."""
        done = self.exec(
            service, "curl", "-sS", "-m", str(timeout_s), "-o", "/dev/stdout", "-w", "\n%{http_code}",
            *curl, f"http://127.0.0.1:8080{path}", check=False,
        )
        body, _, status = done.stdout.rpartition("\n")
        return (int(status) if status.strip().isdigit() else 0, body)

    def ready(self, service: str) -> int:
        return self.http_in(service, "/ready", timeout_s=5)[0]

    def fleet(self, service: str, *argv: str, input: str | None = None) -> str:
        """`mcp-fleet ARGV --via 127.0.0.1:7000` run inside `service` (its cluster secret
        comes from the container's environment)."""
        return self.exec(service, "mcp-fleet", *argv, "--via", "127.0.0.1:7000", input=input).stdout

    def status(self, service: str = "node1") -> dict[str, Any]:
        return json.loads(self.fleet(service, "cluster", "status"))

    def report(self, service: str) -> dict[str, Any] | None:
        """`service`'s own report of itself, from its `/cluster` (None when it does not answer)."""
        done = self.exec(
            service, "sh", "-c",
            'curl -sS -m 5 -H "Authorization: Bearer $MCP_FLEET_CLUSTER_SECRET" http://127.0.0.1:7000/cluster',
            check=False,
        )
        try:
            return json.loads(done.stdout)
        except ValueError:
            return None

    def leader(self, service: str = "node1") -> int | None:
        report = self.report(service)
        return report.get("leader_id") if report else None

    def port(self, inside: int = 8080) -> int:
        """The host port the balancer's `inside` port is published on (127.0.0.1)."""
        out = self.compose("port", "lb", str(inside)).strip()
        return int(out.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port()}/mcp"

    def network(self, name: str) -> str:
        return f"{self.project}_{name}"

    def cut(self, service: str) -> None:
        """Disconnects `service` from the internal network: no Raft traffic in or out; the
        load balancer still reaches it on the public network."""
        run(["docker", "network", "disconnect", self.network("internal"), self.container(service)])

    def heal(self, service: str) -> None:
        n = service.removeprefix("node")
        run(["docker", "network", "connect", "--alias", f"raft{n}", self.network("internal"), self.container(service)])

    def logs(self, *services: str, tail: int = 200) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), *services, check=False)

    # Waiting.

    def wait_healthy(self, nodes: tuple[str, ...] = NODES, deadline_s: float = STACK_DEADLINE_S) -> int:
        """Waits until every one of `nodes` is ready, they agree on one leader and the load
        balancer answers; returns the leader's id."""
        deadline = time.monotonic() + deadline_s
        last = ""
        while time.monotonic() < deadline:
            self.no_crash_loop(nodes)
            try:
                readies = {s: self.ready(s) for s in nodes}
                leaders = {s: self.leader(s) for s in nodes}
                if all(code == 200 for code in readies.values()) and len(set(leaders.values())) == 1:
                    leader = next(iter(leaders.values()))
                    if leader is not None and self.lb_health() == 200:
                        return leader
                last = f"ready {readies}, leaders {leaders}"
            except (RuntimeError, subprocess.TimeoutExpired, AssertionError) as e:
                last = str(e)
            time.sleep(1)
        raise AssertionError(f"stack not healthy within {deadline_s}s: {last}\n{self.logs()}")

    def no_crash_loop(self, services: tuple[str, ...]) -> None:
        """Fails at once when a container keeps exiting (a configuration error, say)."""
        for service in services:
            cid = self.compose("ps", "-q", service).strip()
            if not cid:
                continue
            out = run(["docker", "inspect", "--format", "{{.RestartCount}}", cid], check=False).stdout.strip()
            if out.isdigit() and int(out) >= 3:
                raise AssertionError(f"{service} restarted {out} times\n{self.logs(service, tail=20)}")

    def lb_health(self) -> int:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port()}/lb-health", timeout=5) as r:
                return r.status
        except Exception:  # noqa: BLE001 - any failure is "not healthy yet"
            return 0

    def wait_for(self, what: str, check, deadline_s: float = STACK_DEADLINE_S, interval_s: float = 0.2):
        """Polls `check()` until it returns something truthy; returns it."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                value = check()
            except (RuntimeError, subprocess.TimeoutExpired):
                value = None
            if value:
                return value
            time.sleep(interval_s)
        raise AssertionError(f"{what}: not within {deadline_s}s\n{self.logs(tail=80)}")

    def node_of(self, node_id: int) -> str:
        return f"node{node_id}"


def write_env(folder: Path, values: dict[str, str]) -> None:
    path = folder / "fleet.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def stack(pki: Pki) -> Iterator[Stack]:
    folder = Path(tempfile.mkdtemp(prefix="mcp-fleet-compose-"))
    folder.chmod(0o755)
    project = f"mcp-fleet-test-{secrets.token_hex(3)}"
    write_issuer(pki, folder / "issuer")
    (folder / "issuer-ca.pem").write_bytes(pki.ca_pem())
    (folder / "issuer-ca.pem").chmod(0o644)
    tls = folder / "tls"
    tls.mkdir(mode=0o755)
    (tls / "fleet.pem").write_bytes(pki.server_pem(["localhost"], ["127.0.0.1"]))
    (tls / "fleet.pem").chmod(0o644)
    write_env(
        folder,
        {
            "MCP_FLEET_ENCRYPTION_KEY": secrets.token_hex(32),
            "MCP_FLEET_CLUSTER_SECRET": secrets.token_hex(32),
            "FLEET_ISSUER": ISSUER,
            "FLEET_ISSUER_PRESET": "generic",
            "FLEET_PUBLIC_URL": PUBLIC_URL,
            "FLEET_ISSUER_CA_FILE": CA_IN_CONTAINER,
            "FLEET_BIND": "127.0.0.1",
            "FLEET_PORT": "0",
            "FLEET_TEST_DIR": str(folder),
            "FLEET_TLS_PEM": str(tls / "fleet.pem"),
            "FLEET_TLS_BIND": "127.0.0.1",
            "FLEET_TLS_PORT": "0",
            "FLEET_IMAGE": IMAGE,
        },
    )
    s = Stack(project, folder, pki)
    try:
        s.compose("up", "-d", "--no-build")
        yield s
    finally:
        if os.environ.get("FLEET_KEEP") == "1":
            print(f"\n[compose] kept: {shlex.join(s.compose_argv())} (files in {folder})")
        else:
            s.compose("--profile", "scale-out", "down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
            subprocess.run(["rm", "-rf", str(folder)], check=False)
