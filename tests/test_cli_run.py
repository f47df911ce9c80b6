"""`holmespy run -- CMD`: the watcher inside a program that never imports holmespy."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_support import clean_env, cli, script

LEAKY = """\
import os, sys, threading, time

print("pid", os.getpid(), flush=True)
never = threading.Event()
for n in range(40):
    threading.Thread(target=never.wait, name=f"leaked-{n}", daemon=True).start()
time.sleep(2)
sys.exit(3)
"""


# holmespy starts in a process under `run` once it has lived a moment (at most 1 s).
WAIT_FOR_HOLMESPY = """\
import os, sys, time

def watching():
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        holmespy = sys.modules.get("holmespy")
        if holmespy is not None and hasattr(holmespy, "status") and holmespy.status().running:
            return holmespy.status().pid == os.getpid()
        time.sleep(0.02)
    return False

"""


def test_a_thread_leak_in_an_unmodified_program_produces_an_event(tmp_path):
    program = tmp_path / "leaky.py"
    program.write_text(LEAKY)
    dumps = tmp_path / "dumps"
    env = clean_env(
        HOLMES_DUMP_PATH=str(dumps),
        HOLMES_SERVICE="leaky",
        HOLMES_INTERVAL="100ms",
        HOLMES_THREAD="min=10,diff=25,abs=30,cooldown=1m",
    )

    result = script("run", "--", sys.executable, str(program), env=env)

    assert result.code == 3, result.err  # the program's own exit status
    pid = int(result.out.split()[1])
    (event_file,) = dumps.glob("leaky/*/*-thread-*/event.json")
    event = json.loads(event_file.read_text())
    assert event["pid"] == pid
    # The tick may land while the 40 threads are still being started: it fires
    # once more than abs=30 exist, and the dump, a moment later, has at least those.
    assert event["value"] > 30
    shown = script("show", "--latest", "--from", str(dumps), env=clean_env())
    assert shown.code == 0, shown.err
    leaked = re.search(r"(\d+) threads  leaked-", shown.out)
    assert leaked, shown.out
    # Less main and holmespy's own: its watcher, capture lane and recorder, and
    # while a CPU window runs (the default cpu rule may fire on a loaded machine)
    # its window lane and the sampler alongside py-spy.
    assert event["value"] - 7 <= int(leaked.group(1)) <= 40


def test_an_existing_sitecustomize_still_runs_and_env_passes_through(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\nos.environ['FROM_THEIR_SITECUSTOMIZE'] = 'yes'\n"
    )
    report = tmp_path / "report.json"
    program = tmp_path / "report.py"
    program.write_text(
        WAIT_FOR_HOLMESPY + "import json, os, sys\n"
        "json.dump({'theirs': os.environ.get('FROM_THEIR_SITECUSTOMIZE'),\n"
        "           'mine': os.environ.get('MY_SETTING'),\n"
        "           'watching': watching(),\n"
        "           'path': os.environ['PYTHONPATH']}, open(sys.argv[1], 'w'))\n"
    )
    env = clean_env(
        PYTHONPATH=str(site),
        MY_SETTING="kept",
        HOLMES_DUMP_PATH=str(tmp_path / "dumps"),
    )

    result = script("run", "--", sys.executable, str(program), str(report), env=env)

    assert result.code == 0, result.err
    seen = json.loads(report.read_text())
    assert seen["theirs"] == "yes"
    assert seen["mine"] == "kept"
    assert seen["watching"] is True
    assert seen["path"].endswith(os.pathsep + str(site))


def test_a_bad_setting_stops_before_the_command_runs(capsys, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("HOLMES_INTERVAL", "5")

    result = cli(capsys, "run", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")

    assert result.code == 2
    assert result.err.strip() == (
        "holmespy: HOLMES_INTERVAL='5' is invalid: expected a duration such as 500ms, 5s, 1m,"
        " 1h or 1m30s"
    )
    assert not marker.exists()


def test_exit_status_and_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOLMES_DUMP_PATH", str(tmp_path / "dumps"))

    assert script("run", "--", sys.executable, "-c", "raise SystemExit(7)").code == 7
    missing = cli(capsys, "run", "--", "no-such-program-here")
    assert missing.code == 1
    assert missing.err.strip() == "holmespy: no-such-program-here: command not found"
    empty = cli(capsys, "run")
    assert empty.code == 2
    assert "run needs a command" in empty.err


def test_sigterm_reaches_the_command(tmp_path):
    holmespy = Path(sys.executable).parent / "holmespy"
    ready = tmp_path / "ready"
    program = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    env = clean_env(HOLMES_DUMP_PATH=str(tmp_path / "dumps"))
    proc = subprocess.Popen(
        [str(holmespy), "run", "--", sys.executable, "-c", program],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the command did not start"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 42
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


COUNT_SIGTERMS = """
import os, pathlib, signal, sys, time
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append(1))
pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))
while not got:
    time.sleep(0.01)
