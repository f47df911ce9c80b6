"""Who holds the memory (`heap-holders.txt`): one walk of the live heap from its roots.

The census (`heap-types.txt`) counts gc-tracked objects, so a leak of plain
dicts, strings, bytes or a few huge bytearrays hardly shows there, and it
cannot say what keeps anything alive. This walk starts at the roots a person
can name: module globals (`app.sessions.REGISTRY`), class attributes
(`app.models.Session.cache`), the locals of every running thread's frames,
and, last, gc-tracked objects that nothing reachable from those holds (cycles
waiting for a collection, objects held by C code). It follows
`gc.get_referents()` breadth-first from all roots at once, so each object is
counted once, under the *nearest* root that reaches it (ties: module globals,
then class attributes, then thread stacks), with its `sys.getsizeof()` shallow
size. That approximates a dominator tree: a holder's figures are what it
reaches first, not exactly what would be freed without it.

It runs on holmespy's capture thread inside the host, so it:
- never calls host code: types, sizes and referents are read through C-level
  functions only (a class whose `__sizeof__` is written in Python is sized by
  its nearest built-in base instead);
- lets host threads run: the walk is a Python loop that the interpreter
  interrupts every switch interval (5 ms), and the C calls inside it are kept
  short (objects are expanded in batches of 512, big containers alone, long
  lists by slices), and it allocates few objects the collector tracks, so it
  does not bring on a full collection (100+ ms on a million objects); the
  longest uninterruptible steps are `gc.get_objects()` and expanding the
  largest container, both timed and reported;
- tolerates a heap that changes under it: referents are copied by C code
  holding the GIL, never iterated live, so nothing raises "changed size
  during iteration"; containers of 1 KiB or more are expanded again at the
  end, so what a growing leak added meanwhile keeps its holder; objects the
  host moves may still be missed or, rarely, counted twice: a best-effort
  snapshot;
- costs little memory: visited objects are marked in a bitmap of their
  addresses (a bit per 16 bytes of address space touched, about 1 % of RSS)
  rather than a set of ids (about 70 bytes per object, as much as the heap).

objgraph answers "what refers to this object" with `gc.get_referrers()`, a
scan of every tracked object per step of a chain, and counts no bytes and no
untracked objects; one forward walk attributes every object at once.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from types import FrameType, ModuleType
from typing import Any

from holmespy.heapholders import (
    CLASS_ATTRIBUTE,
    GC_ONLY,
    METHOD,
    MODULE_GLOBAL,
    NAMESPACES,
    OTHERS,
    THREAD_STACK,
    Baseline,
    HeapHolders,
    Holder,
    Share,
    TypeTotal,
    render,
)
from holmespy.heapholders import size_text as _size
from holmespy.printable import printable

__all__ = [
    "METHOD",
    "Baseline",
    "HeapHolders",
    "Holder",
    "Share",
    "TypeTotal",
    "clean_name",
    "holders_file",
    "holders_snapshot",
    "plan_memory",
    "render",
]


_CHUNK = 512
"""Objects expanded per `gc.get_referents()` call: a few thousand referents, microseconds."""
_BIG = 64 * 1024
"""Containers of at least this many bytes (~4,000 entries) are expanded one per call."""
_REVISIT = 1024
"""Containers of at least this many bytes (~30 dict entries, ~120 list items) are expanded
again after the walk: what the host added to them meanwhile is claimed by the same root."""
_YIELD_EVERY = 8192
"""Objects claimed between two `time.sleep(0)`: lets a waiting host thread in right away."""
_GC_CHUNK = 32768
"""Old-generation objects checked between two pauses of the gc-only pass."""
_MAX_FRAMES = 200
_MAX_ALIASES = 3
SMALL_HOLDER = 64 * 1024
"""Holders under this many bytes are folded into one line per kind ("others")."""
_LABEL_MAX = 200
_CO_OPTIMIZED = 0x1
_THIS_FILE = __file__

_LEAVES = frozenset(
    {str, bytes, bytearray, int, float, complex, bool, type(None), range, type(Ellipsis)}
)
"""Types with no referents worth asking for (none, or only other leaves)."""

_module_dict_of = vars(ModuleType)["__dict__"]
_type_dict_of = vars(type)["__dict__"]
_type_module_of = vars(type)["__module__"]
_type_qualname_of = vars(type)["__qualname__"]
_type_mro_of = vars(type)["__mro__"]
_type_flags_of = vars(type)["__flags__"]
_BUILTIN_METHODS = (type(object.__sizeof__), type(object.__init__), type(len))


# -- memory headroom ------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPlan:
    """Whether the walk fits in the memory left under the limit, and why it is done in-process."""

    walk: bool
    rss: int
    limit: int | None
    estimate: int
    """What the walk may add at most: its bitmap, one level's list of objects, its tables."""
    why: str


