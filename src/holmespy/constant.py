"""Named string constants, compared by identity like enum members, without `enum`.

`import enum` costs ~3.7 ms of CPU here, a third of what `holmespy.start()`
may add to a process (`benchmarks/startup.py`); the watcher's verdicts and a
process's role need only a name that is its own value.
"""

from __future__ import annotations


class Constant(str):
    """A string that is one of a class's named constants (`Verdict.FIRE`).

    It compares equal to its text, and `is` to itself: each is made once, as
    a class attribute, as an enum member would be.
    """

    __slots__ = ()

    @property
    def value(self) -> str:
        """The text, as `enum` spells it."""
        return str(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self)!r}>"
