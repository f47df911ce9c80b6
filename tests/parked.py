"""Shared by the recorder and watchdog tests: real threads parked in known functions."""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable


class Parked:
    """A thread parked in `outer -> middle -> <innermost>` until the `with` block ends.

    Its frames are real, so the code under test walks them as it walks a
    host's; they do not change while it is parked, so a test can rely on them.
    """

    def __init__(self, name: str, innermost: Callable[[threading.Event], None] | None = None):
        self.release = threading.Event()
        self._ready = threading.Event()
        self._innermost = innermost or park_here
        self.thread = threading.Thread(target=self._outer, name=name, daemon=True)

    def _outer(self) -> None:
        self._middle()

    def _middle(self) -> None:
        self._ready.set()
        self._innermost(self.release)

    def __enter__(self) -> Parked:
        self.thread.start()
        self._ready.wait(5)
        # Until the thread is inside its innermost function's own wait, its stack still moves.
        code = self._innermost.__code__
        while not self._inside(code):
            time.sleep(0.001)
        return self

    def _inside(self, code: types.CodeType) -> bool:
        frame = self.frame()
        if frame.f_code is code:
            return False  # in the function itself, not yet in what it waits on
        while frame is not None:
            if frame.f_code is code:
                return True
            frame = frame.f_back
        return False

    @property
    def ident(self) -> int:
        assert self.thread.ident is not None
        return self.thread.ident

    def frame(self) -> types.FrameType:
        return sys._current_frames()[self.ident]

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.thread.join(5)


def park_here(release: threading.Event) -> None:
    release.wait(30)


def park_elsewhere(release: threading.Event) -> None:
    release.wait(30)


def names(frames: tuple[object, ...]) -> list[str]:
    """Function names of profile frames, innermost first, without their module."""
    return [str(getattr(f, "function", "")).rsplit(".", 1)[-1] for f in frames]