_PER_ROOT = 600
"""Bytes of bookkeeping per root (its record and its table of types), measured ~400."""


def plan_memory(rss: int, limit: int | None, roots: int = 0) -> MemoryPlan:
    """Decide from RSS, the memory limit (None: unknown) and about how many roots there are.

    The walk adds a bitmap of visited addresses (RSS / 128), lists of the
    objects of one breadth-first level (8 bytes each; objects take 16 bytes or
    more, so at most about RSS / 16), a record per root, and a few MiB of
    tables. It runs only when twice that fits under the limit. A forked child
    would add about the whole Python heap instead: each object it visits has
    its reference count changed, which copies that object's memory page into
    the child.
    """
    estimate = rss // 128 + rss // 16 + roots * _PER_ROOT + (8 << 20)
    fork_cost = f"a forked child would copy up to {_size(rss)} (every page whose objects it visits)"
    if limit is None or limit <= 0:
        return MemoryPlan(True, rss, None, estimate, f"no memory limit known; {fork_cost}")
    headroom = limit - rss
    about = (
        f"{_size(max(headroom, 0))} left under the {_size(limit)} limit; the walk needs at most"
        f" {_size(estimate)}, {fork_cost}"
    )
    if headroom < 2 * estimate:
        return MemoryPlan(False, rss, limit, estimate, f"not walked: {about}")
    return MemoryPlan(True, rss, limit, estimate, about)


# -- names ----------------------------------------------------------------------------------


def _module_dict(module: object) -> dict[str, Any] | None:
    # Through the descriptor, not getattr: a module's __getattr__ or a proxy in sys.modules
    # must not run host code on this thread.
    if not issubclass(type(module), ModuleType):
        return None
    namespace = _module_dict_of.__get__(module, ModuleType)
    return namespace if type(namespace) is dict else None


def _is_class(obj: object) -> bool:
    return issubclass(type(obj), type)


def type_label(kind: type) -> str:
    """`module.Qualname` (builtins bare), read without running a metaclass's code."""
    try:
        module = _type_module_of.__get__(kind, type)
        qualname = _type_qualname_of.__get__(kind, type)
    except Exception:
        return object.__repr__(kind)
    qualname = qualname if isinstance(qualname, str) else "?"
    if not isinstance(module, str) or module == "builtins":
        return clean_name(qualname)
    return clean_name(f"{module}.{qualname}")


def clean_name(text: str) -> str:
    """A name from the host on one bounded line: control characters escaped."""
    return printable(text, _LABEL_MAX)


def _thread_names() -> dict[int, str]:
    try:
        return {t.ident: t.name for t in threading.enumerate() if t.ident is not None}
    except Exception:
        return {}


def _frame_locals(frame: FrameType) -> list[tuple[str, object]]:
    """The local variables of a running frame (module-level frames have none of their own).

    On 3.11 and 3.12 reading `f_locals` leaves a snapshot dict on the frame (as
    any debugger does) until its function returns or its locals are read again;
    3.13 made it a view with no such side effect.
    """
    if not frame.f_code.co_flags & _CO_OPTIMIZED and frame.f_locals is frame.f_globals:
        return []
    return [(name, value) for name, value in list(frame.f_locals.items()) if type(name) is str]


# -- sizes ------------------------------------------------------------------------------------

_Sizer = Callable[[object], int]


