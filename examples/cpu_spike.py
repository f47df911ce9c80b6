"""A CPU spike: a pure-Python hot loop starts after a quiet period.

    python examples/cpu_spike.py

Expect a `cpu` event whose `threads.txt` shows the main thread inside
`checksum` (the CPU profile `cpu.pb.gz` joins the bundle with the profilers).
"""

import os
import time

os.environ.setdefault("HOLMES_INTERVAL", "100ms")
os.environ.setdefault("HOLMES_CPU", "min=10,diff=25,abs=70,cooldown=1m")
os.environ.setdefault("HOLMES_CPU_PROFILE_SECONDS", "1.5")
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()


def checksum(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total * 31 + i) % 1_000_003
    return total


while (
    holmespy.status().running and holmespy.status().ticks < 12
):  # quiet warm-up (CPU near 0 %): the rules need 10 samples
    time.sleep(0.05)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    checksum(100_000)
print("cpu spike done:", holmespy.status().last_event)
