"""The dump folder is holmespy's own, or it is not used (issue 11, item 1).

Each test plants what another local user could plant where holmespy
writes: a link instead of the root, the service or the day folder; a root
that another user created, or that anyone can write. holmespy must refuse,
write nothing through it, say what to do, and keep the host running. The
last tests run real processes: one with a squatted default folder, and a
prefork master whose worker drops to another user, as gunicorn --preload
--user does.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_cli_support import cli

import holmespy
from holmespy import Config, Rule
from holmespy.bundle import BundleWriter, new_event_id, write_private
from holmespy.safefs import Refused

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
ME = os.geteuid()
QUICK = Rule(min=0, diff=0, abs=0, cooldown=0)
ALTERNATIVE = "or set HOLMES_DUMP_PATH to a folder that only this user can write"
needs_root = pytest.mark.skipif(ME != 0, reason="acting as another user needs root")

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("holmes_stopped")]


def write_event(root: Path, service: str = "svc") -> Path:
    """One bundle, written as the watcher writes it (captures write through `directory`)."""
    event_id = new_event_id("thread")
    with BundleWriter(root, service, event_id) as bundle:
        write_private(bundle.directory / "threads.txt", b"stacks of the process")
        return bundle.publish({"id": event_id})


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """Where an attacker's links point: nothing may ever be written here."""
    folder = tmp_path / "attacker"
    folder.mkdir()
    return folder


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder like /tmp (1777, under /tmp so that every user can reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="holmespy-test-tmp-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# -- planted links --


def test_a_dump_root_planted_as_a_symlink_is_refused_not_followed(
    tmp_path: Path, elsewhere: Path
) -> None:
    root = tmp_path / "dumps"
    root.symlink_to(elsewhere)

    with pytest.raises(Refused) as refused:
        write_event(root)

    assert str(refused.value) == (
        f"refused {root}: it is a symbolic link, not a folder; remove it, {ALTERNATIVE}"
    )
    assert tree(elsewhere) == []


@pytest.mark.parametrize("level", ["service", "day"])
def test_a_service_or_day_folder_planted_as_a_symlink_is_refused_not_followed(
    tmp_path: Path, elsewhere: Path, level: str
) -> None:
    root = tmp_path / "dumps"
    first = write_event(root)  # the root, service and day folders exist and are fine
    planted = first.parent.parent if level == "service" else first.parent
    shutil.rmtree(planted)
    planted.symlink_to(elsewhere)

    with pytest.raises(Refused) as refused:
        write_event(root)

    assert str(refused.value).startswith(
        f"refused {planted}: it is a symbolic link, not a folder; remove it"
    )
    assert tree(elsewhere) == []


def test_a_temp_folder_of_a_bundle_is_made_by_the_writer_never_taken_over(
    tmp_path: Path, elsewhere: Path
) -> None:
    root = tmp_path / "dumps"
    write_event(root)
    event_id = new_event_id("thread")
    writer = BundleWriter(root, "svc", event_id)
    writer.temp.symlink_to(elsewhere)  # its name is guessable: pid and event id

    with pytest.raises(FileExistsError), writer:
        pass

    assert tree(elsewhere) == []


# -- roots that are not this user's alone --


def test_a_root_writable_by_others_is_refused_with_the_command_to_fix_it(tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    root.mkdir()
    root.chmod(0o777)

    with pytest.raises(Refused) as refused:
        write_event(root)

    assert str(refused.value) == (
        f"refused {root}: it is writable by group and others (mode 0777);"
        f" run `chmod go-w {root}` if what it holds is yours, {ALTERNATIVE}"
    )
    assert tree(root) == []


@needs_root
def test_a_foreign_0777_root_is_refused_naming_both_users(tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    root.mkdir()
    root.chmod(0o777)
    os.chown(root, NOBODY, NOBODY)

    with pytest.raises(Refused) as refused:
        write_event(root)

    assert f"it is owned by uid {NOBODY} (nobody), not by uid 0 (root)" in str(refused.value)
    assert tree(root) == []


def test_a_group_readable_root_of_this_user_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "dumps"
    root.mkdir(mode=0o750)
    root.chmod(0o750)  # a team that reads the dumps: nobody else can write

    folder = write_event(root)

    assert (folder / "threads.txt").read_bytes() == b"stacks of the process"


def test_missing_folders_up_to_the_root_are_made_0700_under_umask_000(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "dumps"
    old = os.umask(0)
    try:
        folder = write_event(root)
    finally:
        os.umask(old)

    made = [tmp_path / "a", tmp_path / "a" / "b", root, root / "svc", folder.parent, folder]
    assert [oct(stat.S_IMODE(p.stat().st_mode)) for p in made] == [oct(0o700)] * len(made)
    assert stat.S_IMODE((folder / "threads.txt").stat().st_mode) == 0o600


# -- the watcher says so, and keeps the host running --


def test_the_watcher_says_at_start_that_its_dump_folder_will_be_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "dumps"
    root.mkdir()
    root.chmod(0o777)
    quiet = {"cpu": None, "mem": None, "thread": None, "task": None, "gcheap": None}
    holmespy.start(Config(dump_path=root, service="unit", interval=0.01, **quiet))

    wait_for(lambda: "chmod go-w" in (holmespy.status().last_error or ""))

    assert holmespy.status().running
    said = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert said[0].getMessage() == (
        f"holmespy cannot write dumps: refused {root}: it is writable by group and others"
        f" (mode 0777); run `chmod go-w {root}` if what it holds is yours, {ALTERNATIVE}"
    )


def test_an_event_for_a_refused_folder_is_lost_loudly_and_written_nowhere(
    tmp_path: Path, elsewhere: Path
) -> None:
    root = tmp_path / "dumps"
    root.symlink_to(elsewhere)
    quiet = {"cpu": None, "mem": None, "task": None, "gcheap": None}
    holmespy.start(Config(dump_path=root, service="unit", interval=0.01, thread=QUICK, **quiet))

    wait_for(lambda: holmespy.status().capture_failures >= 1)

    assert holmespy.status().running
    assert "is a symbolic link" in (holmespy.status().last_error or "")
    holmespy.stop()
    assert tree(elsewhere) == []


SQUATTED = """
import json, logging, threading, time
import holmespy
logging.basicConfig()
holmespy.start()
never = threading.Event()
for n in range(30):
    threading.Thread(target=never.wait, daemon=True).start()
deadline = time.monotonic() + 30
while holmespy.status().capture_failures < 1 and time.monotonic() < deadline:
    time.sleep(0.05)
status = holmespy.status()
print(json.dumps({"failures": status.capture_failures, "error": status.last_error}))
"""


def holmes_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    return {**env, "PYTHONPATH": str(ROOT / "src"), **extra}


def test_a_squatted_default_folder_is_refused_by_a_real_process(
    shared_tmp: Path, elsewhere: Path
) -> None:
    squatted = shared_tmp / f"holmespy-{ME}"  # the default's name, taken first
    squatted.mkdir()
    squatted.chmod(0o777)
    (squatted / "app").symlink_to(elsewhere)
    if ME == 0:
        os.chown(squatted, NOBODY, NOBODY)
    env = holmes_env(
        TMPDIR=str(shared_tmp),
        HOLMES_SERVICE="app",
        HOLMES_INTERVAL="50ms",
        HOLMES_THREAD="min=10,diff=25,abs=20",
        HOLMES_CPU="off",
        HOLMES_MEM="off",
        HOLMES_GCHEAP="off",
    )

    proc = subprocess.run(
        [sys.executable, "-c", SQUATTED], env=env, capture_output=True, text=True, timeout=60
    )

    assert proc.returncode == 0, proc.stderr
    status = proc.stdout.strip().splitlines()[-1]
    assert '"failures": 1' in status
    assert f"refused {squatted}: it is" in status
    assert "holmespy cannot write dumps: refused" in proc.stderr  # said at start
    assert tree(elsewhere) == []


PREFORK_AS_NOBODY = """
import json, os, threading, time
import holmespy
import holmespy.profilers.threads, holmespy.storage.spool  # what a capture imports, read as root

holmespy.start()  # in the master, as root (gunicorn --preload)
pid = os.fork()
if pid == 0:
    # The worker drops privileges right after the fork, as gunicorn --user does.
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    never = threading.Event()
    for n in range(30):
        threading.Thread(target=never.wait, daemon=True).start()
    deadline = time.monotonic() + 30
    while holmespy.status().events < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = holmespy.status()
    print(json.dumps({"event": status.last_event, "error": status.last_error}), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


@needs_root
def test_a_prefork_worker_that_drops_to_another_user_writes_in_that_users_folder(
    shared_tmp: Path,
) -> None:
    env = holmes_env(
        TMPDIR=str(shared_tmp),
        HOLMES_SERVICE="web",
        HOLMES_INTERVAL="50ms",
        HOLMES_THREAD="min=10,diff=25,abs=20",
        HOLMES_CPU="off",
        HOLMES_MEM="off",
        HOLMES_GCHEAP="off",
    )

    proc = subprocess.run(
        [sys.executable, "-c", PREFORK_AS_NOBODY],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=shared_tmp,
    )

    assert proc.returncode == 0, proc.stderr
    worker = shared_tmp / f"holmespy-{NOBODY}"
    assert f'"event": "{worker}/web/' in proc.stdout, proc.stdout + proc.stderr
    st = worker.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)
    [event] = worker.glob("web/*/*/event.json")
    assert event.stat().st_uid == NOBODY
    assert not (shared_tmp / "holmespy-0").exists()  # the master never had to write


def test_the_cli_refuses_a_squatted_default_folder_unless_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, shared_tmp: Path
) -> None:
    for key in [k for k in os.environ if k.startswith("HOLMES_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    squatted = shared_tmp / f"holmespy-{ME}"
    squatted.mkdir()
    squatted.chmod(0o777)

    by_default = cli(capsys, "ls")
    named = cli(capsys, "ls", "--from", str(squatted))

    assert by_default.code == 1
    assert f"refused {squatted}: it is writable by group and others" in by_default.err
    assert f"read it anyway with --from {squatted}" in by_default.err
    assert named.code == 0, named.err


def test_a_config_given_no_dump_path_resolves_it_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = Config()
    monkeypatch.setattr(tempfile, "tempdir", "/somewhere")

    assert config.dump_path is None
    assert config.dump_root() == Path(f"/somewhere/holmespy-{ME}")
    assert config.describe()["HOLMES_DUMP_PATH"] == f"/somewhere/holmespy-{ME}"
