"""Interned stacks: shared while held, forgotten with their frames when the last holder lets go."""

from __future__ import annotations

import gc
import sys
import weakref

from holmespy.stacktable import StackTable
from tests.parked import Parked, names, park_elsewhere


def test_the_same_stack_is_interned_once_and_counted_per_holder() -> None:
    table = StackTable()
    with Parked("worker") as worker:
        first = table.intern(worker.frame())
        second = table.intern(worker.frame())
    assert first is second
    assert first.refs == 2
    assert table.stack_count == 1
    # Innermost first, module-qualified like every other holmespy profile.
    assert first.frames[0].function == "threading.Condition.wait"
    seen = names(first.frames)
    assert seen.index("park_here") < seen.index("_middle") < seen.index("_outer")
    assert "tests.parked.park_here" in {f.function for f in first.frames}


def test_releasing_the_last_holder_forgets_the_stack_and_its_frames() -> None:
    table = StackTable()
    with Parked("a") as a, Parked("b", park_elsewhere) as b:
        stack_a = table.intern(a.frame())
        stack_b = table.intern(b.frame())
    shared_frames = table.frame_count
    table.release(stack_a)
    assert table.stack_count == 1
    # Frames both stacks pass through (threading's, Parked's) stay for b; a's own go.
    assert 0 < table.frame_count < shared_frames
    table.release(stack_b)
    assert (table.stack_count, table.frame_count) == (0, 0)
    # A holder that still has a forgotten stack can read it: stacks never change.
    assert any(f.function == "tests.parked.park_elsewhere" for f in stack_b.frames)


def test_a_stack_deeper_than_the_limit_ends_in_a_truncated_frame() -> None:
    table = StackTable(max_depth=3)
    with Parked("deep") as deep:
        stack = table.intern(deep.frame())
    assert len(stack.frames) == 4
    assert stack.frames[-1].function == "<truncated>"
    table.release(stack)
    assert (table.stack_count, table.frame_count) == (0, 0)


def test_an_interned_code_object_stays_alive_so_its_id_cannot_be_reused() -> None:
    # Stacks are keyed by id(code): the table keeps each code object it names alive
    # until the last stack through it is released, and no longer.
    table = StackTable()
    namespace: dict[str, object] = {"sys": sys}
    exec(compile("def generated():\n    return sys._getframe()\n", "<gen>", "exec"), namespace)
    frame = namespace["generated"]()  # type: ignore[operator]
    code = weakref.ref(frame.f_code)
    stack = table.intern(frame)
    del frame, namespace
    gc.collect()
    assert code() is not None
    table.release(stack)
    gc.collect()
    assert code() is None
