"""What `import holmespy` and `holmespy.start()` load: only what a watcher tick needs.

A short process pays holmespy's start-up whole, so the heavy parts wait for
their first use: asyncio (and `holmespy.loops`) until the host has imported
asyncio, `logging` until someone imported it, captures, the bundle writer
and storage until the first event. Each case runs in a fresh interpreter
and looks at `sys.modules`; `benchmarks/startup.py` measures the time.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from holmespy import _log

pytestmark = pytest.mark.timeout(60)

HEAVY = (
    "asyncio",
    "logging",
    "typing",
    "tempfile",
    "json",
    "http.client",
    "urllib",
    # What `start()` used to pay for (benchmarks/startup.py): dataclasses (with
    # inspect, ast, dis, tokenize, copy), pathlib (with fnmatch, urllib.parse,
    # ipaddress), re, enum, signal's enums, contextlib.
    "dataclasses",
    "inspect",
    "ast",
    "dis",
    "tokenize",
    "copy",
    "pathlib",
    "fnmatch",
    "ipaddress",
    "re",
    "enum",
    "signal",
    "contextlib",
    "warnings",
    "fractions",
    "difflib",
    "math",
    "holmespy.loops",
    "holmespy.bundle",
    "holmespy.capturer",
    "holmespy.profilers",
    "holmespy.salvage",
    "holmespy.storage",
)


def fresh(code: str, tmp_path: Path, **env: str) -> dict[str, object]:
    """Run `code` in a new interpreter; it ends by printing one JSON line, returned here."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    environ.update(HOLMES_DUMP_PATH=str(tmp_path / "dumps"), **env)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


# Only what holmespy adds counts: `threading`, which a watcher thread cannot do
# without, is loaded first (what it pulls in varies with the version).
LOADED = """
import sys
import threading
before = set(sys.modules)
within = tuple(h + "." for h in HEAVY)
loaded = lambda: sorted(m for m in set(sys.modules) - before if m in HEAVY or m.startswith(within))
"""


def test_importing_the_package_loads_nothing_else(tmp_path: Path) -> None:
    result = fresh(
        f"HEAVY = {HEAVY!r}" + LOADED + "import holmespy, json as j\n"
        "ours = sorted(m for m in sys.modules if m.startswith('holmespy'))\n"
        "print(j.dumps({'ours': ours}))",
        tmp_path,
    )
    assert result == {"ours": ["holmespy"]}


def test_a_started_watcher_ticks_and_stops_without_any_heavy_module(tmp_path: Path) -> None:
    # HOLMES_DUMP_PATH is set (by `fresh`): its Path waits for its first use too. The
    # flight recorder and the loop rule are on by default: the sampling thread's first
    # ticks count too.
    result = fresh(
        f"HEAVY = {HEAVY!r}" + LOADED + "import time, holmespy\n"
        "watcher = holmespy.start()\n"
        "stacks = watcher.stacks\n"
        "ticked = lambda: stacks.recorder is not None and stacks.recorder.ticks >= 2\n"
        "deadline = time.monotonic() + 30\n"
        "while (watcher.ticks < 1 or not ticked()) and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "heavy, sample = loaded(), watcher.last_sample\n"
        "status = stacks.status()\n"
        "holmespy.stop()  # what the exit does too (atexit)\n"
        "at_stop = loaded()\n"
        "import json\n"
        "print(json.dumps({'heavy': heavy, 'at_stop': at_stop, 'tasks': sample and sample.tasks,\n"
        "                  'loop': sample and sample.loop,\n"
        "                  'ticks': status['recorder']['ticks_held'],\n"
        "                  'watchdog': status['loop_watchdog']}))",
        tmp_path,
        # The first tick is at once, the next (and the dump folder's check, which
        # needs the bundle writer) an interval later: 5 s to look in between.
        HOLMES_INTERVAL="5s",
    )
    # No asyncio, so no task (counted as 0), no loop (the loop rule reads nothing) and no
    # watchdog yet; the recorder holds what it sampled.
    assert result == {
        "heavy": [],
        "at_stop": [],
        "tasks": 0,
        "loop": None,
        "ticks": result["ticks"],
        "watchdog": "waiting for asyncio",
    }
    assert isinstance(result["ticks"], int)
    assert result["ticks"] >= 2


