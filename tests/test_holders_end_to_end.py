"""Real leaking programs: the mem bundle's heap-holders.json (and .txt) name what holds the leak."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from holmespy.heapholders import HeapHolders, Holder
from tests.conftest import EXAMPLES, Bundle, RunProgram

pytestmark = pytest.mark.timeout(180)

MEM_ENV = {
    "HOLMES_INTERVAL": "100ms",
    "HOLMES_MEM_LIMIT": "600MiB",
    "HOLMES_MEM": "min=10,diff=25,abs=90,cooldown=1m",
    "HOLMES_HEAP_SECONDS": "0.2",
    "HOLMES_CPU": "off",
    "HOLMES_THREAD": "off",
    "HOLMES_GCHEAP": "off",
}

PROGRAM = """
import threading, time
import holmespy

holmespy.start()
while holmespy.status().ticks < 12:  # the rules need a steady baseline first
    time.sleep(0.05)

{leak}

deadline = time.monotonic() + 60
while holmespy.status().events < 1 and time.monotonic() < deadline:
    time.sleep(0.05)
{release}
print("events", holmespy.status().events, holmespy.status().last_event)
"""

SESSIONS = """
class Session:
    def __init__(self, n):
        self.n = n
        self.token = "t" * 900 + str(n)

REGISTRY = {}
"""


def leaking_program(leak: str, release: str = "") -> str:
    return PROGRAM.format(leak=leak, release=release)


def mem_bundle(run_program: RunProgram, program: str) -> Bundle:
    run = run_program(program, timeout=150, **MEM_ENV)
    bundles = run.bundles("mem")
    assert bundles, f"no mem event:\n{run.proc.stdout}\n{run.proc.stderr}"
    facts = bundles[0].event["captures"]["heap-holders"]
    assert "error" not in facts, facts
    return bundles[0]


def snapshot(bundle: Bundle) -> HeapHolders:
    return HeapHolders.from_json(json.loads(bundle.text("heap-holders.json")))


def holder(bundle: Bundle, label: str) -> Holder:
    rows = [h for h in snapshot(bundle).holders if h.label == label]
    assert rows, f"{label} not named:\n{bundle.text('heap-holders.txt')[:4000]}"
    return rows[0]


def held(row: Holder, type_name: str) -> tuple[int, int]:
    for t in row.types:
        if t.name == type_name:
            return t.objects, t.bytes
    raise AssertionError(f"{row.label} holds no {type_name}: {row.types}")


def test_a_leak_in_a_module_global_dict_is_named_with_its_type_and_bytes(
    run_program: RunProgram, tmp_path: Path
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "sessions.py").write_text(SESSIONS)
    leak = """
from app import sessions
for n in range(150_000):
    sessions.REGISTRY[n] = sessions.Session(n)
    if n % 10_000 == 0:
        time.sleep(0.05)
"""
    bundle = mem_bundle(run_program, leaking_program(leak))

    registry = holder(bundle, "app.sessions.REGISTRY")
    assert registry.about == "dict, module global"
    objects, size = held(registry, "app.sessions.Session")
    assert objects >= 50_000  # the rule fires while the leak is still under way
    assert size >= 50_000 * 48
    text = bundle.text("heap-holders.txt")
    assert "app.sessions.REGISTRY (a dict, module global) holds" in text


def test_a_leak_in_a_class_attribute_list_is_named_module_class_attribute(
    run_program: RunProgram,
) -> None:
    leak = """
class Cache:
    entries = []

for n in range(120_000):
    Cache.entries.append({"key": n, "value": "v" * 1000 + str(n)})
    if n % 10_000 == 0:
        time.sleep(0.05)
"""
    bundle = mem_bundle(run_program, leaking_program(leak))

    entries = holder(bundle, "__main__.Cache.entries")
    assert entries.about == "list, class attribute"
    objects, _ = held(entries, "dict")
    assert objects >= 40_000
    assert held(entries, "str")[1] >= 40_000 * 1000


def test_a_leak_in_a_running_threads_local_is_named_by_thread_and_variable(
    run_program: RunProgram,
) -> None:
    leak = """
done = threading.Event()

def collect_batch():
    batch = []
    for n in range(120_000):
        batch.append(("row", n, "r" * 1000 + str(n)))
        if n % 10_000 == 0:
            time.sleep(0.05)
    done.wait(120)

worker = threading.Thread(target=collect_batch, name="batcher")
worker.start()
"""
    bundle = mem_bundle(run_program, leaking_program(leak, "done.set(); worker.join()"))

    batch = holder(bundle, "thread \"batcher\" __main__.collect_batch local 'batch'")
    assert batch.about == "list, thread stack"
    assert held(batch, "tuple")[0] >= 40_000
    assert held(batch, "str")[1] >= 40_000 * 1000


def test_a_few_large_bytearrays_are_named_and_rank_first_by_bytes(
    run_program: RunProgram,
) -> None:
    leak = """
BUFFERS = []
for _ in range(12):
    BUFFERS.append(bytearray(10 * 1024 * 1024))
    time.sleep(0.1)
"""
    bundle = mem_bundle(run_program, leaking_program(leak))

    buffers = holder(bundle, "__main__.BUFFERS")
    objects, size = held(buffers, "bytearray")
    assert objects >= 3
    assert size >= objects * 10 * 1024 * 1024
    assert snapshot(bundle).holders[0].label == "__main__.BUFFERS"
    # The census sizes untracked buffers through the objects holding them, but
    # only the holders file says who holds them.
    assert "bytearray (>= 512 B, held by tracked objects)" in bundle.text("heap-types.txt")


def test_the_mem_leak_example_names_its_cache(run_program: RunProgram) -> None:
    run = run_program(EXAMPLES / "mem_leak.py", timeout=150)
    bundle = run.bundles("mem")[0]
    cache = holder(bundle, "__main__.cache")
    assert held(cache, "bytes")[1] > 10 * 1024 * 1024
    event = bundle.event
    assert event["captures"]["heap-holders"]["method"] == "in-process walk in short steps"
    assert {"heap-holders.txt", "heap-holders.json"} <= {f["name"] for f in event["files"]}
    assert event["captures"]["heap-holders"]["data"] == "heap-holders.json"
