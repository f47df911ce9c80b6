"""Named string constants, compared by identity like enum members, without `enum`.

`import enum` costs ~3.7 ms of CPU here, a third of what `holmespy.start()`
may add to a process (`benchmarks/startup.py`); the watcher's verdicts and a
process's role need only a name that is its own value.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


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

    def __reduce__(self) -> tuple[Callable[[type[Constant], str], Constant], tuple[type, str]]:
        # Copied or unpickled, a constant is the same object again, as an enum member is.
        return (_named, (type(self), str(self)))


def _named(cls: type[Constant], text: str) -> Constant:
    for value in vars(cls).values():
        if isinstance(value, cls) and str(value) == text:
            return value
    raise ValueError(f"{text!r} is not a {cls.__name__}")
