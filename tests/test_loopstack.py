"""Which loop a thread runs, read from its stack without importing asyncio; the loop a fork
was made inside, noted in the child before any watchdog exists."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from holmespy import loopstack
from tests.loop_thread import LoopThread

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def fresh(code: str) -> dict[str, object]:
    """Run `code` in a new interpreter; it ends by printing one JSON line, returned here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_the_loop_a_thread_runs_is_found_on_its_stack() -> None:
    with LoopThread("on-stack") as running:
        frame = sys._current_frames()[running.thread.ident]  # type: ignore[index]
        assert loopstack.loop_on_stack(frame) is running.loop
    assert loopstack.loop_on_stack(sys._getframe()) is None  # this thread runs none
    assert loopstack.loop_on_stack(None) is None


def test_asyncio_run_is_found_through_its_runner() -> None:
    found: list[object] = []

    async def main() -> None:
        found.append(loopstack.loop_on_stack(sys._getframe()))
        found.append(asyncio.get_running_loop())

    asyncio.run(main())
    assert found[0] is found[1]


def test_a_stack_deeper_than_the_walk_is_not_followed_to_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A runaway recursion inside a loop: the walk stops, it does not take a second per frame.
    monkeypatch.setattr(loopstack, "MAX_STACK_WALK", 50)
    seen: list[object] = []

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            seen.append(loopstack.loop_on_stack(sys._getframe()))

    async def main() -> None:
        deep(40)  # within the walk: found
        deep(60)  # past it: not

    asyncio.run(main())
    assert seen[0] is not None
    assert seen[1] is None


def test_a_fork_without_asyncio_notes_nothing_and_imports_nothing() -> None:
    result = fresh(
        "import json, os, sys\n"
        "from holmespy import loopstack  # as start-up imports it\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, json.dumps({'asyncio': 'asyncio' in sys.modules,\n"
        "                           'noted': len(loopstack._inherited)}).encode())\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(os.read(r, 1000).decode())"
    )
    assert result == {"asyncio": False, "noted": 0}


def test_a_child_forked_inside_a_loop_knows_that_loop_without_holmespys_loop_modules() -> None:
    result = fresh(
        "import asyncio, json, os, sys\n"
        "from holmespy import loopstack  # as start-up imports it\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    r, w = os.pipe()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            noted = [ref() for ref in loopstack.inherited_still_running().values()]\n"
        "            ours = sorted(m for m in ('holmespy.loops', 'holmespy.watchdog')\n"
        "                          if m in sys.modules)\n"
        "            os.write(w, json.dumps({'noted': noted == [loop], 'ours': ours}).encode())\n"
        "        finally:\n"
        "            os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "    return os.read(r, 1000).decode()\n"
        "print(asyncio.run(main()))"
    )
    assert result == {"noted": True, "ours": []}


def test_a_loop_that_cannot_say_whether_it_runs_is_not_running() -> None:
    class Broken:
        def is_running(self) -> bool:
            raise RuntimeError("closed underneath")

    assert not loopstack.is_running(Broken())
    assert not loopstack.is_running(object())
