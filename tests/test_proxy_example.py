"""The example proxy (examples/proxy): real requests through it, and one injected failure.

Started with the benchmarks' own rig (`benchmarks/proxy_rig.py`), so the test
and the benchmarks run the proxy the same way.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import proxy_rig
from tests.loop_thread import needs_loop_discovery

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[proxy_rig.Server, Path]]:
    """Upstream and proxy on free ports; the proxy samples every 100 ms."""
    upstream = proxy_rig.start_upstream(tmp_path)
    dumps = tmp_path / "dumps"
    try:
        # Requests after an idle warm-up are a CPU spike too: only the rule under test is on.
        server = proxy_rig.start_proxy(
            tmp_path,
            upstream,
            HOLMES_INTERVAL="100ms",
            HOLMES_DUMP_PATH=str(dumps),
            HOLMES_CPU="off",
            HOLMES_MEM="off",
            HOLMES_GCHEAP="off",
        )
    except BaseException:
        upstream.stop()
        raise
    try:
        yield server, dumps
    finally:
        server.stop()
        upstream.stop()


@pytest.fixture
def cpu_proxy(tmp_path: Path) -> Iterator[tuple[proxy_rig.Server, Path]]:
    """A proxy whose cpu rule is on, with the in-process sampler and a short window."""
    upstream = proxy_rig.start_upstream(tmp_path)
    dumps = tmp_path / "dumps"
    try:
        server = proxy_rig.start_proxy(
            tmp_path,
            upstream,
            HOLMES_INTERVAL="100ms",
            HOLMES_DUMP_PATH=str(dumps),
            HOLMES_MEM="off",
            HOLMES_GCHEAP="off",
            HOLMES_CPU_ENGINE="sampler",
            HOLMES_CPU_PROFILE_SECONDS="0.3",
        )
    except BaseException:
        upstream.stop()
        raise
    try:
        yield server, dumps
    finally:
        server.stop()
        upstream.stop()


def admin(server: proxy_rig.Server, path: str, method: str = "GET") -> dict[str, Any]:
    result: dict[str, Any] = proxy_rig.request(server, path, method)
    return result


def test_requests_pass_through_keep_alive_and_stream(proxy: tuple[proxy_rig.Server, Path]) -> None:
    server, _ = proxy
    port = server.port
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
    served = admin(server, "/_admin/status")["served"]
    assert served >= 5


def test_a_thread_leak_switched_on_writes_a_thread_event(
    proxy: tuple[proxy_rig.Server, Path],
) -> None:
    server, dumps = proxy
    port = server.port
    deadline = time.monotonic() + 15
    while admin(server, "/_admin/status")["holmespy"]["ticks"] < 11:  # warm-up: 10 samples
        assert time.monotonic() < deadline, "holmespy did not warm up"
        time.sleep(0.1)
    answer = admin(server, "/_admin/fail/threads?max=40", method="POST")
    assert answer["settings"] == {"max": 40.0}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(40):
        conn.request("GET", "/")
        conn.getresponse().read()
    conn.close()
    deadline = time.monotonic() + 60
    events: list[Path] = []
    while not events and time.monotonic() < deadline:
        # A bundle is built in a hidden .tmp-… folder, then renamed: only
        # published events count (pathlib's glob matches hidden names too).
        events = [
            p.parent
            for p in dumps.glob("proxy/*/*/event.json")
            if not p.parent.name.startswith(".")
        ]
        time.sleep(0.05)
    assert events, "no event was written"
    event = json.loads((events[0] / "event.json").read_text())
    assert event["rule"] == "thread"
    assert event["value"] >= 10
    threads = (events[0] / "threads.txt").read_text()
    assert "wait_for_flush" in threads
    assert '"flusher-0"' in threads
    status = admin(server, "/_admin/status")
    assert status["faults"]["leaked_threads"] == 40
    assert status["holmespy"]["events"] == 1


def test_a_capture_asked_through_the_admin_endpoint_writes_a_cpu_event(
    cpu_proxy: tuple[proxy_rig.Server, Path],
) -> None:
    # The benchmarks' way to ask for a capture (it once dropped the connection
    # instead of answering, when the worker lost an attribute it read).
    server, dumps = cpu_proxy
    proxy_rig.wait_ticks(server, 11, timeout=30)
    answer = admin(server, "/_admin/capture/cpu?rate=40", method="POST")
    assert answer == {"captured": True, "profile_seconds": 0.3, "rate": 40}
    deadline = time.monotonic() + 20
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() < deadline:
        events = [e for e in proxy_rig.events(dumps) if e["rule"] == "cpu"]
        time.sleep(0.05)
    assert events, "the capture never published its event"
    assert events[0]["captures"]["cpu"]["engine"] == "sampler"
    assert events[0]["captures"]["cpu"]["rate_asked"] == 40
    assert (Path(events[0]["_path"]) / "cpu.pb.gz").exists()


def test_an_unknown_admin_path_is_answered_not_dropped(
    proxy: tuple[proxy_rig.Server, Path],
) -> None:
    server, _ = proxy
    with pytest.raises(proxy_rig.RigError, match="404"):
        admin(server, "/_admin/nothing-here")
    with pytest.raises(proxy_rig.RigError, match=r"400.*samples per second"):
        admin(server, "/_admin/capture/cpu?rate=fast", method="POST")
    assert admin(server, "/_admin/status")["pid"] == server.pid  # still serving


@needs_loop_discovery
def test_the_sleep_switch_writes_a_loop_event_naming_the_sleeping_call(
    proxy: tuple[proxy_rig.Server, Path],
) -> None:
    server, dumps = proxy
    deadline = time.monotonic() + 15
    while admin(server, "/_admin/status")["holmespy"]["ticks"] < 11:  # warm-up: 10 samples
        assert time.monotonic() < deadline, "holmespy did not warm up"
        time.sleep(0.1)
    answer = admin(server, "/_admin/fail/sleep?ms=900", method="POST")
    assert answer["settings"] == {"ms": 900.0}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/")
    conn.getresponse().read()
    conn.close()
    deadline = time.monotonic() + 20
    events: list[Path] = []
    while not events and time.monotonic() < deadline:
        published = dumps.glob("proxy/*/*/event.json")  # not a .tmp- folder being written
        events = [p.parent for p in published if not p.parent.name.startswith(".")]
        time.sleep(0.05)
    assert events, "no event was written"
    event = json.loads((events[0] / "event.json").read_text())
    assert event["rule"] == "loop"
    stack = event["captures"]["loop"]["stalls"][0]["stack"]
    assert stack[0].startswith("faults.lookup_session (")
    assert "time.sleep(seconds)" in (events[0] / "loop.txt").read_text()
