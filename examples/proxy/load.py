"""A steady, paced load for the proxy: keep-alive GETs at a fixed rate (wrk only goes flat out).

    python examples/proxy/load.py http://127.0.0.1:8080/ --rate 200 --duration 60

A fault shows as a *change* of CPU, memory, threads or tasks against the last
ten samples, so the walk-through needs traffic that stays the same before and
after the fault is switched on. Prints one JSON summary line at the end (or on
SIGTERM / Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import time
from urllib.parse import urlsplit

from http11 import BadMessage, body_chunks, encode_head, read_head


class Stats:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.latencies: list[float] = []

    def summary(self, seconds: float) -> dict[str, float]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3) if lat else 0.0

        return {
            "ok": self.ok,
            "failed": self.failed,
            "seconds": round(seconds, 3),
            "rate": round(self.ok / seconds, 1) if seconds else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(lat) * 1000, 3) if lat else 0.0,
        }


async def connection(url: str, period: float, offset: float, end: float, stats: Stats) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = encode_head(
        (b"GET", target.encode(), b"HTTP/1.1"), [(b"Host", f"{host}:{port}".encode())]
    )
    next_at = time.monotonic() + offset
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if next_at > now:
            await asyncio.sleep(next_at - now)
        # Late (a slow answer): send now, but do not burst to catch up.
        next_at = max(next_at + period, time.monotonic())
        started = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            reader, writer = conn
            writer.write(request)
            head = await read_head(reader)
            if head is None:
                raise ConnectionError("server closed the connection")
            async for _ in body_chunks(reader, head):
                pass
            if head.wants_close():
                writer.close()
                conn = None
            if head.first[1] == b"200":
                stats.ok += 1
                stats.latencies.append(time.perf_counter() - started)
            else:
                stats.failed += 1
        except (OSError, BadMessage, asyncio.IncompleteReadError):
            stats.failed += 1
            if conn is not None:
                conn[1].close()
            conn = None
            await asyncio.sleep(0.05)
    if conn is not None:
        conn[1].close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second in all")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    stats = Stats()
    started = time.monotonic()
    end = started + args.duration
    period = args.connections / args.rate
    workers = [
        asyncio.create_task(connection(args.url, period, i * period / args.connections, end, stats))
        for i in range(args.connections)
    ]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: [w.cancel() for w in workers])
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*workers)
    print(json.dumps(stats.summary(time.monotonic() - started)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
