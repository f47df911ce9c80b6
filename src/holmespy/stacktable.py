"""Interned stacks with reference counts: what the always-on samplers keep between events.

The flight recorder and the loop watchdog sample stacks for as long as the
process lives, and see the same few hundred stacks again and again. Each
distinct stack is kept once, as a `Stack` of interned `Frame`s, keyed by the
code objects and line numbers it passes through. Every holder of a sample
(a tick in the recorder's ring, a stall record) counts as a reference; when
the last one lets go, the stack is forgotten, and so are the frames and code
objects only it used. Memory therefore follows what the holders keep (the
recorder's window), not how long the process has run.

Code objects are keyed by `id()`, which is cheap to hash; an interned frame
keeps its code object alive, so an id cannot be reused by another code
object while anything still refers to it.

One thread mutates a table (the sampling thread); other threads may read
the `frames` of a `Stack` they were handed at any time: a Stack never
changes once built.
"""

from __future__ import annotations

import types

from holmespy.formats.profile import Frame
from holmespy.naming import ModuleNames

__all__ = ["MAX_DEPTH", "Stack", "StackTable"]

MAX_DEPTH = 256
"""Frames kept per stack, innermost first; deeper stacks end in a `<truncated>` frame."""

_TRUNCATED = Frame("<truncated>", "", 0)


class Stack:
    """One interned stack: its frames (innermost first) and how many holders it has."""

    __slots__ = ("frames", "key", "refs")

    def __init__(self, key: tuple[int, ...], frames: tuple[Frame, ...]) -> None:
        self.key = key
        self.frames = frames
        self.refs = 0

    def __repr__(self) -> str:
        top = self.frames[0].function if self.frames else "-"
        return f"<Stack {top} +{len(self.frames) - 1} refs={self.refs}>"


class _FrameEntry:
    __slots__ = ("code", "frame", "refs")

    def __init__(self, code: types.CodeType, frame: Frame) -> None:
        self.code = code  # keeps id(code) from being reused while the entry exists
        self.frame = frame
        self.refs = 0


class StackTable:
    """Stacks and frames interned with reference counts."""

    def __init__(self, names: ModuleNames | None = None, max_depth: int = MAX_DEPTH) -> None:
        self.names = names if names is not None else ModuleNames()
        self.max_depth = max_depth
        self._stacks: dict[tuple[int, ...], Stack] = {}
        self._frames: dict[tuple[int, int], _FrameEntry] = {}

    @property
    def stack_count(self) -> int:
        return len(self._stacks)

    @property
    def frame_count(self) -> int:
        return len(self._frames)

    def intern(self, frame: types.FrameType | None) -> Stack:
        """The stack ending at `frame` (innermost), with one more reference taken."""
        key: list[int] = []
        walked: list[types.FrameType] = []
        depth = self.max_depth
        while frame is not None:
            if depth == 0:
                key.append(0)
                key.append(-1)
                break
            depth -= 1
            key.append(id(frame.f_code))
            key.append(frame.f_lineno or 0)
            walked.append(frame)
            frame = frame.f_back
        k = tuple(key)
        stack = self._stacks.get(k)
        if stack is None:
            stack = self._stacks[k] = self._build(k, walked)
        stack.refs += 1
        return stack

    def acquire(self, stack: Stack) -> None:
        """One more reference to a stack a holder already has (it must still be interned)."""
        stack.refs += 1

    def release(self, stack: Stack) -> None:
        """Drop one reference; the last one forgets the stack and the frames only it used."""
        stack.refs -= 1
        if stack.refs > 0 or self._stacks.get(stack.key) is not stack:
            return
        del self._stacks[stack.key]
        key = stack.key
        frames = self._frames
        for i in range(0, len(key), 2):
            fkey = (key[i], key[i + 1])
            entry = frames.get(fkey)
            if entry is None:
                continue  # the <truncated> marker is not an entry
            entry.refs -= 1
            if entry.refs <= 0:
                del frames[fkey]

    def _build(self, key: tuple[int, ...], walked: list[types.FrameType]) -> Stack:
        frames: list[Frame] = []
        for i, live in enumerate(walked):
            fkey = (key[2 * i], key[2 * i + 1])
            entry = self._frames.get(fkey)
            if entry is None:
                code = live.f_code
                name = self.names.of_frame(live, code)
                built = Frame(name, code.co_filename, fkey[1], code.co_firstlineno)
                entry = self._frames[fkey] = _FrameEntry(code, built)
            entry.refs += 1
            frames.append(entry.frame)
        if len(key) > 2 * len(walked):
            frames.append(_TRUNCATED)
        return Stack(key, tuple(frames))
