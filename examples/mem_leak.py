"""A memory leak: a cache that only grows, from one allocation site.

    python examples/mem_leak.py

Expect a `mem` event (RSS % of HOLMES_MEM_LIMIT jumped) whose `heap.pb.gz`
names `remember` as the allocation site holding the most live bytes
(`holmespy top heap.pb.gz` or `go tool pprof -top heap.pb.gz`), and whose
`heap-holders.txt` says that `__main__.cache` (a list) holds some 50 MiB of
`bytes` (`holmespy show` prints it). `heap-types.txt` does not see them: bytes
objects are not tracked by the garbage collector.
"""

import os
import time

os.environ.setdefault("HOLMES_INTERVAL", "100ms")
os.environ.setdefault("HOLMES_MEM_LIMIT", "400MiB")
os.environ.setdefault("HOLMES_MEM", "min=10,diff=25,abs=80,cooldown=1m")
os.environ.setdefault("HOLMES_HEAP_SECONDS", "1")
os.environ.setdefault("HOLMES_CPU", "off")  # filling memory burns CPU too: keep this about memory
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()

cache: list[bytes] = []


def remember(kib: int) -> None:
    cache.append(os.urandom(1024) * kib)  # never evicted


while (
    holmespy.status().running and holmespy.status().ticks < 12
):  # warm-up at the baseline RSS: the rules need 10 samples
    time.sleep(0.05)
deadline = time.monotonic() + 3.5
while time.monotonic() < deadline:  # a steady leak: ~40 MiB/s
    remember(400)
    time.sleep(0.01)
time.sleep(0.5)
print("mem leak done:", holmespy.status().last_event)
