"""An event loop blocked by CPU work inside a handler.

    python examples/blocked_loop.py

Expect a `cpu` event whose `tasks.txt` starts with `LOOP BLOCKED` and names
`render_report`, the synchronous function holding the loop, and a `loop`
event whose `loop.txt` names it too (see `loop_sleep.py` for a handler that
blocks the loop without using CPU, which only the loop rule sees).
"""

import asyncio
import os
import time

os.environ.setdefault("HOLMES_INTERVAL", "100ms")
os.environ.setdefault("HOLMES_CPU", "min=10,diff=25,abs=70,cooldown=1m")
os.environ.setdefault("HOLMES_CPU_PROFILE_SECONDS", "1.5")
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()


def render_report(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))  # CPU work that should have gone to a thread pool


async def handler() -> None:
    render_report(3.0)


async def main() -> None:
    idle = [asyncio.create_task(asyncio.sleep(3600), name=f"conn-{i}") for i in range(10)]
    while (
        holmespy.status().running and holmespy.status().ticks < 12
    ):  # quiet warm-up: the rules need 10 samples
        await asyncio.sleep(0.05)
    await asyncio.create_task(handler(), name="report-request")
    await asyncio.sleep(0.5)
    for task in idle:
        task.cancel()
    print("blocked loop done:", holmespy.status().last_event)


asyncio.run(main())
