"""The `holmespy` logger, without importing `logging` into a process that never did.

`import logging` costs ~12 ms here, more than the rest of what a watcher
tick needs. Until the host imports `logging` nobody can have configured a
handler, so a record holmespy would emit meanwhile could only reach the
NullHandler every library adds (never the `lastResort` stderr handler), that
is, nowhere: dropping it changes nothing anyone can see. From the moment
`logging` is in `sys.modules` (the host, or one of holmespy's own lazily
loaded parts, imported it) this is the real `logging.getLogger("holmespy")`,
with its NullHandler and the level `HOLMES_LOG_LEVEL` asked for.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any

NAME = "holmespy"
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40


class LazyLogger:
    """The subset of `logging.Logger` holmespy's start-up path uses."""

    def __init__(self, name: str = NAME) -> None:
        self._name = name
        self._logger: logging.Logger | None = None
        self._level: int | str | None = None

    def get(self) -> logging.Logger | None:
        """The real logger, or None while `logging` is not imported."""
        logger = self._logger
        if logger is not None or "logging" not in sys.modules:
            return logger
        import logging

        # No lock of ours around logging's: logging holds its own lock across a
        # fork (its at-fork hook), and a second lock here could invert with it.
        # Two threads racing here both get the same logger; at worst it gets a
        # second NullHandler, which changes nothing.
        logger = logging.getLogger(self._name)
        # Silent unless the host configures logging (the library convention).
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        if self._level is not None:
            logger.setLevel(self._level)
        self._logger = logger
        return logger

    def real(self) -> logging.Logger:
        """The real logger, importing `logging` (for modules that import it anyway)."""
        import logging

        logger = self.get()
        return logger if logger is not None else logging.getLogger(self._name)

    def setLevel(self, level: int | str) -> None:
        self._level = level
        logger = self.get()
        if logger is not None:
            logger.setLevel(level)

    def isEnabledFor(self, level: int) -> bool:
        logger = self.get()
        return logger is not None and logger.isEnabledFor(level)

    def _emit(self, level: int, msg: object, args: tuple[object, ...], kwargs: Any) -> None:
        logger = self.get()
        if logger is not None and logger.isEnabledFor(level):
            # Name the caller of debug()/info()/..., not this wrapper, in %(funcName)s.
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
            logger.log(level, msg, *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(ERROR, msg, args, kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self._emit(ERROR, msg, args, kwargs)


log = LazyLogger()
