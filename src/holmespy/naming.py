"""Naming what the engines saw: files to modules, thread ids to thread names.

py-spy and yappi report a function by its file path; the sampler sees frames
and their globals. Either way a profile frame is named `module.qualname`, so
the three engines' profiles can be compared and merged. The flight recorder
names its samples the same way, from the moment `holmespy.start()` runs: this
module (like `threadclocks` and `nativeid`) lives outside `holmespy.profilers`
and imports nothing that start-up must not load (tests/test_startup.py).
"""

from __future__ import annotations

import os
import sys
import threading
import types

from holmespy.nativeid import native_id


class ModuleNames:
    """File path -> module name, from the modules imported when it was built.

    Built once per capture. Module objects are read with
    `object.__getattribute__`, so a lazily imported module (importlib's
    LazyLoader) or a module-level `__getattr__` is never triggered from
    holmespy's thread.
    """

    def __init__(self) -> None:
        self._by_file: dict[str, str] = {}
        self._by_real: dict[str, str] | None = None
        self._memo: dict[str, str] = {}
        try:
            modules = list(sys.modules.items())
        except RuntimeError:  # another thread imported mid-copy; names fall back to file stems
            modules = []
        for name, module in modules:
            if not isinstance(module, types.ModuleType):
                continue
            try:
                namespace = object.__getattribute__(module, "__dict__")
                path = namespace.get("__file__")
            except Exception:
                continue
            if isinstance(path, str) and path:
                self._by_file.setdefault(os.path.normpath(path), name)

    def module_for(self, filename: str) -> str:
        """The module whose file is `filename`, else a name derived from the path."""
        hit = self._memo.get(filename)
        if hit is not None:
            return hit
        name = self._by_file.get(os.path.normpath(filename)) if filename else None
        if name is None and filename and not filename.startswith("<"):
            name = self._real().get(_realpath(filename))
        if name is None:
            name = module_from_path(filename)
        self._memo[filename] = name
        return name

    def _real(self) -> dict[str, str]:
        # Resolving symlinks costs syscalls per module: done only on the first miss.
        if self._by_real is None:
            self._by_real = {}
            for path, name in self._by_file.items():
                self._by_real.setdefault(_realpath(path), name)
        return self._by_real

    def qualify(self, function: str, filename: str) -> str:
        return f"{self.module_for(filename)}.{function}"

    def of_frame(self, frame: types.FrameType, code: types.CodeType) -> str:
        """`module.qualname` of a live frame: its globals name the module, else its file does."""
        module = frame.f_globals.get("__name__")
        if not isinstance(module, str):
            module = self.module_for(code.co_filename)
        return f"{module}.{code.co_qualname}"


def _realpath(path: str) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path


def module_from_path(filename: str) -> str:
    """A module-like name for a file no imported module claims.

    `<frozen importlib._bootstrap>` names its module; a package's
    `__init__.py` is named after its folder; anything else after its stem.
    """
    if not filename:
        return "<unknown>"
    if filename.startswith("<frozen ") and filename.endswith(">"):
        return filename[len("<frozen ") : -1]
    if filename.startswith("<"):
        return filename
    stem, _ = os.path.splitext(os.path.basename(filename))
    if stem == "__init__":
        parent = os.path.basename(os.path.dirname(filename))
        return parent or stem
    return stem or filename


class ThreadTable:
    """Names of the process's threads, by ident and by native (kernel) id.

    Threads can start and end during a capture, so a table is refreshed with
    `update()` (at the start, when an unknown thread shows up, at the end)
    and never forgets a thread it once saw. Names are kept as `threading`
    has them; `label_*` turns them into label values.
    """

    __slots__ = ("by_ident", "by_native", "native_of")

    def __init__(self) -> None:
        self.by_ident: dict[int, str] = {}
        self.by_native: dict[int, str] = {}
        self.native_of: dict[int, int] = {}
        """ident -> native id."""

    def update(self) -> None:
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None:
                continue
            self.by_ident[ident] = thread.name
            native = native_id(thread)
            if native is not None:
                self.by_native[native] = thread.name
                self.native_of[ident] = native

    def natives(self, idents: frozenset[int]) -> set[int]:
        return {self.native_of[i] for i in idents if i in self.native_of}

    def label_for_ident(self, ident: int) -> str:
        name = self.by_ident.get(ident)
        return unknown_thread(ident) if name is None else label_name(name)


def label_name(name: str) -> str:
    """A thread name as a label value: one line, bounded (names are user-chosen)."""
    text = name.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= 200 else text[:199] + "…"


def unknown_thread(number: int | str) -> str:
    """Label for a thread `threading` does not know (started with `_thread` or from C)."""
    return f"<unknown {number}>"
