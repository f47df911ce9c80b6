"""`holmespy serve`: the event bundles of a folder or an S3 prefix as local web pages.

Pages: `/` the event list (filters by service, rule, host and time, newest
first, 50 a page); `/event/ID` one event (why it fired, the metric history
as a chart with its thresholds, a flame graph for each profile, thread and
task groups, the heap census and holders, download links); `/compare?a=ID&b=ID`
two events side by side, with what grew between their heap profiles.

It only reads. Only GET and HEAD are answered; a request names an event by
its id and a file by its name in the event's `event.json`, never by a path:
a name with `..`, a slash, a backslash or a NUL, once percent-decoded, is
refused, and in a folder the source opens nothing through a link. It binds
to 127.0.0.1 unless told otherwise, and answers only requests addressed to
the name it was started with (a page on another site cannot reach it by
rebinding a DNS name to 127.0.0.1). Every page carries a
Content-Security-Policy that runs only the package's own script, and files
are downloaded as attachments, never rendered.

Each request to an S3 source gets the CLI's `--timeout` (30 s by default);
past it, the page is one line saying what did not answer, as any verb says it.
The URL is printed on stdout; progress and errors go to stderr as
`holmespy: ...` lines.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from holmespy.cli import pages
from holmespy.cli.deadline import TimedOut, add_timeout_arg
from holmespy.cli.errors import BadUsage, CLIError, NotFound, UnsafePath
from holmespy.cli.events import Query
from holmespy.cli.reading import add_max_size_arg
from holmespy.cli.site import Site
from holmespy.cli.source import Source, check_event_id, resolve_source
from holmespy.cli.text import warn
from holmespy.errors import HolmesError
from holmespy.registry import RULE_NAMES
from holmespy.storage.base import CHUNK, ObjectReader

DEFAULT_PORT = 8642
ASSETS = {
    "flame.js": "text/javascript; charset=utf-8",
    "serve.css": "text/css; charset=utf-8",
}
"""The only files served from the package, by name."""
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
MAX_QUERY = 4096
"""Characters of a request's query string read at most."""
MAX_READERS = 4
"""Event, file and comparison pages built at once; the others wait their turn. Each can
hold its profiles decoded (1.5 MB of gzipped pprof can decode to 700 MB) or a whole file."""
MAX_CONNECTIONS = 32
"""Connections served at once (a thread each): a browser opens 6; more are closed unanswered,
so clients that connect and never send cannot start threads without end."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="a read-only local web view of the events",
        description="Serve the event bundles of a folder or S3 as local, read-only web pages.",
    )
    p.add_argument(
        "--from", dest="source", metavar="SRC", help="a dump folder or s3://bucket/prefix"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    add_timeout_arg(p)
    add_max_size_arg(p)
    p.set_defaults(run=run)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number from 0 to 65535")
    return int(text)


def run(args: argparse.Namespace) -> int:
    source = resolve_source(args.source, args.timeout)
    try:
        server = Server((args.host, args.port), source, args.timeout, args.max_size)
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    with server:
        host, port = str(server.server_address[0]), server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        if not _loopback(host):
            warn(f"listening on {host}: anyone who can reach it can read every bundle")
        print(f"http://{shown}:{port}/", flush=True)
        warn(f"serving {source.url} read-only; Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    max_connections = MAX_CONNECTIONS

    def __init__(
        self, address: tuple[str, int], source: Source, timeout: float, max_size: int
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.source = source
        self.timeout_seconds = timeout
        self.max_size = max_size
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self.readers = threading.BoundedSemaphore(MAX_READERS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # closed unanswered: nothing to wait for
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def site(self) -> Site:
        """A reader for one request: an S3 source gets a deadline of its own."""
        return Site(self.source.renewed(self.timeout_seconds), self.max_size)

    def allowed_hosts(self) -> frozenset[str] | None:
        """The Host headers answered; None (any) once it listens beyond loopback, where
        the user chose to be reached by whatever name the network gives it."""
        host, port = str(self.server_address[0]), self.server_address[1]
        if not _loopback(host):
            return None
        names = {host, f"[{host}]", "localhost", "127.0.0.1", "[::1]"}
        return frozenset({*names, *(f"{n}:{port}" for n in names)})


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "holmespy"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 60
    """Seconds a connection may stay silent: a client that never sends cannot hold a thread."""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _refuse_method(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, _error("read-only: only GET and HEAD"), True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (an unknown method, a malformed request line, too many
        headers), as one-line pages with the headers every page has."""
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        self._send(code, _error(text), self.command != "HEAD" and code >= 200)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per request would bury the lines that matter; errors are said below

    # -- routing --

    def _answer(self, *, send_body: bool) -> None:
        status: int
        body: str | bytes | ObjectReader | pages.ErrorBody
        try:
            status, body, headers = self._route()
        except CLIError as exc:
            status, body, headers = _status_of(exc), _error(str(exc)), {}
        except HolmesError as exc:  # a storage failure, a corrupt file
            status, body, headers = HTTPStatus.BAD_GATEWAY, _error(str(exc)), {}
        except (MemoryError, RecursionError) as exc:
            what = "memory" if isinstance(exc, MemoryError) else "stack"
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            body, headers = _error(f"ran out of {what} (a file too large or too deep?)"), {}
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            status, headers = HTTPStatus.INTERNAL_SERVER_ERROR, {}
            body = _error(f"{where}{exc.strerror or exc}")
        except Exception as exc:  # a bug of ours: one line here, and the server goes on
            status, headers = HTTPStatus.INTERNAL_SERVER_ERROR, {}
            body = _error(f"internal error: {type(exc).__name__}: {exc}")
        if isinstance(body, pages.ErrorBody):
            if status >= 500:
                warn(f"{self.command} {self.path[:200]}: {body.message}")
            body = pages.error_page(status, body.message, self.server.source.url)
        self._send(status, body, send_body, headers)

    def _route(self) -> tuple[int, str | bytes | ObjectReader, dict[str, str]]:
        host = self.headers.get("Host", "")
        allowed = self.server.allowed_hosts()
        if allowed is not None and host not in allowed:
            raise UnsafePath(f"refused a request for host {host!r}: open the URL serve printed")
        if not _own_request(self.headers):
            raise UnsafePath("refused a request made by another site's page: open the URL yourself")
        split = urlsplit(self.path)
        if len(split.query) > MAX_QUERY:
            raise BadUsage(f"a query of {len(split.query):,} characters is too long")
        parts = [_segment(p) for p in split.path.split("/")[1:]]
        try:
            fields = parse_qs(split.query, max_num_fields=20)
        except ValueError:
            raise BadUsage("a query of more than 20 fields") from None
        params = {k: v[0] for k, v in fields.items()}
        source = self.server.source.url
        match parts:
            case [""]:
                return 200, self._list(params), {}
            case ["event", event_id] | ["event", event_id, ""]:
                with self.server.readers:  # the page too: it reads the decoded profiles
                    view = self.server.site().event(check_event_id(event_id))
                    return 200, pages.event_page(view, source), {}
            case ["event", event_id, "file", name]:
                with self.server.readers:  # not while it is sent: that holds one block
                    _, reader = self.server.site().file(check_event_id(event_id), name)
                return 200, reader, _download_headers(name)
            case ["compare"]:
                a, b = params.get("a"), params.get("b")
                if not a or not b:
                    raise BadUsage("compare needs two events: choose a and b in the list")
                with self.server.readers:
                    first, second, extra = self.server.site().compare(
                        check_event_id(a), check_event_id(b)
                    )
                    return 200, pages.compare_page(first, second, extra, source), {}
            case ["static", name] if name in ASSETS:
                data = resources.files("holmespy.cli").joinpath("static", name).read_bytes()
                return 200, data, {"Content-Type": ASSETS[name], "Cache-Control": "max-age=300"}
            case _:
                raise NotFound(f"{split.path[:200]}: no such page")

    def _list(self, params: dict[str, str]) -> str:
        form = {k: params.get(k, "").strip() for k in ("service", "rule", "host", "since", "until")}
        args = argparse.Namespace(
            service=form["service"] or None,
            rule=[form["rule"]] if form["rule"] else None,
            host=form["host"] or None,
            since=form["since"] or None,
            until=form["until"] or None,
        )
        if form["rule"] and form["rule"] not in RULE_NAMES:
            raise BadUsage(f"rule {form['rule']!r}: expected one of {', '.join(RULE_NAMES)}")
        now = dt.datetime.now(dt.UTC)
        query = Query.from_args(args, now)
        page_text = params.get("page", "1")
        page = int(page_text) if page_text.isdigit() and 0 < len(page_text) < 7 else 1
        site = self.server.site()
        rows, more = site.rows(query, max(1, page))
        return pages.list_page(
            rows,
            form=form,
            services=site.services(),
            page_number=max(1, page),
            more=more,
            now=now,
            source=self.server.source.url,
        )

    # -- sending --

    def _send(
        self,
        status: int,
        body: str | bytes | ObjectReader | pages.ErrorBody,
        send_body: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, ObjectReader):
            with body:
                self._send_head(status, body.size, headers)
                if send_body:
                    self._stream(body)
            return
        if isinstance(body, pages.ErrorBody):
            body = pages.error_page(status, body.message, self.server.source.url)
        data = body.encode() if isinstance(body, str) else body
        self._send_head(status, len(data), headers)
        if send_body:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    def _stream(self, reader: ObjectReader) -> None:
        """The file's `size` bytes, a block at a time. Past the headers an error can no longer
        be a page: it is said on stderr and the connection is closed short of the length
        announced, so the browser reports a failed download instead of keeping a cut file."""
        left = reader.size
        try:
            while left > 0:
                block = reader.read(min(CHUNK, left))
                if not block:
                    raise CLIError(f"the file ended {left:,} bytes short of its announced size")
                self.wfile.write(block)
                left -= len(block)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the browser gave up: nothing to say
        except Exception as exc:  # a store that stopped answering, a disk error, a bug of ours
            self.close_connection = True
            warn(f"{self.command} {self.path[:200]}: {_one_line(exc)}")

    def _send_head(self, status: int, length: int, headers: dict[str, str] | None) -> None:
        # http.server answers HTTP/0.9 (and a request line it cannot read) without a
        # header: no Content-Type, no CSP. Every reply here has its headers.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self.send_response(status)
        head = {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Length": str(length),
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            **(headers or {}),
        }
        if status >= 400 or self._has_body():
            # A body is never read, so what follows on the connection could be a request
            # hidden in it, past the Host check of the one that carried it: hang up.
            head["Connection"] = "close"
        for key, value in head.items():
            self.send_header(key, value)
        self.end_headers()

    def _has_body(self) -> bool:
        if getattr(self, "headers", None) is None:  # the request line itself was refused
            return False
        length = self.headers.get("Content-Length", "0").strip()
        return length != "0" or "Transfer-Encoding" in self.headers


def _own_request(headers: Any) -> bool:
    """Whether the browser says the request comes from serve's own pages or from the user
    (a typed URL, a bookmark, a link clicked). Any page of any site can make the browser
    request a URL here (an image, a script, a redirect), and though it cannot read the
    reply, each one costs reading and decoding an event: the host's memory and CPU.
    Clients that do not say (curl, older browsers) are answered."""
    site = headers.get("Sec-Fetch-Site")
    if site in (None, "same-origin", "none"):
        return True
    return bool(
        headers.get("Sec-Fetch-Mode") == "navigate" and headers.get("Sec-Fetch-User") == "?1"
    )


def _segment(raw: str) -> str:
    """One percent-decoded path segment, refused if it could name another place."""
    try:
        text = unquote(raw, errors="strict") if "%" in raw else raw
    except UnicodeDecodeError:
        raise UnsafePath(f"refused the path segment {raw[:100]!r}: not UTF-8") from None
    if text in (".", "..") or any(c in text for c in "/\\\x00"):
        raise UnsafePath(f"refused the path segment {text!r}: pages are named by event ids")
    return text


def _status_of(exc: CLIError) -> int:
    if isinstance(exc, TimedOut):
        return HTTPStatus.GATEWAY_TIMEOUT
    if isinstance(exc, UnsafePath):
        return HTTPStatus.FORBIDDEN
    if isinstance(exc, NotFound):
        return HTTPStatus.NOT_FOUND
    if isinstance(exc, BadUsage):
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.INTERNAL_SERVER_ERROR


def _one_line(exc: Exception) -> str:
    """`exc` as `_answer` says it on a page."""
    if isinstance(exc, CLIError | HolmesError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"internal error: {type(exc).__name__}: {exc}"


def _error(message: str) -> pages.ErrorBody:
    return pages.ErrorBody(message)


def _download_headers(name: str) -> dict[str, str]:
    # `name` matched FILE_NAME_RE (letters, digits, `._+-`): safe inside the quotes.
    return {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{name}"',
    }