def _sizer(kind: type) -> _Sizer:
    """`sys.getsizeof`, unless `kind` defines `__sizeof__` in Python (host code): then the
    nearest built-in `__sizeof__` of its bases, plus the collector's header as getsizeof adds."""
    try:
        overridden = False
        for base in _type_mro_of.__get__(kind, type):
            method = _type_dict_of.__get__(base, type).get("__sizeof__")
            if method is None:
                continue
            if type(method) in _BUILTIN_METHODS:
                return _fallback_sizer(kind, method) if overridden else sys.getsizeof
            overridden = True
    except Exception:
        pass
    return _fallback_sizer(kind, object.__sizeof__)


def _fallback_sizer(kind: type, method: Any) -> _Sizer:
    flags = _type_flags_of.__get__(kind, type)
    header = 16 if flags & (1 << 14) else 0  # Py_TPFLAGS_HAVE_GC: a PyGC_Head before it

    def size(obj: object) -> int:
        try:
            return int(method(obj)) + header
        except Exception:
            return 0

    return size


# -- the walk ---------------------------------------------------------------------------------


class _OutOfTime(Exception):
    pass


_COUNT_BITS = 40
"""Stats pack objects and bytes in one int (bytes << 40 | objects): no list per entry, so
the walk allocates few objects the collector tracks (a full collection it would trigger
on a big heap stalls the host 100+ ms)."""
_COUNT_MASK = (1 << _COUNT_BITS) - 1


class _Root:
    """One root while the walk runs: what it claimed, by type."""

    __slots__ = ("aliases", "kind", "label", "roots", "stats", "type")

    def __init__(self, kind: str, label: str, type_name: str = "") -> None:
        self.kind = kind
        self.label = label
        self.type = type_name
        self.aliases: list[str] | None = None
        self.stats: dict[type, int] = {}
        """type -> bytes << _COUNT_BITS | objects."""
        self.roots = 1

    def totals(self) -> tuple[int, int]:
        packed = sum(self.stats.values())
        return packed & _COUNT_MASK, packed >> _COUNT_BITS


class _Marks:
    """Visited objects: one bit per 16 bytes of address space, 8 KiB per MiB touched.

    Objects are 16-byte aligned on 64-bit CPython (8 on 32-bit, where two objects
    cannot share 16 bytes anyway), so an address has one bit to itself.
    """

    __slots__ = ("pages",)

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def mark(self, obj: object) -> bool:
        """Mark `obj`; False when it already was."""
        i = id(obj) >> 4
        page = self.pages.get(i >> 16)
        if page is None:
            page = self.pages[i >> 16] = bytearray(8192)
        byte = (i >> 3) & 8191
        bit = 1 << (i & 7)
        if page[byte] & bit:
            return False
        page[byte] |= bit
        return True

    def marked(self, obj: object) -> bool:
        i = id(obj) >> 4
        page = self.pages.get(i >> 16)
        return page is not None and bool(page[(i >> 3) & 8191] & (1 << (i & 7)))

    def nbytes(self) -> int:
        return len(self.pages) * 8192


