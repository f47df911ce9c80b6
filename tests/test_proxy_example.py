"""The example proxy (examples/proxy): real requests through it, and one injected failure."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.timeout(60)

PROXY = EXAMPLES / "proxy"


def spawn(script: str, args: list[str], env: dict[str, str], log: Path) -> tuple[Any, int]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(PROXY / script), "--port", "0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=log.parent,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", log.read_bytes())
        if found:
            return proc, int(found.group(1))
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"{script} did not start:\n{log.read_text(errors='replace')}")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """Upstream and proxy on free ports; the proxy samples every 100 ms."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    upstream, up_port = spawn("upstream.py", [], env, tmp_path / "upstream.log")
    dumps = tmp_path / "dumps"
    # Requests after an idle warm-up are a CPU spike too: only the rule under test is on.
    env.update(
        HOLMES_INTERVAL="100ms",
        HOLMES_DUMP_PATH=str(dumps),
        HOLMES_CPU="off",
        HOLMES_MEM="off",
        HOLMES_GCHEAP="off",
    )
    proc, port = spawn(
        "proxy.py", ["--upstream", f"127.0.0.1:{up_port}"], env, tmp_path / "proxy.log"
    )
    try:
        yield port, dumps
    finally:
        for p in (proc, upstream):
            p.terminate()
            p.wait(10)


def admin(port: int, path: str, method: str = "GET") -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        result: dict[str, Any] = json.loads(response.read())
        return result
    finally:
        conn.close()


def test_requests_pass_through_keep_alive_and_stream(proxy: tuple[int, Path]) -> None:
    port, _ = proxy
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        sockets = set()
        for size in (0, 10, 100_000):
            conn.request("GET", f"/item?size={size}")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            assert body == b"u" * size
            assert response.getheader("Via") == "1.1 holmespy-proxy"
            sockets.add(id(conn.sock))
        assert len(sockets) == 1  # one client connection served all three

        conn.request("GET", "/stream?chunks=5&size=1000")
        response = conn.getresponse()
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b"".join(bytes([65 + i]) * 1000 for i in range(5))

        pieces = [b"first,", b"second,", b"x" * 70_000]
        conn.request("POST", "/echo", body=iter(pieces), encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"".join(pieces)
        assert id(conn.sock) in sockets  # still the same connection
    finally:
        conn.close()
    served = admin(port, "/_admin/status")["served"]
    assert served >= 5


def test_a_thread_leak_switched_on_writes_a_thread_event(proxy: tuple[int, Path]) -> None:
    port, dumps = proxy
    deadline = time.monotonic() + 15
    while admin(port, "/_admin/status")["holmespy"]["ticks"] < 11:  # warm-up: 10 samples
        assert time.monotonic() < deadline, "holmespy did not warm up"
        time.sleep(0.1)
    answer = admin(port, "/_admin/fail/threads?max=40", method="POST")
    assert answer["settings"] == {"max": 40.0}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(40):
        conn.request("GET", "/")
        conn.getresponse().read()
    conn.close()
    deadline = time.monotonic() + 10
    events: list[Path] = []
    while not events and time.monotonic() < deadline:
        events = [p.parent for p in dumps.glob("proxy/*/*/event.json")]
        time.sleep(0.05)
    assert events, "no event was written"
    event = json.loads((events[0] / "event.json").read_text())
    assert event["rule"] == "thread"
    assert event["value"] >= 10
    threads = (events[0] / "threads.txt").read_text()
    assert "wait_for_flush" in threads
    assert '"flusher-0"' in threads
    status = admin(port, "/_admin/status")
    assert status["faults"]["leaked_threads"] == 40
    assert status["holmespy"]["events"] == 1