def test_a_host_without_asyncio_never_has_it_imported_by_holmespy(tmp_path: Path) -> None:
    # One interval in, the watcher checks the dump folder with the bundle writer; that
    # must not pull in asyncio (through the "what this Python lacks" facts of an event),
    # or every sync server would get a loop watchdog and asyncio's import for nothing.
    result = fresh(
        "import sys, time, holmespy\n"
        "watcher = holmespy.start()\n"
        "deadline = time.monotonic() + 30\n"
        "while watcher.ticks < 3 and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "import json\n"
        "print(json.dumps({'ticks': watcher.ticks >= 3,\n"
        "                  'bundle': 'holmespy.bundle' in sys.modules,\n"
        "                  'asyncio': 'asyncio' in sys.modules,\n"
        "                  'watchdog': watcher.stacks.status()['loop_watchdog']}))",
        tmp_path,
        HOLMES_INTERVAL="1s",
    )
    assert result == {
        "ticks": True,
        "bundle": True,
        "asyncio": False,
        "watchdog": "waiting for asyncio",
    }


def test_the_loop_watchdog_is_made_once_the_host_imports_asyncio(tmp_path: Path) -> None:
    result = fresh(
        "import json, sys, threading, time, holmespy\n"
        "watcher = holmespy.start()\n"
        "stacks = watcher.stacks\n"
        "deadline = time.monotonic() + 30\n"
        "ticked = lambda: stacks.recorder is not None and stacks.recorder.ticks >= 2\n"
        "while not ticked() and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "before = 'holmespy.watchdog' in sys.modules, stacks.watchdog is not None\n"
        "import asyncio\n"
        "loop = asyncio.new_event_loop()\n"
        "threading.Thread(target=loop.run_forever, daemon=True).start()\n"
        "never = asyncio.Event()  # held: a task nothing refers to is collected\n"
        "asyncio.run_coroutine_threadsafe(never.wait(), loop)\n"
        "watcher.reconfigure(interval=0.01)  # the watcher finds loops on its ticks\n"
        "while (stacks.watchdog is None or stacks.watchdog.status()['loops'] < 1)"
        " and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "while watcher.last_sample.loop is None and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps({'before': before, 'loops': stacks.watchdog.status()['loops'],\n"
        "                  'loop': watcher.last_sample.loop}))",
        tmp_path,
        # One interval in, holmespy's own dump folder check imports the bundle writer,
        # which needs asyncio: an hour keeps this test's process free of it until then.
        HOLMES_INTERVAL="1h",
    )
    # Looked for at every wake-up of the sampling thread: found, and the rule reads 0
    # (the loop answers at once).
    assert result == {"before": [False, False], "loops": 1, "loop": 0.0}


def test_a_status_still_answers_as_a_dataclass(tmp_path: Path) -> None:
    # The Status dataclass is loaded when a status is first asked for, not at start.
    result = fresh(
        "import dataclasses, json, holmespy\n"
        "holmespy.start()\n"
        "status = dataclasses.asdict(holmespy.status())\n"
        "print(json.dumps({'running': status['running'], 'limits': sorted(status['limits'])}))",
        tmp_path,
    )
    assert result == {
        "running": True,
        "limits": ["cpu_cores", "cpu_source", "mem_bytes", "mem_source"],
    }


def test_tasks_are_counted_once_the_host_imports_asyncio(tmp_path: Path) -> None:
    result = fresh(
        "import json, threading, time, holmespy\n"
        "holmespy.start()\n"
        "time.sleep(0.1)  # ticks before asyncio exists\n"
        "import asyncio\n"
        "loop = asyncio.new_event_loop()\n"
        "threading.Thread(target=loop.run_forever, daemon=True).start()\n"
        "never = asyncio.Event()\n"
        "for _ in range(7):\n"
        "    asyncio.run_coroutine_threadsafe(never.wait(), loop)\n"
        "deadline = time.monotonic() + 30\n"
        "seen = 0\n"
        "while seen < 7 and time.monotonic() < deadline:\n"
        "    seen = (holmespy.status().last_sample or {}).get('tasks') or 0\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps({'tasks': seen}))",
        tmp_path,
        HOLMES_INTERVAL="10ms",
    )
    assert result == {"tasks": 7}


def test_the_default_dump_folder_is_where_tempfile_would_put_it(tmp_path: Path) -> None:
    writable = tmp_path / "tmp"
    writable.mkdir()
    for tmpdir in (str(writable), str(tmp_path / "missing"), ""):
        # temp_root() on its own (tempfile not imported), then tempfile's answer.
        result = fresh(
            "import json\n"
            "from holmespy.tempdir import temp_root\n"
            "ours = str(temp_root())\n"
            "import tempfile\n"
            "print(json.dumps({'ours': ours, 'tempfile': tempfile.gettempdir()}))",
            tmp_path,
            TMPDIR=tmpdir,
        )
        assert result["ours"] == result["tempfile"], tmpdir


def test_the_temp_folder_is_found_while_tempfiles_lock_is_held(tmp_path: Path) -> None:
    # As in a worker forked while a thread of its parent was inside tempfile's
    # first lookup: the lock is held for good, and tempfile's own answer was never
    # cached. A hang here is the run's timeout.
    result = fresh(
        "import json, tempfile\n"
        "from holmespy.tempdir import temp_root\n"
        "tempfile._once_lock.acquire()\n"
        "before = str(temp_root())\n"
        "tempfile.tempdir = '/nowhere/else'  # then the host chooses one\n"
        "print(json.dumps({'before': before, 'after': str(temp_root())}))",
        tmp_path,
        TMPDIR=str(tmp_path),
    )
    assert result == {"before": str(tmp_path), "after": "/nowhere/else"}


def test_log_records_before_logging_is_imported_go_nowhere_as_they_would_have(
    tmp_path: Path,
) -> None:
    result = fresh(
        "import json, sys\n"
        "from holmespy._log import log\n"
        "log.setLevel('DEBUG')\n"
        "log.warning('nobody could have configured a handler yet')\n"
        "before = 'logging' in sys.modules\n"
        "import logging\n"
        "enabled = log.isEnabledFor(logging.DEBUG)  # the first use after the import\n"
        "print(json.dumps({'before': before, 'enabled': enabled,\n"
        "                  'level': logging.getLogger('holmespy').level}))",
        tmp_path,
    )
    # The level asked for before is the real logger's from its first use on.
    assert result == {"before": False, "enabled": True, "level": logging.DEBUG}


def test_log_records_name_the_caller_not_the_wrapper(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="holmespy"):
        _log.log.info("tick took %d ms", 3)
    (record,) = [r for r in caplog.records if r.name == "holmespy"]
    assert record.getMessage() == "tick took 3 ms"
    assert record.funcName == "test_log_records_name_the_caller_not_the_wrapper"
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("holmespy").handlers)


def test_a_first_status_waits_for_an_import_on_a_holmespy_thread(tmp_path: Path) -> None:
    # `@dataclass` reads sys.modules["typing"]: made while a capture lane was
    # importing typing, the Status class met a half-made module ("partially
    # initialized module 'typing' has no attribute 'ClassVar'"). So a status
    # imports its class under the import guard the lanes import under: here
    # a lane holds it (as mid-import), and the status waits for it.
    result = fresh(
        "import json, sys, threading, holmespy\n"
        "from holmespy.lazyimport import importing\n"
        "holmespy.start()\n"
        "inside, release = threading.Event(), threading.Event()\n"
        "def lane():\n"
        "    with importing:\n"
        "        inside.set()\n"
        "        release.wait()\n"
        "threading.Thread(target=lane, daemon=True).start()\n"
        "inside.wait()\n"
        "got = []\n"
        "asker = threading.Thread(target=lambda: got.append(holmespy.status()), daemon=True)\n"
        "asker.start()\n"
        "asker.join(0.5)  # (a status that did not wait would be back by now, or later)\n"
        "during = {'answered': bool(got), 'loaded': 'holmespy.statusview' in sys.modules}\n"
        "release.set()\n"
        "asker.join(30)\n"
        "print(json.dumps({'during': during, 'after': got[0].running}))",
        tmp_path,
    )
    assert result == {"during": {"answered": False, "loaded": False}, "after": True}