class _Walk:
    """The walk's state; after the walk it is itself walked as holmespy's own."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.marks = _Marks()
        self.roots: list[_Root] = []
        # The next level: every object in one flat list, cut into groups of one root each
        # (`ends`): three lists per level rather than one per root and level.
        self.objs: list[object] = []
        self.group_roots: list[_Root] = []
        self.group_ends: list[int] = []
        self.direct: dict[int, _Root] = {}
        """id -> root, for objects a root names directly: a second name is an alias."""
        self.list_read: dict[int, int] = {}
        """id -> how many items of a list expanded alone were read (revisits read the rest)."""
        self.big: list[tuple[_Root, object]] = []
        """Containers of `_REVISIT` bytes or more, with their roots: where a leak that grows
        while the walk runs adds its objects."""
        self.types: dict[type, tuple[_Sizer, int]] = {}
        """type -> (sizer, expand: 0 no, 1 yes, 2 a list expanded by slices)."""
        self.since_yield = 0
        self.longest = 0.0
        self.deadline = deadline
        self.clock = clock

    def root(self, kind: str, label: str, obj: object) -> None:
        """A root that names `obj`: it claims `obj`, or `obj` was claimed and this is an alias."""
        if not self.marks.mark(obj):
            owner = self.direct.get(id(obj))
            if owner is not None:
                if owner.aliases is None:
                    owner.aliases = []
                if len(owner.aliases) < _MAX_ALIASES:
                    owner.aliases.append(label)
            return
        root = _Root(kind, label, type_label(type(obj)))
        self.roots.append(root)
        if type(obj) not in _LEAVES:
            self.direct[id(obj)] = root
        self.count(root, (obj,))

    def type_info(self, kind: type) -> tuple[_Sizer, int]:
        info = self.types.get(kind)
        if info is None:
            expand = 0 if kind in _LEAVES else 2 if kind is list else 1
            info = self.types[kind] = (_sizer(kind), expand)
        return info

    def count(self, root: _Root, objs: Iterable[object]) -> None:
        """Count objects already marked for `root`; queue those worth expanding."""
        stats = root.stats
        for obj in objs:
            kind = type(obj)
            sizer, expand = self.type_info(kind)
            size = sizer(obj)
            stats[kind] = stats.get(kind, 0) + (size << _COUNT_BITS) + 1
            if expand:
                self._queue(root, obj, size)
        self._close(root)

    def _queue(self, root: _Root, obj: object, size: int) -> None:
        if size >= _REVISIT:
            self.big.append((root, obj))
        if size < _BIG:
            self.objs.append(obj)
        else:  # a group of its own: expanded alone, or by slices for a list
            self._close(root)
            self.objs.append(obj)
            self._close(root)

    def _close(self, root: _Root) -> None:
        ends = self.group_ends
        if len(self.objs) > (ends[-1] if ends else 0):
            self.group_roots.append(root)
            ends.append(len(self.objs))

    def _referents(self, objs: list[object]) -> list[object]:
        began = self.clock()
        refs = gc.get_referents(*objs)
        took = self.clock() - began
        if took > self.longest:
            self.longest = took
        return refs

    def expand(self, root: _Root, objs: list[object]) -> None:
        """Claim for `root` the referents of `objs` that nothing claimed yet."""
        if len(objs) == 1 and type(objs[0]) is list:
            # A long list is read a slice at a time: one call over millions of items would
            # hold the GIL for tens of ms. The host may change it meanwhile: best effort.
            # Read again (revisit), only what was appended since: that is how lists leak.
            whole = objs[0]
            start = self.list_read.get(id(whole), 0)
            while start < len(whole):
                self._claim(root, list.__getitem__(whole, slice(start, start + _BIG // 8)))
                start += _BIG // 8
            if len(whole) >= _REVISIT // 8:  # kept alive in `big`: its id stays its own
                self.list_read[id(whole)] = len(whole)
        else:
            for start in range(0, len(objs), _CHUNK):
                self._claim(root, self._referents(objs[start : start + _CHUNK]))
        self._close(root)

    def _claim(self, root: _Root, refs: list[object]) -> None:
        stats = root.stats
        pages = self.marks.pages
        types = self.types
        queue = self.objs
        claimed = 0
        for obj in refs:
            # _Marks.mark inlined: this loop runs once per reference in the heap.
            i = id(obj) >> 4
            page = pages.get(i >> 16)
            if page is None:
                page = pages[i >> 16] = bytearray(8192)
            byte = (i >> 3) & 8191
            bit = 1 << (i & 7)
            if page[byte] & bit:
                continue
            page[byte] |= bit
            claimed += 1
            kind = type(obj)
            info = types.get(kind)
            if info is None:
                info = self.type_info(kind)
            size = info[0](obj)
            stats[kind] = stats.get(kind, 0) + (size << _COUNT_BITS) + 1
            if info[1]:
                if size < _REVISIT:
                    queue.append(obj)
                else:
                    self._queue(root, obj, size)
        self.since_yield += claimed
        if self.since_yield >= _YIELD_EVERY:
            self.since_yield = 0
            time.sleep(0)  # a host thread waiting for the GIL gets it now
            if self.clock() > self.deadline:
                raise _OutOfTime

    def revisit(self) -> None:
        """Expand the larger containers again, so what the host added to them while the
        walk ran is claimed by the same root (else it would look reachable from nothing)."""
        for root, obj in list(self.big):
            self.expand(root, [obj])
        self.run()

    def run(self) -> None:
        """Breadth-first, one level for every root at a time: the nearest root claims."""
        while self.objs:
            objs, roots, ends = self.objs, self.group_roots, self.group_ends
            self.objs, self.group_roots, self.group_ends = [], [], []
            start = 0
            for root, end in zip(roots, ends, strict=True):
                self.expand(root, objs[start:end])
                start = end
            del objs, roots, ends


# -- roots ------------------------------------------------------------------------------------


@dataclass
class _Found:
    """What the interpreter names: modules, classes, running frames, and the roots in them."""

    pinned: list[object] = field(default_factory=list)
    """Modules, their dicts, classes, their dicts, running frames: namespaces, not holders."""
    module_globals: list[tuple[str, object]] = field(default_factory=list)
    class_attributes: list[tuple[str, object]] = field(default_factory=list)
    thread_locals: list[tuple[str, object]] = field(default_factory=list)


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _find_roots(marks: _Marks, exclude: frozenset[int]) -> _Found:
    found = _Found()
    pin = found.pinned

    def pinned(obj: object) -> None:
        if marks.mark(obj):
            pin.append(obj)

    modules: list[tuple[str, dict[str, Any]]] = []
    for modname, module in list(sys.modules.items()):
        namespace = _module_dict(module)
        if namespace is None or type(modname) is not str:
            continue
        pinned(module)
        pinned(namespace)
        modules.append((modname, namespace))

    stacks: list[tuple[int, list[FrameType]]] = []
    for ident, frame in list(sys._current_frames().items()):
        if ident in exclude:
            continue  # holmespy's threads: what only they hold is its own
        chain: list[FrameType] = []
        walked: FrameType | None = frame
        while walked is not None and len(chain) < _MAX_FRAMES:
            if walked.f_code.co_filename != _THIS_FILE:  # the walk's own frames: its state
                chain.append(walked)
            walked = walked.f_back
        for f in chain:
            pinned(f)
        stacks.append((ident, chain))

    classes: list[type] = []
    for modname, namespace in modules:
        for name, value in list(namespace.items()):
            if type(name) is not str or _dunder(name):
                continue  # __spec__, __builtins__, __doc__...: the interpreter's bookkeeping
            if _is_class(value):
                classes.append(value)
            elif not (_module_dict(value) is not None and marks.marked(value)):
                found.module_globals.append((clean_name(f"{modname}.{name}"), value))

    _register_classes(classes, marks, pin, found.class_attributes)

    names = _thread_names()
    for ident, chain in stacks:
        thread = clean_name(names.get(ident, f"<unknown {ident}>")).replace('"', "'")
        for f in chain:
            where = _frame_name(f)
            try:
                local_vars = _frame_locals(f)
            except Exception:
                continue
            for name, value in local_vars:
                label = clean_name(f'thread "{thread}" {where} local {name!r}')
                found.thread_locals.append((label, value))
    return found


def _register_classes(
    classes: list[type], marks: _Marks, pin: list[object], attributes: list[tuple[str, object]]
) -> None:
    """Mark classes and their dicts as namespaces (`pin`); their attributes become roots."""
    while classes:
        cls = classes.pop()
        if not marks.mark(cls):
            continue  # already registered under its own name
        pin.append(cls)
        members = _type_dict_of.__get__(cls, type)
        for inner in gc.get_referents(members):  # the class's real dict, behind the proxy
            if type(inner) is dict and marks.mark(inner):
                pin.append(inner)
        label = type_label(cls)
        for name, value in list(members.items()):
            if type(name) is not str or _dunder(name):
                continue
            if _is_class(value):
                classes.append(value)
            else:
                attributes.append((clean_name(f"{label}.{name}"), value))


_type_subclasses = vars(type)["__subclasses__"]


def _all_classes() -> list[type]:
    """Every class alive, from `object` down its subclass registries (built-in types too)."""
    found: list[type] = []
    seen: set[int] = set()
    pending: list[type] = [object]
    while pending:
        cls = pending.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        found.append(cls)
        pending += _type_subclasses(cls)  # the C method: a metaclass cannot override it
    return found


def _frame_name(frame: FrameType) -> str:
    code = frame.f_code
    module = frame.f_globals.get("__name__") if type(frame.f_globals) is dict else None
    qualname = getattr(code, "co_qualname", code.co_name)
    return f"{module}.{qualname}" if isinstance(module, str) else str(qualname)


# -- the snapshot -----------------------------------------------------------------------------


def holders_snapshot(
    previous: Baseline | None = None,
    *,
    exclude_threads: Iterable[int] = (),
    max_seconds: float = 120.0,
    top_types: int = 5,
    small_holder: int = SMALL_HOLDER,
    clock: Callable[[], float] = time.perf_counter,
) -> HeapHolders:
    """Walk the live heap from its roots and say who holds what; `previous` gives growth.

    `exclude_threads` are holmespy's own threads: their frames are not roots,
    and what only they hold is walked but not counted. The walk stops after
    `max_seconds` (`partial` says so). Holders of fewer than `small_holder`
    bytes are summed into one line per kind. Never raises: `error` says what
    failed.
    """
    started = time.time()
    begun = clock()
    walk = _Walk(begun + max_seconds, clock)
    partial = error = None
    candidates = own_objects = 0
    try:
        try:
            _walk_roots(walk, frozenset(exclude_threads))
        except _OutOfTime:
            partial = (
                f"stopped after {max_seconds:g} s: objects beyond the levels walked by then"
                " are not counted, and the gc-only pass did not run"
            )
        if partial is None:
            own_objects = _walk_own(walk)
            candidates = _walk_gc_only(walk)
    except _OutOfTime:
        partial = f"stopped after {max_seconds:g} s, during the gc-only pass"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    walk.objs, walk.group_roots, walk.group_ends = [], [], []
    walk.direct, walk.big, walk.list_read = {}, [], {}
    return _summarise(
        walk,
        previous,
        top_types=top_types,
        small_holder=small_holder,
        pid=os.getpid(),
        started=started,
        seconds=clock() - begun,
        candidates=candidates,
        own_objects=own_objects,
        partial=partial,
        error=error,
    )


def _walk_roots(walk: _Walk, exclude: frozenset[int]) -> None:
    found = _find_roots(walk.marks, exclude)
    for kind, pairs in (
        (MODULE_GLOBAL, found.module_globals),
        (CLASS_ATTRIBUTE, found.class_attributes),
        (THREAD_STACK, found.thread_locals),
    ):
        for label, value in pairs:
            walk.root(kind, label, value)
        pairs.clear()
    # Counted last, so at each level the named roots claim first.
    namespaces = _Root(NAMESPACES, "(interpreter: module and class namespaces, running frames)")
    walk.roots.append(namespaces)
    walk.count(namespaces, found.pinned)
    found.pinned.clear()
    walk.direct = {}
    walk.run()
    walk.revisit()


def _walk_own(walk: _Walk) -> int:
    """Mark what this walk itself holds, so the gc-only pass does not report it."""
    own = _Root("own", "holmespy")
    objs = [obj for obj in (walk, walk.roots, walk.marks, walk.types) if walk.marks.mark(obj)]
    walk.count(own, objs)
    walk.run()
    return own.totals()[0]


def _walk_gc_only(walk: _Walk) -> int:
    """Walk the old generation's objects that no root reached; return how many there were.

    Only the oldest generation: what the host made while the walk ran is young,
    and would otherwise show up here. Each group is rooted at an object that no
    other such object refers to (or, for a pure cycle, at its first member seen),
    and summed by that object's type.
    """
    marks = walk.marks
    # Classes no module names (made at run time, or held by C code) and built-in types
    # (which are never traversed, so their dicts are reachable only from the gc's lists):
    # found through the subclass registries, their attributes roots like any others.
    interpreter = _Root(NAMESPACES, "(interpreter: classes no module names, built-in types)")
    walk.roots.append(interpreter)
    pinned: list[object] = []
    attributes: list[tuple[str, object]] = []
    _register_classes(_all_classes(), marks, pinned, attributes)
    for label, value in attributes:
        walk.root(CLASS_ATTRIBUTE, label, value)
    del attributes
    walk.count(interpreter, pinned)
    del pinned
    walk.run()
    began = walk.clock()
    objs = gc.get_objects(generation=2)
    walk.longest = max(walk.longest, walk.clock() - began)
    candidates: list[object] = []
    while objs:
        # From the end, truncating: an object the host dropped meanwhile is freed a chunk at a time.
        candidates += [obj for obj in objs[-_GC_CHUNK:] if not marks.marked(obj)]
        del objs[-_GC_CHUNK:]
        _breathe(walk)
    del objs
    # Once more now that the candidates are listed: what the host added to a container
    # meanwhile (a full collection may already have made it old) gets its real holder.
    walk.revisit()
    candidates = [obj for obj in candidates if not marks.marked(obj)]
    children = _Marks()
    for start in range(0, len(candidates), _CHUNK):
        for obj in gc.get_referents(*candidates[start : start + _CHUNK]):
            children.mark(obj)
        if start % _GC_CHUNK == 0:
            _breathe(walk)
    by_type: dict[type, _Root] = {}

    def start_at(obj: object) -> None:
        kind = type(obj)
        if kind is dict and _subclass_registry(obj):
            if marks.mark(obj):
                walk.count(interpreter, (obj,))
            return
        root = by_type.get(kind)
        if root is None:
            root = by_type[kind] = _Root(GC_ONLY, f"<gc only> {type_label(kind)}", type_label(kind))
            root.roots = 0
            walk.roots.append(root)
        if marks.mark(obj):
            root.roots += 1
            walk.count(root, (obj,))

    for obj in candidates:
        if not children.marked(obj):
            start_at(obj)
    walk.run()
    for obj in candidates:
        if not marks.marked(obj):  # a cycle nothing outside it refers to
            start_at(obj)
            walk.run()
    return len(candidates)


def _subclass_registry(obj: object) -> bool:
    """A class's `__subclasses__` dict ({id: weakref}): no traverse function visits it."""
    refs = gc.get_referents(obj)
    return bool(refs) and all(type(r) is int or type(r) is weakref.ReferenceType for r in refs)


