"""What the proxy benchmarks share: start the example proxy and its upstream, drive
load (wrk, or the example's paced client), and read CPU time from /proc.

Everything listens on and talks to 127.0.0.1 only. Processes are started on
free ports (`--port 0`, the port read back from their first line of output)
and stopped by their own pid.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.outcome import NotMeasured, NotSteady

ROOT = Path(__file__).resolve().parent.parent
PROXY_DIR = ROOT / "examples" / "proxy"
HOLMESPY_THREADS = ("holmespy-watcher", "holmespy-capture", "holmespy-window", "holmespy-recorder")
"""Every thread holmespy may run: its idle cost is all of theirs (the recorder's thread too)."""
CAPTURE_THREAD = "holmespy-capture"
"""Busy only while a capture runs: a window in which it used CPU was not idle."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


class RigError(NotMeasured):
    """The rig could not give a benchmark what it measures (a server, wrk, an answer)."""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # e.g. a loop blocked by the `block` fault
                self.proc.wait(5)


def clean_env(**holmes: str) -> dict[str, str]:
    """This environment without any HOLMES_* of the caller's, plus `holmes`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLMES_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.update(holmes)
    return env


def spawn(name: str, script: str, args: list[str], env: dict[str, str], logdir: Path) -> Server:
    log = logdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(PROXY_DIR / script), "--port", "0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=logdir,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", log.read_bytes())
        if m:
            return Server(name, proc, int(m.group(1)), log)
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    raise RigError(f"{name} did not start:\n{log.read_text(errors='replace')}")


def start_reporting(
    module_args: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[str], Any]:
    """Start `python -m <module_args>`, a host that prints one JSON line when ready and
    then one per report; returns the process and that first line, parsed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *module_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    first = proc.stdout.readline() if proc.stdout else ""
    if not first:
        proc.kill()
        raise RigError(f"{module_args[0]} did not start")
    return proc, json.loads(first)


def start_upstream(logdir: Path) -> Server:
    return spawn("upstream", "upstream.py", [], clean_env(), logdir)


def start_proxy(logdir: Path, upstream: Server, name: str = "proxy", **holmes: str) -> Server:
    env = clean_env(**holmes)
    return spawn(name, "proxy.py", ["--upstream", f"127.0.0.1:{upstream.port}"], env, logdir)


ADMIN_TIMEOUT = 30.0
"""Seconds one admin call may take: a capture request waits for a tick, on a loaded machine."""
ADMIN_ATTEMPTS = 4
ADMIN_BACKOFF = 0.5
"""Seconds before the second attempt, doubled for each next one."""

# What a loaded machine does to a local HTTP call now and then: a full accept
# queue, a reset, a slow answer. Not a 4xx/5xx answer: that is the server's word.
_TRANSIENT = (ConnectionError, TimeoutError, http.client.HTTPException)


def request(
    server: Server,
    path: str,
    method: str = "GET",
    timeout: float = ADMIN_TIMEOUT,
    attempts: int = ADMIN_ATTEMPTS,
    idempotent: bool | None = None,
) -> Any:
    """One admin call, retried with backoff while the connection fails, never on an answer.

    A call that is not idempotent (by default: any POST but the fault
    switches, which only set a state) is retried only when the request never
    reached the server: a lost answer to `/_admin/capture/cpu` must not ask
    for a second capture. Raises RigError with the server's last log lines.
    """
    if idempotent is None:
        idempotent = method == "GET" or path.startswith(("/_admin/fail/", "/_admin/heal"))
    last: Exception | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(ADMIN_BACKOFF * 2 ** (attempt - 1))
        if server.proc.poll() is not None:
            break
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
        sent = False
        try:
            conn.connect()
            sent = True  # from here on the server may have the request, whole or in part
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
        except _TRANSIENT as exc:
            last = exc
            if sent and not idempotent:
                break
            continue
        finally:
            conn.close()
        if response.status != 200:
            raise RigError(f"{server.name}: {method} {path}: {response.status} {body[:300]!r}")
        return json.loads(body)
    state = "exited" if server.proc.poll() is not None else "running"
    why = f"{type(last).__name__}: {last}" if last is not None else "the server is gone"
    raise RigError(
        f"{server.name} ({state}): {method} {path} failed: {why}\n"
        f"last lines of {server.log}:\n{log_tail(server.log)}"
    )


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def status(server: Server) -> dict[str, Any]:
    result: dict[str, Any] = request(server, "/_admin/status")
    return result


def wait_ticks(server: Server, ticks: int, timeout: float) -> dict[str, Any]:
    """Wait until holmespy in `server` has ticked `ticks` times (its rules are warm)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(server)
        if st["holmespy"]["ticks"] >= ticks:
            return st
        if time.monotonic() > deadline:
            raise NotSteady(
                f"{server.name}: rules not warm: only {st['holmespy']['ticks']} of {ticks} "
                f"watcher ticks in {timeout:g} s (machine too loaded?)"
            )
        time.sleep(0.25)


