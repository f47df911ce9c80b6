"""The small upstream behind the proxy: keep-alive HTTP/1.1, fixed, streamed and echoed bodies.

    python examples/proxy/upstream.py --port 8081

    GET  /anything           200, a body of ?size= bytes (default 1024), Content-Length
    GET  /stream             200, ?chunks= chunks of ?size= bytes, chunked, flushed one by one
    POST /echo               200, the request body streamed back (chunked)

It has no holmespy in it: the proxy is the process under watch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from urllib.parse import parse_qs, urlsplit

from http11 import (
    LAST_CHUNK,
    BadMessage,
    Head,
    body_chunks,
    chunk,
    encode_head,
    read_head,
    simple_response,
)

STREAMED = [(b"Content-Type", b"application/octet-stream"), (b"Transfer-Encoding", b"chunked")]


def _query_int(target: bytes, name: str, default: int, high: int) -> int:
    values = parse_qs(urlsplit(target.decode("latin-1")).query).get(name)
    try:
        return max(0, min(high, int(values[0]))) if values else default
    except ValueError:
        return default


async def respond(head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Answer one request; False when the connection must close afterwards."""
    method, target, _ = head.first
    close = head.wants_close()
    path = urlsplit(target.decode("latin-1")).path
    first = (b"HTTP/1.1", b"200", b"OK")
    keep = [] if not close else [(b"Connection", b"close")]
    if path == "/echo":
        writer.write(encode_head(first, [*STREAMED, *keep]))
        async for data in body_chunks(reader, head):
            writer.write(chunk(data))
            await writer.drain()
        writer.write(LAST_CHUNK)
        return not close
    async for _ in body_chunks(reader, head):
        pass  # a body we do not use must still be read to keep the connection in step
    if path == "/stream":
        chunks = _query_int(target, "chunks", 8, 10_000)
        size = _query_int(target, "size", 4096, 1 << 20)
        writer.write(encode_head(first, [*STREAMED, *keep]))
        for i in range(chunks):
            if method != b"HEAD":
                writer.write(chunk(bytes([65 + i % 26]) * size))
            await writer.drain()
        if method != b"HEAD":
            writer.write(LAST_CHUNK)
        return not close
    size = _query_int(target, "size", 1024, 64 << 20)
    body = b"u" * size
    writer.write(
        encode_head(
            first,
            [(b"Content-Type", b"text/plain"), (b"Content-Length", str(size).encode()), *keep],
        )
        + (body if method != b"HEAD" else b"")
    )
    return not close


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while (head := await read_head(reader)) is not None:
            if not await respond(head, reader, writer):
                break
            await writer.drain()
    except BadMessage as exc:
        writer.write(simple_response(400, "Bad Request", f"{exc}\n".encode(), close=True))
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    args = parser.parse_args()
    server = await asyncio.start_server(serve_connection, args.host, args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"upstream listening on http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    sys.exit(0)
