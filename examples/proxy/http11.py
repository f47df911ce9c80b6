"""Just enough HTTP/1.1 for the proxy and its upstream: heads, bodies, keep-alive.

Bodies are never held whole: they are async iterators of chunks, so a large or
slow body streams through the proxy with back-pressure (`drain()` per chunk).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
READ_SIZE = 64 * 1024
# Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


class BadMessage(Exception):
    """The peer sent something that is not HTTP/1.x; answer 400/502 and close."""


@dataclass
class Head:
    """A request or response head; `first` is the request or status line, split in three."""

    first: tuple[bytes, bytes, bytes]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def tokens(self, name: bytes) -> set[bytes]:
        """The comma-separated tokens of every `name` header, lower-cased."""
        found: set[bytes] = set()
        for key, value in self.headers:
            if key.lower() == name:
                found.update(t.strip().lower() for t in value.split(b","))
        return found

    @property
    def version(self) -> bytes:
        return self.first[0] if self.first[0].startswith(b"HTTP/") else self.first[2]

    @property
    def chunked(self) -> bool:
        return b"chunked" in self.tokens(b"transfer-encoding")

    def content_length(self) -> int | None:
        value = self.get(b"content-length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise BadMessage(f"bad Content-Length {value!r}")
        return int(value)

    def wants_close(self) -> bool:
        """Whether the connection ends after this message (HTTP/1.0 closes unless asked)."""
        conn = self.tokens(b"connection")
        if self.version == b"HTTP/1.0":
            return b"keep-alive" not in conn
        return b"close" in conn


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next head on the connection, or None when the peer closed between messages."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadMessage("connection closed inside a message head") from None
    except asyncio.LimitOverrunError:
        raise BadMessage(f"message head larger than {MAX_HEAD} bytes") from None
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2:
        raise BadMessage(f"bad first line {lines[0][:80]!r}")
    first = (parts[0], parts[1], parts[2] if len(parts) == 3 else b"")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise BadMessage(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return Head(first, headers)


def encode_head(first: tuple[bytes, bytes, bytes], headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b" ".join(first)]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def end_to_end(head: Head) -> list[tuple[bytes, bytes]]:
    """The headers a proxy forwards: hop-by-hop ones and any named in Connection go."""
    drop = HOP_BY_HOP | head.tokens(b"connection")
    return [(k, v) for k, v in head.headers if k.lower() not in drop]


async def body_chunks(
    reader: asyncio.StreamReader, head: Head, *, until_close: bool = False
) -> AsyncIterator[bytes]:
    """The message body as it arrives: chunked, by Content-Length, or (responses) to EOF."""
    if head.chunked:
        async for chunk in _dechunk(reader):
            yield chunk
        return
    length = head.content_length()
    if length is not None:
        while length > 0:
            data = await reader.read(min(READ_SIZE, length))
            if not data:
                raise BadMessage("connection closed inside a body")
            length -= len(data)
            yield data
        return
    if until_close:
        while data := await reader.read(READ_SIZE):
            yield data


async def _dechunk(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadMessage(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers: not forwarded
                return
            yield await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise BadMessage("chunk not followed by CRLF")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise BadMessage("connection closed inside a chunked body") from None


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def has_body(method: bytes, status: int) -> bool:
    """Whether a response to `method` with `status` can carry a body (RFC 9112 6.3)."""
    return method != b"HEAD" and status >= 200 and status not in (204, 304)


def simple_response(
    status: int, reason: str, body: bytes, *, content_type: bytes = b"text/plain", close: bool
) -> bytes:
    headers = [(b"Content-Type", content_type), (b"Content-Length", str(len(body)).encode())]
    if close:
        headers.append((b"Connection", b"close"))
    return encode_head((b"HTTP/1.1", str(status).encode(), reason.encode()), headers) + body
