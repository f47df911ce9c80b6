"""A memory leak: a cache that only grows.

    python examples/mem_leak.py

Expect a `mem` event (RSS % of HOLMES_MEM_LIMIT jumped). Its bundle holds the
thread stacks today; the heap profile `heap.pb.gz` naming `remember` as the
allocation site joins it with the heap profiler.
"""

import os
import time

os.environ.setdefault("HOLMES_INTERVAL", "100ms")
os.environ.setdefault("HOLMES_MEM_LIMIT", "400MiB")
os.environ.setdefault("HOLMES_MEM", "min=10,diff=25,abs=80,cooldown=1m")
os.environ.setdefault("HOLMES_CPU", "off")  # filling memory burns CPU too: keep this about memory
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()

cache: list[bytes] = []


def remember(n: int) -> None:
    cache.append(os.urandom(1024) * n)  # never evicted


time.sleep(1.5)  # warm-up at the baseline RSS
for _ in range(100):
    remember(1024)  # 1 MiB a step, 100 MiB in all
    time.sleep(0.01)
time.sleep(1)
print("mem leak done:", holmespy.status().last_event)