def _breathe(walk: _Walk) -> None:
    time.sleep(0)
    if walk.clock() > walk.deadline:
        raise _OutOfTime


# -- the summary ------------------------------------------------------------------------------

_TYPES_PER_HOLDER = 5
_HOLDERS_PER_TYPE = 8


def _summarise(
    walk: _Walk,
    previous: Baseline | None,
    *,
    top_types: int,
    small_holder: int,
    pid: int,
    started: float,
    seconds: float,
    candidates: int,
    own_objects: int,
    partial: str | None,
    error: str | None,
) -> HeapHolders:
    # Packed sums add up field by field (fewer than 2**40 objects): most roots are summed
    # without building anything, and only the holders listed get a table by type name.
    type_totals: dict[type, int] = {}
    others: dict[str, tuple[list[int], dict[type, int]]] = {}
    listed: list[_Root] = []
    roots = 0
    for root in walk.roots:
        stats = root.stats
        if not stats:
            continue
        roots += root.roots
        total = 0
        for kind, packed in stats.items():
            type_totals[kind] = type_totals.get(kind, 0) + packed
            total += packed
        if (total >> _COUNT_BITS) >= small_holder or root.kind == NAMESPACES:
            listed.append(root)
            continue
        count, folded = others.setdefault(root.kind, ([0], {}))
        count[0] += root.roots
        for kind, packed in stats.items():
            folded[kind] = folded.get(kind, 0) + packed
    walk.roots = []

    names: dict[type, str] = {}

    def by_name(stats: dict[type, int]) -> dict[str, list[int]]:
        # Two classes can share a name (a reloaded module): their figures add up.
        merged: dict[str, list[int]] = {}
        for kind, packed in stats.items():
            label = names.get(kind)
            if label is None:
                label = names[kind] = type_label(kind)
            pair = merged.setdefault(label, [0, 0])
            pair[0] += packed & _COUNT_MASK
            pair[1] += packed >> _COUNT_BITS
        return merged

    types = tuple(
        TypeTotal(n, o, b)
        for n, (o, b) in sorted(by_name(type_totals).items(), key=lambda i: -i[1][1])
    )
    lines: list[tuple[Holder, dict[str, list[int]]]] = []
    for root in listed:
        merged = by_name(root.stats)
        holder = _holder(root.label, root.kind, root.type, merged, root.aliases or [], root.roots)
        lines.append((holder, merged))
    lines.sort(key=lambda line: -line[0].bytes)
    folded_lines = []
    for root_kind, (count, folded) in others.items():
        merged = by_name(folded)
        label = f"(other {_plural_kind(root_kind)}, each under {_size(small_holder)})"
        folded_lines.append((_holder(label, OTHERS, "", merged, [], count[0]), merged))
    folded_lines.sort(key=lambda line: -line[0].bytes)
    lines += folded_lines

    snapshot = HeapHolders(
        pid=pid,
        time=started,
        seconds=seconds,
        objects=sum(t.objects for t in types),
        bytes=sum(t.bytes for t in types),
        roots=roots,
        types=types,
        holders=tuple(h for h, _ in lines),
        shares={},
        longest_step_seconds=walk.longest,
        gc_only_candidates=candidates,
        own_objects=own_objects,
        partial=partial,
        error=error,
    )
    chosen = [t.name for t in types[:top_types]]
    if previous is not None:
        snapshot = snapshot.compared(previous)
        grew = {t.name: t.growth[1] for t in snapshot.types if t.growth is not None}
        growers = sorted(grew, key=lambda n: -grew[n])
        chosen += [n for n in growers[:top_types] if grew[n] > 0]
    shares: dict[str, tuple[Share, ...]] = {}
    for type_name in dict.fromkeys(chosen):
        held = [
            Share(holder.label, type_name, *merged[type_name])
            for holder, merged in lines
            if type_name in merged
        ]
        held.sort(key=lambda s: -s.bytes)
        shares[type_name] = tuple(held[:_HOLDERS_PER_TYPE])
    return replace(snapshot, shares=shares)


