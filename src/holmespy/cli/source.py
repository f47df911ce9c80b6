"""Where events are read from: `--from SRC`, else HOLMES_STORAGE, else HOLMES_DUMP_PATH.

Only local folders are read today; S3 sources arrive with the storage layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holmespy.bundle import EVENT_FILE
from holmespy.cli.errors import BadUsage, NotFound
from holmespy.config import default_dump_path


@dataclass(frozen=True)
class LocalEvent:
    path: Path
    event: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.event.get("id", self.path.name))


def resolve_source(given: str | None) -> Path:
    src = given or os.environ.get("HOLMES_STORAGE") or os.environ.get("HOLMES_DUMP_PATH")
    if src and src.startswith("s3://"):
        raise BadUsage(f"{src}: reading from S3 is not available in this version; use a folder")
    return Path(src) if src else default_dump_path()


class LocalSource:
    """A dump folder laid out as `<service>/<YYYY-MM-DD>/<event-id>/event.json`."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise NotFound(f"{root}: no such dump folder (set --from or HOLMES_DUMP_PATH)")
        self.root = root

    def events(self, service: str | None = None) -> Iterator[LocalEvent]:
        services = [self.root / service] if service else sorted(self.root.iterdir())
        for service_dir in services:
            for event_file in service_dir.glob(f"*/*/{EVENT_FILE}"):
                if event_file.parent.name.startswith("."):
                    continue  # a bundle still being written
                yield LocalEvent(event_file.parent, _read_event(event_file))

    def find(self, event_id: str) -> LocalEvent:
        matches = [e for e in self.events() if e.path.name == event_id or e.id == event_id]
        if not matches:
            prefixed = [e for e in self.events() if e.path.name.startswith(event_id)]
            if len(prefixed) > 1:
                raise BadUsage(f"{event_id}: matches {len(prefixed)} events; give more of the id")
            matches = prefixed
        if not matches:
            raise NotFound(f"{event_id}: no such event in {self.root} (list them with holmespy ls)")
        return matches[0]


def _read_event(path: Path) -> dict[str, Any]:
    try:
        event = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"id": path.parent.name, "corrupt": f"unreadable event.json: {exc}"}
    if not isinstance(event, dict):
        return {"id": path.parent.name, "corrupt": "event.json is not a JSON object"}
    return event
