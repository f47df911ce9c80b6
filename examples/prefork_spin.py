"""A prefork server (gunicorn-style) whose forked workers start spinning.

    python examples/prefork_spin.py

The parent calls `holmespy.start()` once, then forks two workers; each worker
gets its own watcher (its own pid) and, when it starts burning CPU in
`worker_spin`, writes its own `cpu` event whose `cpu.pb.gz` names that function.
"""

import os
import time

os.environ.setdefault("HOLMES_INTERVAL", "100ms")
os.environ.setdefault("HOLMES_CPU", "min=10,diff=25,abs=70,cooldown=1m")
os.environ.setdefault("HOLMES_CPU_PROFILE_SECONDS", "1.5")
os.environ.setdefault("HOLMES_DUMP_PATH", "holmes-dumps")

import holmespy

holmespy.start()


def worker_spin(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        spins += sum(i * i for i in range(1000)) & 1
    return spins


def worker() -> None:
    while (
        holmespy.status().running and holmespy.status().ticks < 12
    ):  # idle worker: the child's own watcher warms up
        time.sleep(0.05)
    worker_spin(3.0)  # a bad request makes it spin
    time.sleep(0.2)
    # Wait for this worker's capture to finish before exiting.
    deadline = time.monotonic() + 15
    while holmespy.status().events == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"worker {os.getpid()} event:", holmespy.status().last_event, flush=True)


children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        worker()
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
print("prefork done: parent", os.getpid(), "workers", children)