def _holder(
    label: str,
    kind: str,
    type_name: str,
    merged: dict[str, list[int]],
    aliases: list[str],
    roots: int,
) -> Holder:
    ranked = sorted(merged.items(), key=lambda i: -i[1][1])
    return Holder(
        label=label,
        kind=kind,
        type=type_name,
        objects=sum(p[0] for p in merged.values()),
        bytes=sum(p[1] for p in merged.values()),
        types=tuple(TypeTotal(n, o, b) for n, (o, b) in ranked[:_TYPES_PER_HOLDER]),
        aliases=tuple(aliases),
        roots=roots,
    )


def _plural_kind(kind: str) -> str:
    return {
        MODULE_GLOBAL: "module globals",
        CLASS_ATTRIBUTE: "class attributes",
        THREAD_STACK: "thread-stack locals",
        GC_ONLY: "gc-only groups",
    }.get(kind, kind)


# -- the capture ------------------------------------------------------------------------------


def _count_globals() -> int:
    """About how many roots the walk will have: the modules' globals (C-level len calls)."""
    total = 0
    for module in list(sys.modules.values()):
        namespace = _module_dict(module)
        if namespace is not None:
            total += len(namespace)
    return total


def read_rss(path: str = "/proc/self/statm") -> int:
    try:
        with open(path, "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def holders_file(
    previous: Baseline | None,
    limit: int | None,
    exclude_threads: Iterable[int] = (),
    *,
    rss: Callable[[], int] = read_rss,
) -> tuple[HeapHolders, dict[str, Any], Baseline | None]:
    """The snapshot (`render` makes `heap-holders.txt` of it, `to_json` its JSON), its
    facts for `event.json`, and the baseline for the next one.

    Checks the memory headroom first: with too little, the file says why no
    walk was made (and the previous baseline is kept).
    """
    before = rss()
    plan = plan_memory(before, limit, _count_globals())
    memory: dict[str, Any] = {"rss_bytes": before, "limit_bytes": limit}
    memory["estimated_extra_bytes"] = plan.estimate
    if not plan.walk:
        snapshot = HeapHolders(
            pid=os.getpid(),
            time=time.time(),
            seconds=0.0,
            objects=0,
            bytes=0,
            roots=0,
            types=(),
            holders=(),
            shares={},
            why=plan.why,
            error=plan.why,
            previous_time=None if previous is None else previous.time,
        )
        return snapshot, {**snapshot.facts, "memory": memory}, None
    snapshot = holders_snapshot(previous, exclude_threads=exclude_threads)
    snapshot = replace(snapshot, why=f"{plan.why}")
    memory["rss_change_bytes"] = rss() - before  # the host's allocations meanwhile included
    facts = {**snapshot.facts, "memory": memory}
    keep = snapshot.baseline() if snapshot.error is None and snapshot.partial is None else None
    return snapshot, facts, keep
