"""The webhook against real servers on 127.0.0.1, each playing one trick.

A webhook URL points at someone else's server: it may redirect the report
to `ftp://` or to another port, answer one byte a second, drip a TLS
handshake, or want a password. None of these may hold a report forever,
count a report as delivered that was not, leak the password, or make an
upload wait.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from holmespy.config import Config
from holmespy.storage.local import LocalStore
from holmespy.storage.reporter import Reporter, StoredEvent
from holmespy.storage.uploader import Uploader
from holmespy.storage.webhook import WebhookError, post_json
from tests.s3_server import publish_bundle

SERVICE = "svc"
PATIENCE = 30.0
"""How long a test waits for something that must happen well within a second or two."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Hook:
    """A real HTTP server answering each POST with `status` (and `headers`)."""

    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "/hook", userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def hook_server(**settings: Any) -> Iterator[Hook]:
    hook = Hook(**settings)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.received.append(Received(self.path, dict(self.headers), json.loads(body)))
            self.send_response(hook.status)
            for name, value in hook.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Drip:
    """A server that accepts, then sends `data` one byte every `every` seconds, forever."""

    port: int = 0
    connections: int = 0
    open_now: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def drip_server(data: bytes, every: float = 0.2) -> Iterator[Drip]:
    drip = Drip()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    drip.port = listener.getsockname()[1]
    lock = threading.Lock()

    def serve(conn: socket.socket) -> None:
        with lock:
            drip.open_now += 1
        try:
            n = 0
            while not drip.stop.wait(every):
                conn.sendall(data[n % len(data) : n % len(data) + 1])
                n += 1
        except OSError:
            pass  # the client hung up: what the deadline is for
        finally:
            conn.close()
            with lock:
                drip.open_now -= 1

    def accept() -> None:
        while not drip.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed at the end of the test
                return
            drip.connections += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield drip
    finally:
        drip.stop.set()
        acceptor.join(PATIENCE)
        listener.close()


def stored_event(n: int = 1) -> StoredEvent:
    return StoredEvent({"id": f"event-{n}", "rule": "cpu"}, "s3://b/p/svc/", ())


def post(url: str, deadline: float = 5.0) -> int:
    return post_json(url, b'{"id": 1}', deadline=deadline, user_agent="holmespy/test")