time.sleep(1)  # a graceful shutdown: a second SIGTERM would arrive now
print(len(got), flush=True)
"""


def test_a_sigterm_to_the_whole_process_group_arrives_once(tmp_path):
    # systemd's KillMode=control-group, or `kill -TERM -PGID`: every process of
    # the group gets it. A forwarding parent sent the command a second one.
    holmespy = Path(sys.executable).parent / "holmespy"
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [str(holmespy), "run", "--", sys.executable, "-c", COUNT_SIGTERMS, str(ready)],
        env=clean_env(HOLMES_DUMP_PATH=str(tmp_path / "dumps"), HOLMES_LOG_LEVEL="WARNING"),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text():
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.05)
        assert int(ready.read_text()) == proc.pid  # run became the command: same pid
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.strip() == "1"


def test_the_injection_folder_is_reused_only_when_it_is_ours(tmp_path):
    from holmespy.cli.run import injection_folder, sitecustomize_text

    first = injection_folder(tmp_path)
    assert first.parent == tmp_path / "holmespy"
    assert (first / "sitecustomize.py").read_text() == sitecustomize_text()
    assert injection_folder(tmp_path) == first  # the same text: the same folder

    # Someone put their own sitecustomize where ours goes: replaced, never run.
    (first / "sitecustomize.py").chmod(0o600)
    (first / "sitecustomize.py").write_text("import os; os.system('evil')\n")
    again = injection_folder(tmp_path)
    assert (again / "sitecustomize.py").read_text() == sitecustomize_text()
    # A folder others may write to is not ours either.
    again.chmod(0o777)
    third = injection_folder(tmp_path)
    assert third.stat().st_mode & 0o077 == 0


def test_an_interpreter_without_holmespy_gets_it_from_where_run_came_from(tmp_path):
    base = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    if not base.exists() or sys.base_prefix == sys.prefix:
        pytest.skip("needs a virtualenv whose base interpreter lacks holmespy")
    probe = subprocess.run([str(base), "-c", "import holmespy"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip(f"{base} has holmespy installed itself")
    program = WAIT_FOR_HOLMESPY + "watching(); print(sys.modules['holmespy'].__file__)"

    result = script(
        "run", "--", str(base), "-c", program, env=clean_env(HOLMES_DUMP_PATH=str(tmp_path))
    )

    assert result.code == 0, result.err
    assert Path(result.out.strip()).parent.parent == Path(__file__).parent.parent / "src"


def test_a_process_shorter_than_the_warm_up_never_loads_holmespy(tmp_path):
    # It could never have had an event (no rule fires before 10 samples): it
    # pays nothing for holmespy, as a shell script's short helpers must not.
    program = "import sys; print('holmespy' in sys.modules)"

    result = script(
        "run", "--", sys.executable, "-c", program, env=clean_env(HOLMES_DUMP_PATH=str(tmp_path))
    )

    assert result.code == 0, result.err
    assert result.out.strip() == "False"


def test_a_child_forked_before_holmespy_started_is_watched_too(tmp_path):
    report = tmp_path / "report"
    program = WAIT_FOR_HOLMESPY + (
        "pid = os.fork()\n"
        "ok = watching()\n"
        "with open(sys.argv[1], 'a') as out:\n"
        '    out.write(f\'{"child" if pid == 0 else "parent"} {ok}\\n\')\n'
        "if pid: os.waitpid(pid, 0)\n"
    )

    result = script(
        "run",
        "--",
        sys.executable,
        "-c",
        program,
        str(report),
        env=clean_env(HOLMES_DUMP_PATH=str(tmp_path / "dumps")),
    )

    assert result.code == 0, result.err
    assert sorted(report.read_text().splitlines()) == ["child True", "parent True"]


@pytest.mark.parametrize(("interval", "delay"), [(5.0, 1.0), (0.05, 0.5), (0.001, 0.01)])
def test_holmespy_starts_within_the_rules_warm_up_and_at_most_a_second_late(
    interval: float, delay: float
) -> None:
    from holmespy.cli.run import start_delay
    from holmespy.config import Config

    assert start_delay(Config(interval=interval)) == pytest.approx(delay)


def test_a_fork_waits_for_holmespy_being_imported_on_its_thread(tmp_path):
    # A fork in the middle of another thread's import leaves the child with
    # module locks held by a thread it does not have (it would hang importing
    # those modules): the fork waits for the import. A stand-in holmespy whose
    # import takes a second makes the moment certain.
    log = tmp_path / "order.log"
    fake = tmp_path / "fake" / "holmespy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import time\n"
        f"open({str(log)!r}, 'a').write('import started\\n')\n"
        "time.sleep(1.0)\n"
        f"open({str(log)!r}, 'a').write('import done\\n')\n"
        "def start():\n"
        "    pass\n"
    )
    program = (
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(fake.parent)!r})  # before holmespy starts, a second later\n"
        "log = sys.argv[1]\n"
        "deadline = time.monotonic() + 20\n"
        "while 'started' not in open(log).read() and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "open(log, 'a').write('forked\\n')\n"
        "os.waitpid(pid, 0)\n"
    )
    log.write_text("")
    env = clean_env(HOLMES_DUMP_PATH=str(tmp_path / "dumps"))

    result = script("run", "--", sys.executable, "-c", program, str(log), env=env)

    assert result.code == 0, result.err
    assert log.read_text().splitlines() == ["import started", "import done", "forked"]


# The site's own sitecustomize (run first by ours) makes the delayed start wait,
# once it has imported holmespy.storage.uploader (HOLMES_STORAGE), right before
# Uploader.start(): between two of start()'s guarded imports.
HOLD_THE_DELAYED_START = """\\
import importlib.abc, importlib.machinery, sys, threading

