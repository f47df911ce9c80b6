"""Live objects that survive every full GC: the heap after GC keeps rising.

    python examples/gcheap_growth.py

Expect a `gcheap` event: memory measured right after a generation-2 GC rose
more than `diff` % over its recent average (garbage would have been freed; what
is left is live). The bundle holds two heap profiles taken one after the other,
`heap.pb.gz` and `heap-2.pb.gz`, both naming `open_session` as the allocation
site, `heap-types.txt` with `dict` growing, and `heap-holders.txt` naming
`__main__.sessions` as the dict that holds them.
"""

import gc
import os
import time

os.environ.setdefault("HOLMES_INTERVAL", "100ms")
os.environ.setdefault("HOLMES_MEM_LIMIT", "400MiB")
os.environ.setdefault("HOLMES_GCHEAP", "min=10,diff=20,abs=40,cooldown=1m")
os.environ.setdefault("HOLMES_HEAP_SECONDS", "0.5")
os.environ.setdefault("HOLMES_CPU", "off")  # filling memory burns CPU too: keep this about memory
os.environ.setdefault("HOLMES_MEM", "off")
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()

sessions: dict[int, list[object]] = {}


def open_session(n: int) -> None:
    sessions[n] = [{"id": i, "user": f"user-{n}-{i}"} for i in range(2_000)]


for _ in range(12):  # warm-up: ten full GCs at a steady heap
    gc.collect()
    time.sleep(0.02)
deadline = time.monotonic() + 3
n = 0
while time.monotonic() < deadline:  # sessions are opened and never closed
    open_session(n)
    n += 1
    if n % 10 == 0:
        gc.collect()
    time.sleep(0.005)
deadline = time.monotonic() + 30  # the two heap windows and the census, however slow the machine
while holmespy.status().events == 0 and time.monotonic() < deadline:
    time.sleep(0.1)
print("gc heap growth done:", holmespy.status().last_event)
