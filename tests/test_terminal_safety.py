"""Hostile names and strings on their way to an engineer's terminal.

Thread and task names are chosen by the host's code; every string of an
`event.json` and every object key by whoever could write the bundle or the
bucket. Each test plants one kind of attack where it would enter (a real
thread, a real task, a bundle written by the library's own writer) and
reads what holmespy prints or stores: no raw control, bidi or separator
character, the hostile part visible as an escape, and every count right.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import (
    as_json,
    clean_env,
    cli,
    cpu_profile,
    pprof,
    script,
    thread_files,
    write_bundle,
)

from holmespy.cli import ls, show
from holmespy.cli.dumps import task_groups, thread_groups
from holmespy.cli.events import Loaded
from holmespy.cli.source import EventRef
from holmespy.cli.text import SafeStream, table
from holmespy.formats.profile import Frame, Profile, ValueType
from holmespy.printable import printable, printable_lines
from holmespy.profilers.tasks import dump_tasks, render
from holmespy.profilers.threads import dump_threads, format_threads
from holmespy.taskdump import Link, TaskDump, TaskGroup
from tests.loop_thread import LoopThread

OSC52_CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4K\x07"
OSC0_TITLE = "\x1b]0;root@prod\x07"
CLEAR_SCREEN = "\x1b[2J\x1b[H"
C1_CSI = "\x9b31m"
BIDI_OVERRIDE = "\u202eexe.txt"
LINE_SEPARATOR = "a\u2028b\u2029c"
FORM_FEED = "page\fbreak\vtab"
NUL_BEL_DEL = "\x00\x07\x7f"
LONE_SURROGATE = "\udcff"
ATTACKS = {
    "osc52": OSC52_CLIPBOARD,
    "osc0": OSC0_TITLE,
    "clear": CLEAR_SCREEN,
    "c1": C1_CSI,
    "bidi": BIDI_OVERRIDE,
    "separators": LINE_SEPARATOR,
    "formfeed": FORM_FEED,
    "nul-bel-del": NUL_BEL_DEL,
    "surrogate": LONE_SURROGATE,
}


def raw_controls(text: str, *, keep: str = "\n") -> list[str]:
    """Characters of `text` a terminal would not just draw (line feeds aside)."""
    return sorted(
        {
            ch
            for ch in text
            if ch not in keep and not ch.isprintable() and unicodedata.category(ch) != "Zs"
        }
    )


# -- the one function --


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_each_attack_comes_out_visible_and_inert(attack: str) -> None:
    shown = printable(f"name-{attack}-end")

    assert raw_controls(shown, keep="") == []
    assert shown.startswith("name-")
    assert shown.endswith("-end")
    assert "\\" in shown  # the hostile part is there to see, not dropped


def test_the_escapes_are_spelled_as_python_spells_them() -> None:
    assert printable("\x1b[2J") == "\\x1b[2J"
    assert printable("\u202e") == "\\u202e"
    assert printable("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert printable("\U000e0041") == "\\U000e0041"  # a tag character (format, Cf)


def test_plain_names_and_spaces_of_any_script_are_kept() -> None:
    for name in ("MainThread", "worker-1 (pool)", "поток-1", "任务 7", "a\u00a0b", "naïve ✓"):
        assert printable(name) == name


def test_escaping_twice_changes_nothing_so_escaped_dumps_read_back_the_same() -> None:
    hostile = "".join(ATTACKS.values()) + "\\x1b literal"
    once = printable(hostile)
    assert printable(once) == once


def test_a_limit_bounds_the_width_even_of_escaped_text() -> None:
    assert printable("x" * 10_000, 120) == "x" * 119 + "…"
    assert len(printable("\x1b" * 10_000, 120)) == 120
    assert printable("short", 120) == "short"


def test_page_escaping_keeps_line_feeds_and_nothing_else() -> None:
    page = printable_lines(f"one\n{CLEAR_SCREEN}two\n{BIDI_OVERRIDE}")
    assert page.split("\n") == ["one", "\\x1b[2J\\x1b[Htwo", "\\u202eexe.txt"]


# -- where names are stored: the dumps --


def park(gate: threading.Event) -> None:
    gate.wait()


@pytest.fixture
def hostile_threads() -> Iterator[list[str]]:
    gate = threading.Event()
    names = [f"t-{key}-{attack}" for key, attack in ATTACKS.items()]
    threads = [threading.Thread(target=park, args=(gate,), name=n, daemon=True) for n in names]
    for t in threads:
        t.start()
    try:
        yield names
    finally:
        gate.set()
        for t in threads:
            t.join(5)


def test_hostile_thread_names_are_stored_escaped_in_threads_txt(
    hostile_threads: list[str],
) -> None:
    dump, data = dump_threads()

    assert data is not None
    assert raw_controls(dump) == []
    assert raw_controls(as_json(data).decode()) == []
    for name in hostile_threads:
        assert f'Thread "{printable(name)}"' in dump
    # Every thread is counted once, whatever its name holds.
    parked = [g for g in thread_groups(data) if any(n.startswith("t-") for n in g.names)]
    assert sum(g.count for g in parked) == len(ATTACKS)


async def wait_forever() -> None:
    await asyncio.sleep(3600)


def test_hostile_task_names_are_stored_escaped_in_tasks_txt() -> None:
    with LoopThread("serving") as loop:
        for key, attack in ATTACKS.items():
            loop.spawn(wait_forever(), name=f"task-{key}-{attack}")
        loop.settle()
        data = dump_tasks()
    dump = render(data)

    assert raw_controls(dump) == []
    assert raw_controls(as_json(data).decode()) == []
    assert printable(f"task-osc52-{OSC52_CLIPBOARD}") in dump
    [group] = [g for g in task_groups(data) if any("wait_forever" in f for f in g.frames)]
    assert group.count == len(ATTACKS)


def test_code_compiled_under_a_hostile_name_is_stored_escaped() -> None:
    namespace: dict[str, object] = {}
    code = compile("def handler(gate):\n    gate.wait()\n", f"/srv/{CLEAR_SCREEN}.py", "exec")
    exec(code, namespace)
    gate = threading.Event()
    thread = threading.Thread(target=namespace["handler"], args=(gate,), daemon=True)  # type: ignore[arg-type]
    thread.start()
    try:
        dump = format_threads()
    finally:
        gate.set()
        thread.join(5)
    assert raw_controls(dump) == []
    assert "/srv/\\x1b[2J\\x1b[H.py" in dump


def test_a_form_feed_in_an_old_unescaped_dump_stays_inside_its_line(tmp_path: Path) -> None:
    # As an older holmespy (or a forger) wrote it: names raw, form feeds and
    # U+2028 inside them, which str.splitlines() would treat as line breaks.
    dump = "\n".join(
        [
            "holmespy thread dump: pid 1, 3 threads",
            'Thread "a\fb" ident=1 native_id=1 daemon=True',
            'Thread "c\u2028Thread "forged" ident=9" ident=2 native_id=2 daemon=True',
            'Thread "d\x1c\x1d\x1e\x85" ident=3 native_id=3 daemon=True',
        ]
    )
    folder = write_bundle(tmp_path, rule="thread", files={"threads.txt": dump.encode()})

    text = show.render(folder, "here")

    assert raw_controls(text) == []
    shown = text[text.index("── threads.txt") :].split("\n")[1:]
    assert shown == [
        "  holmespy thread dump: pid 1, 3 threads",
        '  Thread "a\\x0cb" ident=1 native_id=1 daemon=True',
        '  Thread "c\\u2028Thread "forged" ident=9" ident=2 native_id=2 daemon=True',
        '  Thread "d\\x1c\\x1d\\x1e\\x85" ident=3 native_id=3 daemon=True',
    ]


def test_a_form_feed_in_a_task_name_cannot_change_the_counts(tmp_path: Path) -> None:
    forged = TaskDump(
        pid=1,
        time="2026-01-01T00:00:00.000Z",
        python="cpython 3.11",
        total=2,
        groups=(
            TaskGroup(
                count=2,
                chain=(Link("wait_forever", "app.py", 3),),
                loops=((1, 2),),
                tasks=(("x\f[2] 999 tasks on loop 1", "pending"), ("y", "pending")),
            ),
        ),
    )
    folder = write_bundle(
        tmp_path, rule="task", files={"tasks.txt": b"", "tasks.json": as_json(forged)}
    )

    text = show.render(folder, "here")

    assert raw_controls(text) == []
    assert "2 tasks in 1 group of identical await chains" in text
    assert "x\\x0c[2] 999 tasks on loop 1 (pending)" in text
    assert "999 tasks  " not in text


# -- where they are printed: show, ls -l, top, errors --


def hostile_event_fields() -> dict[str, object]:
    return {
        "host": f"web-{OSC0_TITLE}",
        "reason": f"spike {CLEAR_SCREEN}{OSC52_CLIPBOARD}",
        "service": f"checkout{BIDI_OVERRIDE}",
        "versions": {"python": f"3.11{C1_CSI}", "holmespy": LINE_SEPARATOR},
        "captures": {"cpu": {"error": f"failed {NUL_BEL_DEL}"}},
        "limits": {"cpu_cores": 2, "cpu_source": FORM_FEED, "mem_source": LONE_SURROGATE},
    }


def test_show_prints_no_raw_control_character_from_a_hostile_bundle(
    tmp_path: Path, hostile_threads: list[str]
) -> None:
    profile = Profile((ValueType("cpu", "nanoseconds"),))
    profile.add((Frame(f"evil{OSC52_CLIPBOARD}", f"/x/{BIDI_OVERRIDE}.py", 3),), (10**9,))
    folder = write_bundle(
        tmp_path,
        rule="thread",
        files={**thread_files(), "cpu.pb.gz": pprof(profile)},
        **hostile_event_fields(),
    )

    text = show.render(folder, f"{tmp_path}/{CLEAR_SCREEN}")

    assert raw_controls(text) == []
    assert "reason   spike \\x1b[2J\\x1b[H\\x1b]52;c;cm0gLXJmIH4K\\x07" in text
    assert "!! cpu capture failed: failed \\x00\\x07\\x7f" in text
    assert "evil\\x1b]52;c;" in text
    assert "threads.txt: " in text


def test_show_through_the_console_script_writes_only_inert_bytes(tmp_path: Path) -> None:
    # A dump as a forger would write it: raw escapes where names go.
    forged = (
        f'holmespy thread dump: pid 1, 1 thread\n\nThread "{OSC52_CLIPBOARD}" ident=1'
        f" native_id=1 daemon=False\n    park{CLEAR_SCREEN} (app.py:1)\n"
    ).encode()
    folder = write_bundle(
        tmp_path,
        rule="thread",
        files={"threads.txt": forged},
        **{
            "host": f"web-{OSC0_TITLE}",
            "reason": f"spike {CLEAR_SCREEN}",
        },
    )

    result = script("show", str(folder), env=clean_env())

    assert result.code == 0, result.err
    assert raw_controls(result.out) == []
    assert "threads.txt: as written (no threads.json" in result.out
    assert "\\x1b]52;c;cm0gLXJmIH4K\\x07" in result.out


def test_ls_long_keeps_one_row_per_event_whatever_its_event_json_says(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    refs, details = [], {}
    for n, attack in enumerate(ATTACKS.values()):
        ref = EventRef("checkout", now.strftime("%Y-%m-%d"), f"20260101T00000{n}.000Z-cpu-abc")
        refs.append(ref)
        event = {
            "host": f"h{attack}",
            "pid": attack,
            "value": 12,
            "unit": attack,
            "files": [{"name": f"cpu{attack}.pb.gz"}, {"name": "x" * 10_000}],
        }
        details[ref] = Loaded(ref, event)

    text = ls.render_table(refs, now, details)

    assert raw_controls(text) == []
    lines = text.split("\n")
    assert len(lines) == 1 + len(ATTACKS)
    assert max(len(line) for line in lines) < 1000  # a 10,000-character name is cut


def test_table_cells_are_escaped_and_bounded() -> None:
    text = table([["NAME", "N"], [f"a{CLEAR_SCREEN}\nb", "1"], ["y" * 5000, "2"]])

    assert raw_controls(text) == []
    assert len(text.split("\n")) == 3
    assert "a\\x1b[2J\\x1b[H\\nb" in text


def test_top_escapes_function_and_file_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    profile = cpu_profile({("main", f"evil{OSC0_TITLE}"): 10**9})
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(pprof(profile))

    result = cli(capsys, "top", str(path))

    assert result.code == 0, result.err
    assert raw_controls(result.out) == []
    assert "evil\\x1b]0;root@prod\\x07" in result.out


def test_an_error_quoting_a_hostile_name_is_one_escaped_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = cli(capsys, "top", str(tmp_path / f"no{CLEAR_SCREEN}\nsuch.pb.gz"))

    assert result.code == 1
    assert raw_controls(result.err) == []
    assert len(result.err.strip().split("\n")) == 1
    assert "no\\x1b[2J\\x1b[H\\nsuch.pb.gz" in result.err


def test_the_stdout_net_escapes_what_a_verb_forgot() -> None:
    written: list[str] = []

    class Sink:
        def write(self, text: str) -> int:
            written.append(text)
            return len(text)

    stream = SafeStream(Sink())  # type: ignore[arg-type]
    stream.write(f"ok\n{OSC52_CLIPBOARD}\n")

    assert "".join(written) == "ok\n\\x1b]52;c;cm0gLXJmIH4K\\x07\n"
