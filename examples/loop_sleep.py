"""A handler that blocks its event loop with a synchronous call: no CPU, only the loop rule sees it.

    python examples/loop_sleep.py

`lookup_customer` stands for a blocking database driver or `requests`
called inside `async def`: while it sleeps, the loop answers nobody, yet the
process uses almost no CPU, so the cpu, mem, thread and task rules stay
quiet. Expect a `loop` event whose `loop.txt` shows the stall (about 1.5 s)
with `lookup_customer` and `handle_request` on the stack seen most, the
`time.sleep` line under them, and `loop.pb.gz` with the same samples.
"""

import asyncio
import os
import time

os.environ.setdefault("HOLMES_INTERVAL", "200ms")
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()

STALL_SECONDS = 1.5


def lookup_customer(customer_id: int) -> dict[str, object]:
    time.sleep(STALL_SECONDS)  # a synchronous driver call: should be run_in_executor
    return {"id": customer_id, "name": "Ada"}


async def handle_request(customer_id: int) -> dict[str, object]:
    return lookup_customer(customer_id)


async def main() -> None:
    idle = [asyncio.create_task(asyncio.sleep(3600), name=f"conn-{i}") for i in range(10)]
    while holmespy.status().running and holmespy.status().ticks < 12:  # the rules' warm-up
        await asyncio.sleep(0.05)
    cpu_before = time.process_time()
    await asyncio.create_task(handle_request(42), name="GET /customers/42")
    cpu_used = time.process_time() - cpu_before
    deadline = time.monotonic() + 20
    while holmespy.status().events == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the capture lets the stall end, then writes the bundle
    for task in idle:
        task.cancel()
    print(f"loop stalled {STALL_SECONDS} s using {cpu_used * 1000:.1f} ms of CPU")
    print("loop sleep done:", holmespy.status().last_event)


asyncio.run(main())
