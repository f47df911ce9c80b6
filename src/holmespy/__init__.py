"""holmespy: self-diagnosis for long-running Python servers.

    import holmespy
    holmespy.start()      # configured by HOLMES_* environment variables

When CPU, memory, threads or asyncio tasks spike, an event bundle with what
explains it (thread stacks, task dumps, profiles) appears under
`HOLMES_DUMP_PATH`.
"""

from __future__ import annotations

import logging

from holmespy.api import current, on_stored, reconfigure, start, status, stop
from holmespy.config import Config
from holmespy.errors import ConfigError, ConfigWarning, HolmesError
from holmespy.rules import Limit, Rule
from holmespy.storage.reporter import StoredEvent, StoredFile
from holmespy.watcher import Status, Watcher

__version__ = "0.1.0"

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

# Silent unless the host configures logging (the library convention).
logging.getLogger("holmespy").addHandler(logging.NullHandler())
