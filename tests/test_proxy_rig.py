"""The benchmarks' admin calls on a loaded machine: retried while the connection fails,
never sent twice when they are not idempotent, and failing with the server's own words.

The server is a real process that drops the first connections it accepts
(closes them without an answer, as a server under load or a crashing
handler does), then answers; it counts the requests it read.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import proxy_rig
from benchmarks.outcome import NotMeasured

pytestmark = pytest.mark.timeout(60)

FLAKY_SERVER = r"""
import json, socket, sys
drop = int(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(f"flaky listening on http://127.0.0.1:{srv.getsockname()[1]}", flush=True)
seen = 0
while True:
    conn, _ = srv.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data:
        conn.close()
        continue
    seen += 1
    print(f"request {seen}: {data.split(b' ')[1].decode()}", flush=True)
    if seen <= drop:
        conn.close()  # read it, answer nothing
        continue
    body = json.dumps({"seen": seen}).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
                 % (len(body), body))
    conn.close()
"""


@pytest.fixture
def flaky(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[proxy_rig.Server]:
    drop: int = request.param
    log = tmp_path / "flaky.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-c", FLAKY_SERVER, str(drop)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while "listening" not in log.read_text():
            assert time.monotonic() < deadline, "the flaky server did not start"
            time.sleep(0.02)
        port = int(log.read_text().split("127.0.0.1:")[1].split()[0])
        yield proxy_rig.Server("flaky", proc, port, log)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_rig, "ADMIN_BACKOFF", 0.01)


def requests_seen(server: proxy_rig.Server) -> int:
    return server.log.read_text().count("request ")


@pytest.mark.parametrize("flaky", [2], indirect=True)
def test_a_status_call_is_retried_until_the_server_answers(flaky: proxy_rig.Server) -> None:
    assert proxy_rig.request(flaky, "/_admin/status") == {"seen": 3}


@pytest.mark.parametrize("flaky", [1], indirect=True)
def test_a_fault_switch_is_retried_it_only_sets_a_state(flaky: proxy_rig.Server) -> None:
    assert proxy_rig.request(flaky, "/_admin/fail/cpu", method="POST") == {"seen": 2}


@pytest.mark.parametrize("flaky", [1], indirect=True)
def test_a_capture_request_whose_answer_is_lost_is_not_sent_again(
    flaky: proxy_rig.Server,
) -> None:
    with pytest.raises(proxy_rig.RigError, match="capture/cpu failed") as failure:
        proxy_rig.request(flaky, "/_admin/capture/cpu", method="POST")
    assert requests_seen(flaky) == 1  # a second capture would have been asked for
    assert "request 1: /_admin/capture/cpu" in str(failure.value)  # the server's log tail


@pytest.mark.parametrize("flaky", [100], indirect=True)
def test_a_server_that_never_answers_is_a_failure_the_benchmark_reports(
    flaky: proxy_rig.Server,
) -> None:
    with pytest.raises(NotMeasured, match=r"flaky \(running\): GET /_admin/status failed"):
        proxy_rig.request(flaky, "/_admin/status", attempts=3)
    assert requests_seen(flaky) == 3


@pytest.mark.parametrize("flaky", [0], indirect=True)
def test_a_server_that_exited_is_not_called_again(flaky: proxy_rig.Server) -> None:
    flaky.proc.kill()
    flaky.proc.wait()
    with pytest.raises(proxy_rig.RigError, match=r"flaky \(exited\)"):
        proxy_rig.request(flaky, "/_admin/status")
