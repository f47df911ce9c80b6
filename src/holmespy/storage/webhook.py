"""POSTing a report to `HOLMES_WEBHOOK_URL`: one request that cannot hurt the process.

- One deadline for the whole call, not for each read: a watchdog shuts the
  connection's socket when it passes, so a server that answers one byte a
  second is cut off on time instead of holding the call forever.
- No redirect is followed: a 3xx is a failed delivery, reported with where it
  pointed (`ftp://`, another port, another host: none of them gets the
  payload, and none is counted as delivered).
- `https://user:password@host/…` sends HTTP Basic auth (urllib alone would
  take `user:password@host` for a host name); the credentials go to that
  host only, since nothing is redirected.
- The reply's body is never read: only its status matters.
- Proxies come from the standard `http_proxy` / `https_proxy` / `no_proxy`
  variables, as urllib reads them.

Name resolution (`getaddrinfo`) cannot be interrupted: a resolver that hangs
holds the call until the resolver's own timeout. The reporter runs each call
on a thread it waits for at most the deadline, so even then nothing else waits.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from holmespy.errors import HolmesError
from holmespy.redact import public_url

__all__ = ["WebhookError", "post_json"]


class WebhookError(HolmesError):
    """The webhook did not take the report; the message says why (and has no secret)."""


def post_json(url: str, body: bytes, *, deadline: float, user_agent: str) -> int:
    """POST `body` as JSON to `url`, all within `deadline` seconds; the 2xx status, or
    WebhookError (a refusal, a redirect, a timeout, an unreachable host)."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "User-Agent": user_agent}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (
            f":{parts.port}" if parts.port is not None else ""
        )
        url = urlunsplit(parts._replace(netloc=netloc))
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    watch = _Watch(deadline)
    try:
        with _opener(watch).open(request, timeout=deadline) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location", "") if exc.headers else ""
            target = f" to {public_url(where, path=False)}" if where else ""
            raise WebhookError(
                f"answered {exc.code} {exc.reason}{target}: redirects are not followed,"
                " so nothing was delivered (set HOLMES_WEBHOOK_URL to the final address)"
            ) from None
        raise WebhookError(f"answered {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        if watch.expired:
            raise WebhookError(f"no complete answer within {deadline:g}s") from None
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise WebhookError(f"cannot deliver: {type(reason).__name__}: {reason}") from None
    finally:
        watch.cancel()


class _Watch:
    """Shuts every socket of one call when its deadline passes."""

    def __init__(self, deadline: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(deadline, self._expire)
        self._timer.daemon = True
        self._timer.name = "holmespy-webhook-deadline"
        self._timer.start()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket (whose own shutdown would
    # tear down its TLS state under a reader in another thread). A socket already
    # closed has no descriptor left, so this can never reach someone else's.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _HTTPConnection(http.client.HTTPConnection):
    watch: _Watch

    def connect(self) -> None:
        super().connect()  # also the CONNECT to a proxy, whose socket must be watched too
        if self.sock is not None:
            self.watch.add(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    watch: _Watch

    def connect(self) -> None:
        # As http.client does it, but the TLS handshake happens on a socket
        # already watched: a server can drip a handshake as slowly as a reply.
        http.client.HTTPConnection.connect(self)
        if self.sock is None:
            return
        self.watch.add(self.sock)
        context: ssl.SSLContext = getattr(self, "_context", None) or ssl.create_default_context()
        server = getattr(self, "_tunnel_host", None) or self.host
        tls = context.wrap_socket(self.sock, server_hostname=server, do_handshake_on_connect=False)
        self.sock = tls
        self.watch.add(tls)
        tls.do_handshake()


def _factory(cls: type[Any], watch: _Watch) -> Callable[..., http.client.HTTPConnection]:
    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        kwargs.pop("check_hostname", None)  # passed by 3.11's urllib; the context decides
        connection: http.client.HTTPConnection = cls(host, **kwargs)
        connection.watch = watch  # type: ignore[attr-defined]
        return connection

    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_factory(_HTTPConnection, self.watch), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_factory(_HTTPSConnection, self.watch), req)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


def _opener(watch: _Watch) -> urllib.request.OpenerDirector:
    # Built by hand: build_opener would add handlers for ftp:// and file:// too.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _HTTPHandler(watch),
        _HTTPSHandler(watch),
        _NoRedirect(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener
