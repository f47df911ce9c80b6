"""An asyncio HTTP/1.1 reverse proxy with holmespy in it, and switches that break it.

    python examples/proxy/upstream.py --port 8081 &
    python examples/proxy/proxy.py --port 8080 --upstream 127.0.0.1:8081

Keep-alive on both sides (a small pool of upstream connections), bodies
streamed both ways (Content-Length, chunked, or until close) with
back-pressure. Admin endpoints on the same port (it listens on 127.0.0.1):

    GET  /_admin/status              pid, faults, holmespy.status(), threads with native ids
    POST /_admin/fail/<fault>?k=v    switch a fault on: cpu, leak, threads, tasks, block, sleep
    POST /_admin/heal[?release=1]    switch faults off (and free what they leaked)
    POST /_admin/capture/cpu[?rate=N]  ask holmespy for a CPU capture now (at N samples/s)

`--fail cpu` (repeatable, `--fail tasks:fanout=50`) switches faults on by
itself after `--fail-after` seconds. See README.md here for a walk-through.
"""

from __future__ import annotations

import os

# Settings for this example; the environment wins. A 1 s interval reacts within
# seconds; the memory limit stands in for a container's (holmespy reads the
# cgroup's when there is one), so that a leak is a visible share of it.
os.environ.setdefault("HOLMES_SERVICE", "proxy")
os.environ.setdefault("HOLMES_INTERVAL", "1s")
os.environ.setdefault("HOLMES_MEM_LIMIT", "512MiB")
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from faults import BadParameter, Faults
from http11 import (
    LAST_CHUNK,
    MAX_HEAD,
    BadMessage,
    Head,
    body_chunks,
    chunk,
    encode_head,
    end_to_end,
    has_body,
    read_head,
    simple_response,
)

import holmespy

# Before start(), so that holmespy's own log lines (rule fired, event written) show.
logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
holmespy.start()

VIA = (b"Via", b"1.1 holmespy-proxy")
POOL_SIZE = 64

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Proxy:
    def __init__(self, upstream: tuple[str, int], faults: Faults) -> None:
        self.upstream = upstream
        self.faults = faults
        self.idle: list[Conn] = []
        self.served = 0
        self.errors = 0

    # -- client side --

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = (peer[0] if peer else "unknown").encode()
        try:
            while (head := await read_head(reader)) is not None:
                if head.first[1].startswith(b"/_admin/"):
                    keep = await self.admin(head, reader, writer)
                else:
                    keep = await self.forward(head, client, reader, writer)
                self.served += 1
                if not keep:
                    break
        except BadMessage as exc:
            self.errors += 1
            writer.write(simple_response(400, "Bad Request", f"{exc}\n".encode(), close=True))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def forward(
        self,
        head: Head,
        client: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Proxy one request; True when the client connection stays open."""
        self.faults.on_request()
        method, target, _ = head.first
        close = head.wants_close()
        headers = [*end_to_end(head), VIA, (b"X-Forwarded-For", client)]
        if head.chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        request_head = encode_head((method, target, b"HTTP/1.1"), headers)
        # A pooled connection the upstream closed meanwhile fails before any
        # answer: safe to retry on a fresh one when there was no body to resend.
        retry_ok = not head.chunked and not head.content_length()
        try:
            conn, response = await self._exchange(head, request_head, reader, retry_ok)
        except (OSError, BadMessage, asyncio.IncompleteReadError) as exc:
            self.errors += 1
            message = f"upstream {self.upstream[0]}:{self.upstream[1]}: {exc}\n".encode()
            writer.write(simple_response(502, "Bad Gateway", message, close=True))
            return False
        up_reader, up_writer = conn
        try:
            status = int(response.first[1])
            send_body = has_body(method, status)
            known_length = not response.chunked and response.content_length() is not None
            rechunk = send_body and not known_length and head.version == b"HTTP/1.1"
            close = close or (send_body and not known_length and not rechunk)
            out = end_to_end(response)
            out.append(VIA)
            if rechunk:
                out.append((b"Transfer-Encoding", b"chunked"))
            if close:
                out.append((b"Connection", b"close"))
            response_head = encode_head((b"HTTP/1.1", *response.first[1:]), out)
            writer.write(response_head)
            first = b""
            if send_body:
                async for data in body_chunks(up_reader, response, until_close=True):
                    self.faults.on_chunk(data)
                    first = first or data
                    writer.write(chunk(data) if rechunk else data)
                    await writer.drain()
                if rechunk:
                    writer.write(LAST_CHUNK)
            await writer.drain()
            self.faults.on_response(response_head, first)
        except BaseException:
            up_writer.close()  # mid-body: the upstream connection is out of step
            raise
        reusable = not response.wants_close() and (
            not send_body or response.chunked or known_length
        )
        self._release(conn, reusable)
        return not close

    # -- upstream side --

    async def _exchange(
        self, head: Head, request_head: bytes, reader: asyncio.StreamReader, retry_ok: bool
    ) -> tuple[Conn, Head]:
        for attempt in (1, 2):
            conn, reused = await self._connect()
            up_reader, up_writer = conn
            try:
                up_writer.write(request_head)
                async for data in body_chunks(reader, head):
                    up_writer.write(chunk(data) if head.chunked else data)
                    await up_writer.drain()
                if head.chunked:
                    up_writer.write(LAST_CHUNK)
                await up_writer.drain()
                response = await read_head(up_reader)
                while response is not None and 100 <= int(response.first[1]) < 200:
                    response = await read_head(up_reader)  # interim answers: not forwarded
            except (OSError, BadMessage, asyncio.IncompleteReadError):
                up_writer.close()
                if reused and retry_ok and attempt == 1:
                    continue
                raise
            if response is not None:
                return conn, response
            up_writer.close()
            if not (reused and retry_ok and attempt == 1):
                break
        raise BadMessage("upstream closed the connection without answering")

    async def _connect(self) -> tuple[Conn, bool]:
        while self.idle:
            conn = self.idle.pop()
            if not conn[1].is_closing() and not conn[0].at_eof():
                return conn, True
            conn[1].close()
        host, port = self.upstream
        return await asyncio.open_connection(host, port, limit=MAX_HEAD), False

    def _release(self, conn: Conn, reusable: bool) -> None:
        if reusable and len(self.idle) < POOL_SIZE and not conn[1].is_closing():
            self.idle.append(conn)
        else:
            conn[1].close()

    # -- admin --

    async def admin(
        self, head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        async for _ in body_chunks(reader, head):
            pass
        close = head.wants_close()
        method = head.first[0]
        url = urlsplit(head.first[1].decode("latin-1"))
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/").split("/")[2:]  # after /_admin
        code, reason, body = 200, "OK", None
        try:
            if path == ["status"]:
                body = self.status()
            elif method == b"POST" and len(path) == 2 and path[0] == "fail":
                body = {"fault": path[1], "settings": self.faults.enable(path[1], params)}
            elif method == b"POST" and path == ["heal"]:
                self.faults.heal(release=params.get("release") in ("1", "true", "yes"))
                body = self.faults.describe()
            elif method == b"POST" and path == ["capture", "cpu"]:
                body = await capture_cpu_now(parse_rate(params.get("rate")))
            else:
                code, reason, body = 404, "Not Found", {"error": f"no admin endpoint {url.path}"}
        except BadParameter as exc:
            code, reason, body = 400, "Bad Request", {"error": str(exc)}
        except Exception as exc:
            # An answer, not a dropped connection: the caller sees what broke.
            logging.getLogger("proxy").exception("admin %s failed", url.path)
            code, reason = 500, "Internal Server Error"
            body = {"error": f"{type(exc).__name__}: {exc}"}
        payload = (json.dumps(body, indent=2, default=str) + "\n").encode()
        writer.write(
            simple_response(code, reason, payload, content_type=b"application/json", close=close)
        )
        return not close

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "served": self.served,
            "errors": self.errors,
            "faults": self.faults.describe(),
            "holmespy": dataclasses.asdict(holmespy.status()),
            # Python 3.11 does not name OS threads after Python ones: native ids let
            # an outside reader of /proc/<pid>/task/<tid> tell holmespy's threads apart.
            "threads": [{"name": t.name, "native_id": t.native_id} for t in threading.enumerate()],
        }


def parse_rate(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1000):
        raise BadParameter(f"rate={text!r}: expected samples per second from 1 to 1000")
    return int(text)


async def capture_cpu_now(rate: int | None = None) -> dict[str, Any]:
    """A CPU capture now, through holmespy's own rule path and capture worker.

    The cpu rule is swapped for one that fires on any sample; `reconfigure`
    wakes the watcher, whose tick fires and queues the capture; the rule is
    put back as soon as it has fired, so exactly one event results.
    The first tick has no CPU reading yet, so it does not fire. `rate` sets
    HOLMES_CPU_PROFILE_RATE for this capture and the ones after it (the
    capture reads the configuration when it starts, after the rule is back).
    """
    watcher = holmespy.current()
    if watcher is None:
        return {"captured": False, "why": "holmespy is not running (HOLMES_ENABLE=0?)"}
    original = watcher.config
    if original.cpu is None:
        return {"captured": False, "why": "the cpu rule is off (HOLMES_CPU=off)"}
    if rate is not None:
        original = original.replace(cpu_profile_rate=rate)
    always = holmespy.Rule(min=0, diff=0, abs=0, cooldown=0, limit=holmespy.Limit(10**6, 3600))
    dropped = watcher.status().dropped
    asked = time.monotonic()
    holmespy.reconfigure(original.replace(cpu=always))
    # A loaded machine may run the woken tick late: wait for a few intervals.
    deadline = asked + max(5.0, 3 * original.interval)
    try:
        while not fired_since(watcher, "cpu", asked):
            if time.monotonic() > deadline:
                return {"captured": False, "why": "no tick fired; holmespy may have just started"}
            await asyncio.sleep(0.005)
    finally:
        holmespy.reconfigure(original)
    if watcher.status().dropped > dropped:
        return {"captured": False, "why": "the capture queue was full; the capture was dropped"}
    return {
        "captured": True,
        "profile_seconds": original.cpu_profile_seconds,
        "rate": original.cpu_profile_rate,
    }


def fired_since(watcher: holmespy.Watcher, rule: str, since: float) -> bool:
    """Whether `rule` fired at or after `since` (time.monotonic, the clock rules use)."""
    state = watcher.states.get(rule)
    return state is not None and bool(state.fired_at) and state.fired_at[-1] >= since


def parse_fault(spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = spec.partition(":")
    params = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
    return name, params


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.upstream.rpartition(":")
    faults = Faults()
    proxy = Proxy((host or "127.0.0.1", int(port)), faults)
    server = await asyncio.start_server(
        proxy.handle, args.host, args.port, backlog=1024, limit=MAX_HEAD
    )
    bound = server.sockets[0].getsockname()[1]
    state = "on" if holmespy.current() else "off"
    print(
        f"proxy listening on http://{args.host}:{bound} -> {args.upstream} "
        f"(pid {os.getpid()}, holmespy {state})",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.fail:

        def switch_on() -> None:
            for spec in args.fail:
                faults.enable(*parse_fault(spec))
            print(f"faults on: {', '.join(faults.active)}", flush=True)

        loop.call_later(args.fail_after, switch_on)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--upstream", default="127.0.0.1:8081", metavar="HOST:PORT")
    parser.add_argument(
        "--fail", action="append", default=[], metavar="FAULT[:k=v,...]", help="see faults.py"
    )
    parser.add_argument(
        "--fail-after",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="when --fail switches on (after holmespy's 10-sample warm-up)",
    )
    args = parser.parse_args()
    try:
        for spec in args.fail:
            Faults().enable(*parse_fault(spec))
    except BadParameter as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
