"""An asyncio task pile-up: requests keep coming while the upstream hangs.

    python examples/task_pileup.py

Expect a `task` event: `tasks.txt` shows one large group of pending tasks whose
await chain reads `handle_request -> call_upstream -> sleep`, with the count.
"""

import asyncio
import os

os.environ.setdefault("HOLMES_INTERVAL", "100ms")
os.environ.setdefault("HOLMES_TASK", "min=100,diff=20,abs=200000,cooldown=1m")
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()


async def call_upstream() -> None:
    await asyncio.sleep(3600)  # the upstream never answers


async def handle_request() -> None:
    await call_upstream()


async def main() -> None:
    steady = [asyncio.create_task(asyncio.sleep(3600), name=f"keepalive-{i}") for i in range(20)]
    while (
        holmespy.status().running and holmespy.status().ticks < 12
    ):  # warm-up at 20 tasks: the rules need 10 samples
        await asyncio.sleep(0.05)
    pile = []
    for i in range(500):
        pile.append(asyncio.create_task(handle_request(), name=f"request-{i}"))
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(2)
    for task in steady + pile:
        task.cancel()
    print("task pile-up done:", holmespy.status().last_event)


asyncio.run(main())