def finishes(call: Callable[[], object]) -> tuple[bool, list[BaseException]]:
    """Run `call` on a thread; whether it returned within PATIENCE, and what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE)
    return not thread.is_alive(), raised


# -- one POST --


def test_a_report_is_posted_as_json() -> None:
    with hook_server() as hook:
        assert post(hook.url("/hook?team=ops")) == 204
    [got] = hook.received
    assert got.path == "/hook?team=ops"
    assert got.body == {"id": 1}
    assert got.headers["Content-Type"] == "application/json"


def test_a_password_in_the_url_is_sent_as_basic_auth_to_that_host_only() -> None:
    with hook_server() as hook:
        post(hook.url(userinfo="bot:p%40ss%3Aword@"))
    [got] = hook.received
    assert got.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:p@ss:word").decode()
    assert "bot" not in got.headers.get("Host", "")


def test_a_redirect_to_ftp_is_not_followed_nor_counted_as_delivered() -> None:
    redirect = {"Location": "ftp://127.0.0.1/stolen?x=1"}
    with hook_server(status=302, headers=redirect) as hook, pytest.raises(WebhookError) as info:
        post(hook.url())
    message = str(info.value)
    assert message.startswith("answered 302 Found to ftp://127.0.0.1/…: redirects are not followed")
    assert "x=1" not in message
    assert len(hook.received) == 1


def test_a_redirect_to_another_port_delivers_nothing_there() -> None:
    with hook_server() as elsewhere:
        target = elsewhere.url("/collect")
        with (
            hook_server(status=307, headers={"Location": target}) as hook,
            pytest.raises(WebhookError, match="answered 307 Temporary Redirect to http"),
        ):
            post(hook.url(userinfo="bot:s3cret@"))
    assert elsewhere.received == []  # neither the payload nor the password went there
    assert len(hook.received) == 1


def test_a_refusal_is_a_failure_with_its_status() -> None:
    with hook_server(status=500) as hook, pytest.raises(WebhookError, match="answered 500"):
        post(hook.url())


def test_a_server_dripping_its_answer_is_cut_off_at_the_deadline() -> None:
    with drip_server(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000) as drip:
        done, raised = finishes(lambda: post(f"http://127.0.0.1:{drip.port}/", deadline=0.5))
    assert done, "a server sending one byte at a time held the call"
    assert [str(e) for e in raised] == ["no complete answer within 0.5s"]


def test_a_server_dripping_a_tls_handshake_is_cut_off_at_the_deadline() -> None:
    # A TLS record header that announces 16 KiB, then the record a byte at a time.
    with drip_server(b"\x16\x03\x03\x40\x00" + b"\x00" * 20_000) as drip:
        done, raised = finishes(lambda: post(f"https://127.0.0.1:{drip.port}/", deadline=0.5))
    assert done, "a server dripping its TLS handshake held the call"
    assert [str(e) for e in raised] == ["no complete answer within 0.5s"]


def test_a_closed_port_fails_at_once_with_the_reason() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(WebhookError, match="cannot deliver: ConnectionRefusedError"):
        post(f"http://127.0.0.1:{port}/")


# -- the reporter: its own thread, a bounded queue --


def test_reports_never_make_the_caller_wait(caplog: pytest.LogCaptureFixture) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def slow(stored: StoredEvent) -> None:
        entered.set()
        release.wait(PATIENCE)
        seen.append(stored.event["id"])

    reporter = Reporter(timeout=PATIENCE, queue_size=2)
    reporter.subscribe(slow)
    try:
        done, _ = finishes(lambda: reporter.report(stored_event(1)))
        assert done
        assert entered.wait(PATIENCE)  # the reporter's thread took it, and is stuck there
        for n in (2, 3, 4, 5):  # two fit in the queue, two do not
            done, _ = finishes(lambda n=n: reporter.report(stored_event(n)))  # type: ignore[misc]
            assert done
        assert reporter.dropped == 2
        assert "reporter queue is full (2 reports wait): one dropped" in caplog.text
    finally:
        release.set()
    assert reporter.close(PATIENCE)
    assert seen == ["event-1", "event-2", "event-3"]
    assert reporter.errors == 2
    assert "holmespy-report" not in {t.name for t in threading.enumerate()}


def test_uploads_go_on_while_the_webhook_drips(tmp_path: Path, uploaders: list[Uploader]) -> None:
    dumps = tmp_path / "dumps"
    with drip_server(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 10_000) as drip:
        reporter = Reporter(webhook_url=f"http://127.0.0.1:{drip.port}/", timeout=PATIENCE)
        config = Config(dump_path=dumps, service=SERVICE)
        uploader = Uploader(config, store=LocalStore(tmp_path / "bucket"), reporter=reporter)
        uploaders.append(uploader.start())
        for n in range(3):
            uploader.notify(publish_bundle(dumps, SERVICE, {"threads.txt": bytes([n])}))
        shipped = threading.Event()

        def wait_for_three() -> None:
            while uploader.status()["uploaded"] != 3:
                shipped.wait(0.05)

        done, _ = finishes(wait_for_three)
        assert done, "uploads waited for the webhook"
        assert drip.open_now == 1  # the first report is still being dripped at
        assert reporter.delivered == 0


def test_a_webhook_password_and_token_never_reach_the_log_or_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="holmespy")
    with hook_server(status=403) as hook:
        url = hook.url("/T0/B0/xoxb-s3cr3t?token=t0k3n-value", userinfo="bot:hunter22@")
        reporter = Reporter(webhook_url=url, timeout=5)
        reporter.report(stored_event())
        assert reporter.close(PATIENCE)
    assert reporter.errors == 1
    assert reporter.delivered == 0
    shown = caplog.text + str(reporter.last_error) + repr(reporter)
    for secret in ("hunter22", "xoxb-s3cr3t", "t0k3n-value"):
        assert secret not in shown
    assert f"webhook http://***@127.0.0.1:{hook.port}/… answered 403 Forbidden" in shown