MAIN = threading.get_ident()
entered, release = threading.Event(), threading.Event()


class Patched(importlib.abc.Loader):
    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        self.real.exec_module(module)
        start = module.Uploader.start

        def held_start(uploader):
            entered.set()
            release.wait()
            return start(uploader)

        module.Uploader.start = held_start


class PatchUploader(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "holmespy.storage.uploader" or threading.get_ident() == MAIN:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        spec.loader = Patched(spec.loader)
        return spec


sys.meta_path.insert(0, PatchUploader())
sys.modules["held_import"] = sys.modules[__name__]
"""

FORK_DURING_THE_DELAYED_START = """\
import faulthandler, os, sys, threading, time
import held_import

faulthandler.dump_traceback_later(30, exit=True)  # a deadlock: the stacks, then exit 1
assert held_import.entered.wait(30), "holmespy never started"
main = threading.get_ident()


def release_once_the_fork_waits():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code.co_filename.endswith(
            ("lazyimport.py", "sitecustomize.py")
        ):
            break
        time.sleep(0.001)
    held_import.release.set()


threading.Thread(target=release_once_the_fork_waits, daemon=True).start()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
deadline = time.monotonic() + 30
while not sys.modules["holmespy"].status().running and time.monotonic() < deadline:
    time.sleep(0.02)
from holmespy.lazyimport import importing

print("forked; watching:", sys.modules["holmespy"].status().running, end="; ")
print("forks that gave up waiting:", importing.forks_not_waited)
"""


def test_a_fork_while_the_delayed_start_runs_start_does_not_deadlock(tmp_path):
    # The fork takes holmespy's import guard (its hook is the newer), then waits for
    # the delayed start's own lock: had that thread held its lock, and not the guard,
    # through start(), whose next guarded import waits for the guard, neither would
    # ever go on.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HOLD_THE_DELAYED_START)
    program = tmp_path / "fork.py"
    program.write_text(FORK_DURING_THE_DELAYED_START)
    env = clean_env(
        PYTHONPATH=str(site),
        HOLMES_DUMP_PATH=str(tmp_path / "dumps"),
        HOLMES_INTERVAL="10ms",  # holmespy starts 0.1 s in
        HOLMES_STORAGE="s3://bucket/prefix",
        AWS_ENDPOINT_URL_S3="http://127.0.0.1:9",  # nothing listens: uploads only fail
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )

    result = script("run", "--", sys.executable, str(program), env=env)

    assert result.code == 0, result.err
    expected = "forked; watching: True; forks that gave up waiting: 0"
    assert result.out.strip().endswith(expected), result.out + result.err
