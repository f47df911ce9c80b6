"""Run a real server on 127.0.0.1, load it, ask it, and find the events its workers wrote.

Everything waits by polling with generous deadlines and nothing asserts on
how long it took, so a loaded two-core machine makes the tests slower, not
red. Servers run in their own session and are stopped with their whole
process group, so no worker outlives a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEADLINE = 60.0
"""Seconds any single wait may take before the test fails (a loaded machine is slow)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = DEADLINE) -> dict[str, Any]:
        with urllib.request.urlopen(self.url(path), timeout=timeout) as reply:
            result: dict[str, Any] = json.loads(reply.read())
            return result

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int | None:
        """SIGTERM the server's process group, SIGKILL what is left after a while."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            return None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # workers that outlived their master

    def watcher(self, path: str = "/holmespy") -> dict[str, Any]:
        return self.get(path)

    def wait_warm(self, workers: int = 1, ticks: int = 11) -> set[int]:
        """Poll until `workers` distinct workers each said their watcher ticked `ticks` times.

        Past 10 ticks a rule's `diff` comparison is armed; requests spread over
        workers as the server pleases, so keep asking until each was seen warm.
        """
        warm: set[int] = set()
        deadline = time.monotonic() + DEADLINE
        while len(warm) < workers:
            assert time.monotonic() < deadline, f"{self.name}: workers not warm: {warm}"
            seen = self.get("/holmespy")
            if seen["running"] and seen["ticks"] >= ticks:
                warm.add(seen["pid"])
            else:
                time.sleep(0.05)
        return warm


@contextlib.contextmanager
def running(
    name: str,
    argv: Callable[[int], list[str]],
    env: Mapping[str, str],
    log_dir: Path,
    cwd: Path = HERE,
) -> Iterator[Server]:
    """Start `argv(port)` on a free port, wait until it answers, stop it afterwards."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        port = free_port()
        proc = subprocess.Popen(
            argv(port),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(name, port, proc, log)
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                code = proc.poll()
                assert code is None, f"{name} exited with {code}:\n{server.output()}"
                assert time.monotonic() < deadline, f"{name} never answered:\n{server.output()}"
                try:
                    server.get("/", timeout=5)
                    break
                except (OSError, urllib.error.URLError):
                    time.sleep(0.05)
            yield server
        finally:
            server.stop()


@dataclass
class Load:
    """A few clients sending `GET /` in a loop, each at most `rate` requests a second.

    Bounded: it stops at the end of its `with` block or after `limit`
    requests per client, whichever comes first.
    """

    server: Server
    clients: int = 2
    rate: float = 20.0
    limit: int = 2000
    answered: int = 0
    failed: int = 0
    pids: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(DEADLINE)

    def _client(self) -> None:
        for _ in range(self.limit):
            if self._stop.wait(1.0 / self.rate):
                return
            try:
                self.pids.add(self.server.get("/", timeout=30)["pid"])
                self.answered += 1
            except (OSError, ValueError):
                self.failed += 1  # a worker being replaced; counted, never fatal


def events(dumps: Path) -> list[dict[str, Any]]:
    """Every published event under `dumps` (temp folders of captures in progress are not)."""
    found = []
    # [!.]: not `.tmp-…` folders, whose event.json is written just before the rename.
    for path in sorted(dumps.glob("*/*/[!.]*/event.json")):
        with contextlib.suppress(OSError, ValueError):
            event = json.loads(path.read_text(encoding="utf-8"))
            event["_path"] = str(path.parent)
            found.append(event)
    return found


def wait_for_event(
    dumps: Path, what: str, *, writer_gone: int | None = None, **match: Any
) -> dict[str, Any]:
    """Poll until an event whose fields equal `match` is published; return it.

    With `writer_gone=PID`, stop waiting once that process is gone: a dead
    process publishes nothing more.
    """
    deadline = time.monotonic() + DEADLINE
    while True:
        gone = writer_gone is not None and not alive(writer_gone)
        for event in events(dumps):
            if all(event.get(key) == value for key, value in match.items()):
                return event
        assert not gone, f"process {writer_gone} ended without a {what} event {match}"
        assert time.monotonic() < deadline, f"no {what} event {match} in {events(dumps)}"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


def temps_of(dumps: Path, pid: int) -> list[Path]:
    """Temp folders of captures `pid` has in progress."""
    return list(dumps.glob(f"*/*/.tmp-{pid}-*"))


def hottest_function(profile_path: Path) -> tuple[str, float]:
    """The function with the most self samples in a pprof file, and its share of them."""
    from holmespy.formats.pprof import read_pprof

    profile = read_pprof(profile_path)
    flat: dict[str, int] = {}
    for sample in profile.samples:
        if sample.stack:
            name = sample.stack[0].function
            flat[name] = flat.get(name, 0) + sample.values[0]
    total = sum(flat.values())
    assert total > 0, f"{profile_path} holds no samples"
    name, value = max(flat.items(), key=lambda item: item[1])
    return name, value / total


def record_timing(server: str, what: str, onset: float, event: dict[str, Any]) -> None:
    """Record how long after `onset` (the faulty request) `event` fired and was published.

    `fired_s` is from the event's `time` (when the rule fired), `published_s`
    from its `event.json`'s mtime (written just before the folder got its
    final name).
    """
    import datetime as dt

    fired = dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
    published = (Path(event["_path"]) / "event.json").stat().st_mtime
    record(server, what, fired_s=fired - onset, published_s=published - onset)


def record_cut(server: str, event: dict[str, Any]) -> None:
    """Record how long after its CPU capture was cut (the process was exiting) `event` was out."""
    import datetime as dt

    ended = event.get("captures", {}).get("cpu", {}).get("ended_after")
    if ended is None:
        return
    fired = dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
    published = (Path(event["_path"]) / "event.json").stat().st_mtime
    record(server, "cut to published", cut_to_published_s=published - fired - ended)


def record(server: str, what: str, **seconds: float) -> None:
    """Append figures to $HOLMESPY_TEST_TIMINGS (JSON lines) when it is set, for the docs."""
    target = os.environ.get("HOLMESPY_TEST_TIMINGS")
    if not target:
        return
    row = {"server": server, "what": what, **{k: round(v, 3) for k, v in seconds.items()}}
    with open(target, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
