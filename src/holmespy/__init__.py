"""holmespy: self-diagnosis for long-running Python servers.

    import holmespy
    holmespy.start()      # configured by HOLMES_* environment variables

When CPU, memory, threads or asyncio tasks spike, an event bundle with what
explains it (thread stacks, task dumps, profiles) appears under
`HOLMES_DUMP_PATH`.

Importing the package loads nothing else: each name below is imported on
first use, and `start()` loads only what a watcher tick needs (profilers,
storage and the bundle writer wait for the first event), so that a short
process pays little for holmespy (`benchmarks/startup.py`).
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~9 ms)
if TYPE_CHECKING:
    from holmespy.api import current, on_stored, reconfigure, start, status, stop
    from holmespy.config import Config
    from holmespy.errors import ConfigError, ConfigWarning, HolmesError
    from holmespy.rules import Limit, Rule
    from holmespy.statusview import Status
    from holmespy.storage.reporter import StoredEvent, StoredFile
    from holmespy.watcher import Watcher

_WHERE = {
    "Config": "holmespy.config",
    "ConfigError": "holmespy.errors",
    "ConfigWarning": "holmespy.errors",
    "HolmesError": "holmespy.errors",
    "Limit": "holmespy.rules",
    "Rule": "holmespy.rules",
    "Status": "holmespy.statusview",
    "StoredEvent": "holmespy.storage.reporter",
    "StoredFile": "holmespy.storage.reporter",
    "Watcher": "holmespy.watcher",
    "current": "holmespy.api",
    "on_stored": "holmespy.api",
    "reconfigure": "holmespy.api",
    "start": "holmespy.api",
    "status": "holmespy.api",
    "stop": "holmespy.api",
}

__all__ = [
    "Config",
    "ConfigError",
    "ConfigWarning",
    "HolmesError",
    "Limit",
    "Rule",
    "Status",
    "StoredEvent",
    "StoredFile",
    "Watcher",
    "__version__",
    "current",
    "on_stored",
    "reconfigure",
    "start",
    "status",
    "stop",
]


def __getattr__(name: str) -> object:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'holmespy' has no attribute {name!r}")
    value = getattr(__import__(where, fromlist=[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
