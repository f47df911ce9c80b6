"""What the test apps do wrong on request, shared by the WSGI, ASGI and aiohttp apps.

Each fault is a plain function with a name that must come back in the dump
holmespy writes: a CPU profile names `hot_spin`, a thread dump shows threads
named `leaked-N` parked in `leaked_thread_body`, a task dump shows tasks
parked in `parked_task`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import holmespy

_leaked_stop = threading.Event()
_parked: set[asyncio.Task[None]] = set()


def hot_spin(seconds: float) -> int:
    """Burn CPU in this very frame (no helper calls) for `seconds`."""
    deadline = time.monotonic() + seconds
    x = 0
    while time.monotonic() < deadline:
        for i in range(10_000):
            x += i * i
    return x & 1


def leaked_thread_body() -> None:
    _leaked_stop.wait()


def leak_threads(n: int) -> int:
    for i in range(n):
        name = f"leaked-{threading.active_count()}-{i}"
        threading.Thread(target=leaked_thread_body, name=name, daemon=True).start()
    return threading.active_count()


async def parked_task(forever: asyncio.Event) -> None:
    await forever.wait()


def park_tasks(n: int) -> dict[str, Any]:
    forever = asyncio.Event()
    for _ in range(n):
        task = asyncio.get_running_loop().create_task(parked_task(forever))
        _parked.add(task)
    return {"pid": os.getpid(), "tasks": len(_parked)}


def watcher() -> dict[str, Any]:
    """This worker's pid and what its watcher says (the tests wait for its ticks)."""
    status = holmespy.status()
    running = holmespy.current()
    return {
        "pid": os.getpid(),
        "running": status.running,
        "ticks": status.ticks,
        "events": status.events,
        "service": running.config.service if running is not None else None,
    }


def handle(path: str, query: dict[str, list[str]]) -> dict[str, Any]:
    """The routes every app shares (the blocking ones); returns the JSON reply."""
    number = float(query.get("n", ["0"])[0])
    reply: dict[str, Any] = {"pid": os.getpid(), "path": path}
    if path == "/spin":
        hot_spin(number)
    elif path == "/leak":
        reply["threads"] = leak_threads(int(number))
    elif path == "/holmespy":
        reply.update(watcher())
    return reply
