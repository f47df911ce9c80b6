"""The holder walk on crafted object graphs: who is named, what is counted once, what is safe."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from holmespy.config import Config
from holmespy.profilers import CaptureContext, capture_heap_holders
from holmespy.profilers.holders import (
    CLASS_ATTRIBUTE,
    GC_ONLY,
    MODULE_GLOBAL,
    OTHERS,
    THREAD_STACK,
    HeapHolders,
    Holder,
    holders_file,
    holders_snapshot,
    plan_memory,
    render,
)

pytestmark = pytest.mark.timeout(120)

MakeModule = Callable[..., types.ModuleType]


@pytest.fixture
def make_module() -> Iterator[MakeModule]:
    """Modules registered in sys.modules for one test, with the given globals."""
    made: list[str] = []

    def make(name: str, **globals_: Any) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__dict__.update(globals_)
        sys.modules[name] = module
        made.append(name)
        return module

    yield make
    for name in made:
        sys.modules.pop(name, None)


def snapshot(**options: Any) -> HeapHolders:
    result = holders_snapshot(small_holder=0, **options)
    assert result.error is None, result.error
    assert result.partial is None, result.partial
    return result


def holder(result: HeapHolders, label: str) -> Holder:
    found = [h for h in result.holders if h.label == label]
    assert found, f"{label} not among {[h.label for h in result.holders[:30]]}"
    return found[0]


def held(h: Holder, type_name: str) -> tuple[int, int]:
    for t in h.types:
        if t.name == type_name:
            return t.objects, t.bytes
    raise AssertionError(f"{h.label} holds no {type_name}: {h.types}")


class Session:
    def __init__(self, n: int) -> None:
        self.n = n


def test_a_module_global_dict_is_named_with_what_it_holds(make_module: MakeModule) -> None:
    sessions = {n: Session(n) for n in range(2000)}
    make_module("holmes_app.sessions", REGISTRY=sessions)

    result = snapshot()

    registry = holder(result, "holmes_app.sessions.REGISTRY")
    assert registry.kind == MODULE_GLOBAL
    assert registry.type == "dict"
    objects, size = held(registry, f"{__name__}.Session")
    assert objects == 2000
    assert size == sum(sys.getsizeof(s) for s in sessions.values())


def test_a_class_attribute_list_is_named_module_class_attr(make_module: MakeModule) -> None:
    cache_class = type("Cache", (), {"items": [Session(n) for n in range(300)]})
    cache_class.__module__ = "holmes_app.cache"
    make_module("holmes_app.cache", Cache=cache_class)

    result = snapshot()

    items = holder(result, "holmes_app.cache.Cache.items")
    assert items.kind == CLASS_ATTRIBUTE
    assert items.type == "list"
    assert held(items, f"{__name__}.Session")[0] == 300


def test_a_running_threads_local_is_named_by_thread_function_and_variable() -> None:
    ready, done = threading.Event(), threading.Event()

    def keep_batch() -> None:
        batch = [Session(n) for n in range(500)]
        ready.set()
        done.wait(60)
        del batch

    thread = threading.Thread(target=keep_batch, name="batcher")
    thread.start()
    try:
        assert ready.wait(30)
        result = snapshot()
    finally:
        done.set()
        thread.join()

    label = f"thread \"batcher\" {__name__}.{keep_batch.__qualname__} local 'batch'"
    batch = holder(result, label)
    assert batch.kind == THREAD_STACK
    assert held(batch, f"{__name__}.Session")[0] == 500


def test_excluded_threads_are_not_roots() -> None:
    ready, done = threading.Event(), threading.Event()

    def keep() -> None:
        mine = [Session(n) for n in range(50)]
        ready.set()
        done.wait(60)
        del mine

    thread = threading.Thread(target=keep, name="holmespy-like")
    thread.start()
    try:
        assert ready.wait(30)
        assert thread.ident is not None
        result = snapshot(exclude_threads={thread.ident})
    finally:
        done.set()
        thread.join()
    assert not [h for h in result.holders if "holmespy-like" in h.label]


def test_cycles_are_counted_once(make_module: MakeModule) -> None:
    class Node:
        def __init__(self) -> None:
            self.next: Node | None = None

    ring = [Node() for _ in range(1000)]
    for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
        a.next = b
    make_module("holmes_app.ring", HEAD=ring[0])
    del ring, a, b  # locals of this running frame would be roots too

    result = snapshot()

    node = f"{__name__}.{Node.__qualname__}"
    assert held(holder(result, "holmes_app.ring.HEAD"), node)[0] == 1000
    assert [t.objects for t in result.types if t.name == node] == [1000]


def test_a_shared_object_counts_once_under_the_nearest_root(make_module: MakeModule) -> None:
    shared = bytearray(100_000)
    # The far root's module is registered first: order alone would give it the bytearray.
    make_module("holmes_app.far", DEEP=[[[[shared]]]])
    make_module("holmes_app.near", NEAR={"buffer": shared})
    size = sys.getsizeof(shared)
    del shared  # a local of this running frame would be the nearest root of all

    result = snapshot()

    assert held(holder(result, "holmes_app.near.NEAR"), "bytearray") == (1, size)
    deep = holder(result, "holmes_app.far.DEEP")
    assert "bytearray" not in {t.name for t in deep.types}
    assert sum(t.objects for t in result.types if t.name == "bytearray") >= 1


def test_a_second_name_for_the_same_object_is_an_alias(make_module: MakeModule) -> None:
    registry = {n: Session(n) for n in range(10)}
    make_module("holmes_app.registry", REGISTRY=registry)
    make_module("holmes_app.api", REGISTRY=registry)
    del registry  # else this frame's local would be a third name

    result = snapshot()

    named = [h for h in result.holders if h.label.endswith(".REGISTRY")]
    assert len(named) == 1
    assert named[0].label in ("holmes_app.registry.REGISTRY", "holmes_app.api.REGISTRY")
    assert len(named[0].aliases) == 1
    assert named[0].aliases[0] != named[0].label


def test_untracked_dicts_strings_and_bytes_count_through_their_container(
    make_module: MakeModule,
) -> None:
    rows = [
        {"id": n, "name": f"user-{n}", "blob": b"x" * 100 + bytes([n % 256])} for n in range(3000)
    ]
    # Up to 3.13 the collector does not track such dicts: the census cannot see them.
    assert sys.version_info >= (3, 14) or not gc.is_tracked(rows[0])
    make_module("holmes_app.rows", ROWS=rows)

    result = snapshot()

    table = holder(result, "holmes_app.rows.ROWS")
    assert held(table, "dict")[0] == 3000
    assert held(table, "str")[0] == 3000
    assert held(table, "bytes")[0] == 3000


def test_a_few_large_bytearrays_rank_by_bytes_not_by_count(make_module: MakeModule) -> None:
    make_module("holmes_app.buffers", BUFFERS=[bytearray(20_000_000) for _ in range(3)])

    result = snapshot()

    buffers = holder(result, "holmes_app.buffers.BUFFERS")
    assert held(buffers, "bytearray") == (3, 3 * sys.getsizeof(bytearray(20_000_000)))
    named = [h for h in result.holders if h.kind == MODULE_GLOBAL]
    # Four objects outrank every holder of fewer bytes, however many objects those hold.
    assert named.index(buffers) < min(
        (named.index(h) for h in named if h.objects > 1000 and h.bytes < buffers.bytes),
        default=len(named),
    )
    assert "holmes_app.buffers.BUFFERS (a list" in render(result)


def test_objects_only_the_gc_lists_reach_are_grouped_by_their_root_type() -> None:
    class Orphan:
        pass

    # Held by a reference no traverse function reports (as C code would): gc lists only.
    kept = [Orphan() for _ in range(200)]
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(kept))
    address = id(kept)
    del kept
    gc.collect()  # into the oldest generation, where the gc-only pass looks
    try:
        result = snapshot()
    finally:
        ctypes.pythonapi.Py_DecRef(ctypes.c_void_p(address))

    orphans = holder(result, "<gc only> list")
    assert orphans.kind == GC_ONLY
    assert held(orphans, f"{__name__}.{Orphan.__qualname__}")[0] == 200


def test_a_python_level_sizeof_is_never_called(make_module: MakeModule) -> None:
    calls: list[object] = []

    class Sneaky:
        def __sizeof__(self) -> int:
            calls.append(self)  # host code on holmespy's thread: must not run
            raise RuntimeError("host code ran")

    make_module("holmes_app.sneaky", SNEAKY=[Sneaky() for _ in range(5)])

    result = snapshot()

    assert calls == []
    objects, size = held(
        holder(result, "holmes_app.sneaky.SNEAKY"), f"{__name__}.{Sneaky.__qualname__}"
    )
    assert objects == 5
    assert size > 0


def test_module_getattr_and_metaclass_properties_are_not_run(make_module: MakeModule) -> None:
    ran: list[str] = []

    class Meta(type):
        def __getattribute__(cls, name: str) -> Any:
            ran.append(name)  # any attribute read through the class runs this
            return super().__getattribute__(name)

    class Weird(metaclass=Meta):
        pass

    def module_getattr(name: str) -> object:
        ran.append(name)
        raise AttributeError(name)

    make_module("holmes_app.lazy", __getattr__=module_getattr, WEIRD=[Weird() for _ in range(3)])

    ran.clear()  # class creation itself reads attributes
    result = snapshot()

    assert ran == []
    assert holder(result, "holmes_app.lazy.WEIRD").types


def test_a_heap_changing_during_the_walk_never_raises(make_module: MakeModule) -> None:
    churn: dict[int, list[int]] = {}
    make_module("holmes_app.churn", CHURN=churn)
    stop = threading.Event()

    def mutate() -> None:
        n = 0
        while not stop.is_set():
            churn[n] = [n]
            churn.pop(n - 500, None)
            n += 1

    thread = threading.Thread(target=mutate)
    thread.start()
    try:
        results = [holders_snapshot() for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    assert [r.error for r in results] == [None, None, None]


def test_what_a_leak_adds_while_the_walk_runs_keeps_its_holder(make_module: MakeModule) -> None:
    class Leaf:
        pass

    registry: dict[int, list[Leaf]] = {n: [Leaf()] for n in range(1000)}
    make_module("holmes_app.growing", REGISTRY=registry)
    added = 0

    def between_walk_and_gc_pass() -> bool:
        frame = sys._getframe()
        while frame is not None and frame.f_code.co_name != "_walk_own":
            frame = frame.f_back  # type: ignore[assignment]
        return frame is not None

    def clock_that_leaks() -> float:
        # The walk reads its clock between its steps. Once the roots are walked (while the
        # walk marks its own state), the host adds to the registry, and a full collection
        # makes what it added old: where the gc-only pass looks.
        nonlocal added
        if added == 0 and between_walk_and_gc_pass():
            for n in range(100):
                registry[10_000 + n] = [Leaf() for _ in range(10)]
            added = 100
            gc.collect()
        return time.perf_counter()

    result = snapshot(clock=clock_that_leaks)

    assert added == 100
    leaf = f"{__name__}.{Leaf.__qualname__}"
    assert held(holder(result, "holmes_app.growing.REGISTRY"), leaf)[0] == 2000
    gc_only = [h for h in result.holders if h.kind == GC_ONLY]
    assert not [h for h in gc_only if leaf in {t.name for t in h.types}]


def test_what_a_list_leak_appends_while_the_walk_runs_keeps_its_holder(
    make_module: MakeModule,
) -> None:
    class Leaf:
        pass

    registry: list[list[Leaf]] = [[Leaf()] for _ in range(20_000)]  # read by slices
    make_module("holmes_app.appending", REGISTRY=registry)
    added = 0

    def between_walk_and_gc_pass() -> bool:
        frame = sys._getframe()
        while frame is not None and frame.f_code.co_name != "_walk_own":
            frame = frame.f_back  # type: ignore[assignment]
        return frame is not None

    def clock_that_leaks() -> float:
        # The walk reads its clock between its steps. Once the roots are walked (while the
        # walk marks its own state), the host adds to the registry, and a full collection
        # makes what it added old: where the gc-only pass looks.
        nonlocal added
        if added == 0 and between_walk_and_gc_pass():
            for _ in range(100):
                registry.append([Leaf() for _ in range(10)])
            added = 100
            gc.collect()
        return time.perf_counter()

    result = snapshot(clock=clock_that_leaks)

    assert added == 100
    leaf = f"{__name__}.{Leaf.__qualname__}"
    assert held(holder(result, "holmes_app.appending.REGISTRY"), leaf)[0] == 21_000
    gc_only = [h for h in result.holders if h.kind == GC_ONLY]
    assert not [h for h in gc_only if leaf in {t.name for t in h.types}]


def test_growth_against_the_previous_snapshot(make_module: MakeModule) -> None:
    registry: dict[int, Session] = {n: Session(n) for n in range(100)}
    make_module("holmes_app.grow", REGISTRY=registry)
    baseline = snapshot().baseline()
    registry.update({n: Session(n) for n in range(100, 5100)})

    second = snapshot(previous=baseline)

    session = f"{__name__}.Session"
    change = second.type_growth(session)
    assert change is not None
    assert change[0] >= 1000
    growth = second.holder_growth(holder(second, "holmes_app.grow.REGISTRY"))
    assert growth is not None
    assert growth[0] >= 1000
    assert not growth[2]
    assert session in second.shares
    assert second.shares[session][0].holder == "holmes_app.grow.REGISTRY"


def test_the_json_of_a_snapshot_with_growth_renders_the_same_text(
    make_module: MakeModule,
) -> None:
    registry: dict[int, Session] = {n: Session(n) for n in range(100)}
    make_module("holmes_app.again", REGISTRY=registry)
    baseline = snapshot().baseline()
    registry.update({n: Session(n) for n in range(100, 2100)})
    second = snapshot(previous=baseline)

    read_back = HeapHolders.from_json(json.loads(json.dumps(second.to_json())))

    # heap-holders.json keeps what heap-holders.txt shows, growth included: no baseline needed.
    assert render(read_back) == render(second)
    assert (
        holder(read_back, "holmes_app.again.REGISTRY").growth
        == holder(second, "holmes_app.again.REGISTRY").growth
    )


def test_the_capture_writes_the_text_and_its_json(tmp_path: Path) -> None:
    ctx = CaptureContext(directory=tmp_path, rule="mem", config=Config(mem_limit=64 << 30))

    facts = capture_heap_holders(ctx)

    assert (facts["file"], facts["data"]) == ("heap-holders.txt", "heap-holders.json")
    found = HeapHolders.from_json(json.loads((tmp_path / "heap-holders.json").read_bytes()))
    assert render(found) == (tmp_path / "heap-holders.txt").read_text()
    assert ctx.memory["holders"].time == found.time  # the baseline for the next event is kept


def render_in_a_fresh_interpreter(program: str) -> str:
    """Run `program`, then print `render(holders_snapshot())`, in a new Python.

    These tests check the text's form on a heap the test controls: inside a
    long test session (boto3, servers, earlier tests' leftovers) the small
    holders they make can rank anywhere, or be reached first from elsewhere.
    """
    src = Path(__file__).resolve().parent.parent / "src"
    code = (
        textwrap.dedent(program)
        + "\nfrom holmespy.profilers.holders import holders_snapshot, render\n"
        + "TEXT = render(holders_snapshot())\n"
        + "after_snapshot()\n"
        + "sys.stdout.write(TEXT)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_text_names_the_holder_the_type_and_the_bytes() -> None:
    text = render_in_a_fresh_interpreter(
        """
        import sys, types
        class Session:
            def __init__(self, n):
                self.n = n
        module = types.ModuleType("holmes_app.text")
        module.REGISTRY = {n: Session(n) for n in range(5000)}
        sys.modules["holmes_app.text"] = module
        def after_snapshot():
            pass
        """
    )

    assert text.startswith("holmespy heap holders: pid ")
    line = next(x for x in text.splitlines() if "holmes_app.text.REGISTRY (a dict" in x)
    assert "5,000 __main__.Session" in line
    assert "[1] " in text
    assert "holds " in text


def test_small_holders_are_summed_per_kind(make_module: MakeModule) -> None:
    make_module("holmes_app.tiny", A=[1], B=[2])

    result = holders_snapshot(small_holder=1 << 20)

    assert not [h for h in result.holders if h.label.startswith("holmes_app.tiny.")]
    others = [h for h in result.holders if h.kind == OTHERS]
    assert any(h.label.startswith("(other module globals") and h.roots > 2 for h in others)


def test_a_hostile_thread_name_stays_on_one_escaped_line() -> None:
    text = render_in_a_fresh_interpreter(
        """
        import sys, threading
        ready, done = threading.Event(), threading.Event()
        def hold():
            payload = [bytearray(70_000)]
            ready.set()
            done.wait(60)
            del payload
        thread = threading.Thread(target=hold, name='evil\\n[1] fake.HOLDER\\x1b]0;title\\x07"')
        thread.start()
        assert ready.wait(30)
        def after_snapshot():
            done.set()
            thread.join()
        """
    )
    assert "\x1b" not in text
    assert "\x07" not in text
    assert not [line for line in text.splitlines() if line.startswith("[1] fake.HOLDER")]
    assert "evil\\n[1] fake.HOLDER\\x1b]0;title\\x07'" in text


def test_out_of_time_gives_a_partial_result_not_an_exception() -> None:
    ticks = iter(range(10**9))

    result = holders_snapshot(max_seconds=5, clock=lambda: float(next(ticks)))

    assert result.error is None
    assert result.partial is not None
    assert "stopped after 5 s" in result.partial


def test_too_little_memory_headroom_means_no_walk() -> None:
    plan = plan_memory(rss=900 << 20, limit=1000 << 20)
    assert not plan.walk
    assert "not walked" in plan.why

    snapshot, facts, baseline = holders_file(None, 1000 << 20, rss=lambda: 900 << 20)

    assert baseline is None
    assert "not walked" in facts["error"]
    assert "!! failed: not walked" in render(snapshot)
    assert facts["memory"]["limit_bytes"] == 1000 << 20


def test_enough_headroom_walks_and_says_why_in_process() -> None:
    plan = plan_memory(rss=200 << 20, limit=4 << 30)
    assert plan.walk
    assert "forked child would copy" in plan.why
    assert plan_memory(rss=200 << 20, limit=None).walk