def holmespy_tids(server: Server) -> list[int]:
    """Native ids of holmespy's threads alive now, in `HOLMESPY_THREADS` order.

    The capture lanes start with the first event: read them after one.
    """
    return list(holmespy_threads(server).values())


def holmespy_threads(server: Server) -> dict[str, int]:
    """holmespy's threads alive now, name -> native id, in `HOLMESPY_THREADS` order."""
    by_name = {t["name"]: t["native_id"] for t in status(server)["threads"]}
    return {name: by_name[name] for name in HOLMESPY_THREADS if name in by_name}


def thread_sched_ns(pid: int, tid: int) -> tuple[int, int]:
    """(on-CPU, waiting for a core) time of one thread of another process, in ns.

    schedstat counts in nanoseconds; stat's utime+stime only in clock ticks
    (10 ms), far too coarse for a thread that runs for microseconds a second,
    and it has no run-queue wait (0 then). (0, 0) once the thread has exited.
    """
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/schedstat") as f:
            run, wait = f.read().split()[:2]
        return int(run), int(wait)
    except (OSError, ValueError):
        pass
    try:
        with open(f"{base}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK_TCK, 0
    except (OSError, ValueError, IndexError):
        return 0, 0


def thread_cpu_ns(pid: int, tid: int) -> int:
    return thread_sched_ns(pid, tid)[0]


def reaped_children_cpu_s(pid: int) -> float:
    """CPU seconds of the children `pid` has waited for (stat's cutime + cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def process_cpu_s(pid: int) -> float:
    """CPU seconds of every thread of a process so far (stat's utime + stime), 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_cpu_s() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, summed over its cores."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # guest time is already counted in user
    return busy / CLK_TCK, idle / CLK_TCK


def cpu_clock_source() -> str:
    return "schedstat (ns)" if os.path.exists("/proc/self/schedstat") else "stat (clock ticks)"


class CpuWindow:
    """CPU time of some threads of a process over a wall-clock window."""

    def __init__(self, pid: int, tids: list[int]) -> None:
        self.pid, self.tids = pid, tids
        self.wall0 = time.perf_counter()
        self.sched0 = [thread_sched_ns(pid, t) for t in tids]

    def close(self) -> tuple[float, list[float]]:
        """(wall seconds, on-CPU seconds per thread) since the window opened."""
        wall, run, _ = self.close_with_waits()
        return wall, run

    def close_with_waits(self) -> tuple[float, list[float], list[float]]:
        """(wall s, on-CPU s per thread, s per thread spent runnable but waiting for a core)."""
        sched = [thread_sched_ns(self.pid, t) for t in self.tids]
        wall = time.perf_counter() - self.wall0
        run = [(b[0] - a[0]) / 1e9 for a, b in zip(self.sched0, sched, strict=True)]
        wait = [(b[1] - a[1]) / 1e9 for a, b in zip(self.sched0, sched, strict=True)]
        return wall, run, wait


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RigError(
            "wrk is not installed: run scripts/install-bench-deps "
            "(Debian/Ubuntu: apt-get install wrk)"
        )
    return path


def start_wrk(url: str, seconds: int, connections: int = 8) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [wrk_path(), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def finish_wrk(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, float]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise RigError(f"wrk did not finish within {timeout:g} s") from None
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if proc.returncode != 0 or rps is None:
        raise RigError(f"wrk failed ({proc.returncode}):\n{out}")
    result = {"rps": float(rps.group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if m:
            result[f"p{pct}_ms"] = float(m.group(1)) * _UNITS[m.group(2)]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(
        (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    )
    return result


def start_paced_load(url: str, rate: float, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(PROXY_DIR / "load.py"),
            url,
            f"--rate={rate}",
            f"--duration={seconds}",
            "--connections=4",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The mean of two baseline measurements taken either side of a test one.

    Against the mean of its two neighbours, a test window is compared with
    what the machine did around it: a drift in speed over the three cancels
    to first order, where a single neighbour would carry all of it.
    """
    return {
        k: (v + after[k]) / 2
        for k, v in before.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and isinstance(after.get(k), int | float)
    }


def events(dump_path: Path) -> list[dict[str, Any]]:
    """Every published event under a dump folder (temp folders being written are skipped)."""
    found = []
    for path in dump_path.glob("*/*/*/event.json"):
        if path.parent.name.startswith("."):
            continue
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # published atomically, so only a folder removed meanwhile
        event["_path"] = str(path.parent)
        found.append(event)
    return sorted(found, key=lambda e: str(e.get("id")))
