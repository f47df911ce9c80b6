"""A thread leak: every request starts a thread that never ends.

    python examples/thread_leak.py

Expect a `thread` event: `threads.txt` lists ~40 threads named `leaked-N`,
all parked in `wait_for_reply` (the leak), next to the healthy main thread.
"""

import os
import threading
import time

# Example defaults so the program fires within seconds; the environment wins.
os.environ.setdefault("HOLMES_INTERVAL", "100ms")
os.environ.setdefault("HOLMES_THREAD", "min=10,diff=25,abs=70,cooldown=1m")
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()

never = threading.Event()


def wait_for_reply() -> None:
    never.wait()  # the reply never comes: the thread leaks


def handle_request(n: int) -> None:
    threading.Thread(target=wait_for_reply, name=f"leaked-{n}", daemon=True).start()


while (
    holmespy.status().running and holmespy.status().ticks < 12
):  # warm-up: the rule needs 10 samples of the steady state
    time.sleep(0.05)
for n in range(40):
    handle_request(n)
    time.sleep(0.01)
time.sleep(2)
print("thread leak done:", holmespy.status().last_event)
