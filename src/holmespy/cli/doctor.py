"""`holmespy doctor`: will holmespy work here, as configured? Each finding says what to do.

It checks what fails silently in production otherwise: the HOLMES_*
settings (as `start()` would read them), whether py-spy can attach to a
process here (tried for real, from a child Python that profiles itself the
way the watcher does), whether the dump folder is this user's alone (its
owner and mode are shown) and takes a file, and whether the storage answers
with the credentials at hand. Exit status 1 when a check failed, 0 when
there are at most warnings. Secrets are never printed:
the credentials are named by where they come from, and URLs lose their
user info and query.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from holmespy import __version__, safefs
from holmespy.bundle import describe_os_error, open_dump_root
from holmespy.cli.deadline import DEFAULT_TIMEOUT, Deadline, TimedOut
from holmespy.cli.run import PACKAGE_ROOT
from holmespy.cli.text import size
from holmespy.config import Config, default_dump_path
from holmespy.errors import ConfigError
from holmespy.storage.s3 import S3Store
from holmespy.storage.s3client import S3Location, StorageError, credential_source

Status = Literal["ok", "warn", "fail"]

PYSPY_TIMEOUT = 30.0
"""The child profiles itself for half a second; py-spy's start-up and a deadline come on top."""

_PYSPY_PROBE = """
import json
from holmespy.profilers.cpu import capture_cpu
capture = capture_cpu(0.5, engine="pyspy", margin=10)
facts = capture.facts.get("pyspy_attempt", capture.facts)
print(json.dumps({"engine": capture.engine, "why": capture.why, "ptrace": facts.get("ptrace")}))
"""

YAMA_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    todo: str = ""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check settings, py-spy, the dump folder and the storage",
        description="Check that holmespy can work here as configured;"
        " each finding says what to do.",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config, findings = check_config()
    findings.append(check_pyspy(config))
    findings.append(check_dump_path(config))
    findings.append(check_storage(config))
    failed = any(f.status == "fail" for f in findings)
    if args.json:
        json.dump([asdict(f) for f in findings], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 1 if failed else 0
    print(f"holmespy {__version__}, python {sys.version.split()[0]} ({sys.executable})")
    if config is not None:
        print("\neffective settings:")
        for name, value in config.describe().items():
            print(f"  {name:<28} {_public(name, value, os.environ.get(name))}")
    print()
    for f in findings:
        print(f"{f.status:<5} {f.check:<8} {f.detail}")
        if f.todo:
            print(f"{'':14}→ {f.todo}")
    return 1 if failed else 0


def check_config() -> tuple[Config | None, list[Finding]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = Config.from_env()
        except ConfigError as exc:
            return None, [Finding("config", "fail", str(exc), f"fix {exc.name}: {exc.expected}")]
    findings = [
        Finding("config", "warn", str(w.message), _config_todo(str(w.message))) for w in caught
    ]
    if not config.enable:
        findings.append(
            Finding(
                "config", "warn", "HOLMES_ENABLE=0: holmespy does nothing", "unset HOLMES_ENABLE"
            )
        )
    else:
        findings.append(
            Finding(
                "config",
                "ok",
                f"settings are valid (service {_service(config)}, every"
                f" {config.interval:g} s, CPU engine {config.cpu_engine})",
            )
        )
    return config, findings


def _config_todo(message: str) -> str:
    if message.startswith("HOLMES_ENABLE=0"):  # a malformed value, ignored by the kill switch
        return "fix it before holmespy is turned back on"
    return "remove or rename the variable"


def check_pyspy(config: Config | None) -> Finding:
    if config is not None and config.cpu_engine in ("sampler", "yappi"):
        return Finding("py-spy", "ok", f"not used: HOLMES_CPU_ENGINE={config.cpu_engine}")
    env = dict(os.environ)
    root = str(PACKAGE_ROOT)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PYSPY_PROBE],
            env=env,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=PYSPY_TIMEOUT,
            check=False,
        )
        result = json.loads(probe.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return Finding(
            "py-spy",
            "warn",
            f"the attach test did not finish in {PYSPY_TIMEOUT:.0f} s",
            "CPU profiles may fall back to the in-process sampler; run doctor again",
        )
    except (IndexError, ValueError, OSError) as exc:
        return Finding("py-spy", "warn", f"the attach test failed to run: {exc}", "")
    if result.get("engine") == "pyspy":
        ptrace = result.get("ptrace") or ""
        return Finding(
            "py-spy", "ok", f"py-spy attached to a test process ({ptrace})".replace(" ()", "")
        )
    why = str(result.get("why", "unknown reason"))
    if "not installed" in why:
        todo = "pip install 'holmespy[profile]'; until then CPU profiles come from the sampler"
    else:
        todo = _ptrace_todo()
    return Finding("py-spy", "warn", f"py-spy cannot profile here: {why}", todo)


def _ptrace_todo() -> str:
    fallback = "; until then CPU profiles come from the in-process sampler"
    try:
        scope = int(YAMA_SCOPE.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        scope = None
    if scope == 3:
        return "Yama ptrace_scope=3 forbids ptrace until reboot" + fallback
    if scope == 2:
        return "Yama ptrace_scope=2: give the process CAP_SYS_PTRACE" + fallback
    return (
        "allow ptrace in the container (docker run --cap-add SYS_PTRACE; Kubernetes:"
        " securityContext.capabilities.add [SYS_PTRACE])" + fallback
    )


def check_dump_path(config: Config | None) -> Finding:
    """The dump folder as the watcher would use it: created if missing, checked, written to."""
    folder = config.dump_root() if config is not None else _raw_dump_path()
    probe = f".holmespy-doctor-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = open_dump_root(folder, create=True)
        assert fd is not None  # created
        with safefs.owned(fd):
            safefs.write_file(fd, probe, b"holmespy doctor\n")
            os.unlink(probe, dir_fd=fd)
            st = os.fstat(fd)
            fs = os.fstatvfs(fd)
    except OSError as exc:
        # The description already ends with what to do.
        return Finding("dumps", "fail", describe_os_error(exc, folder))
    free = fs.f_bavail * fs.f_frsize
    default = " (the default for this user)" if "HOLMES_DUMP_PATH" not in os.environ else ""
    owner = f"owned by {safefs.user(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}"
    detail = f"{folder}{default} is writable: {owner}, {size(free)} free"
    if config is not None and free < config.spool_max:
        return Finding(
            "dumps",
            "warn",
            detail + f", less than HOLMES_SPOOL_MAX ({size(config.spool_max)})",
            "free disk space, or lower HOLMES_SPOOL_MAX",
        )
    return Finding("dumps", "ok", detail)


def _raw_dump_path() -> Path:
    raw = os.environ.get("HOLMES_DUMP_PATH")
    return Path(raw) if raw else default_dump_path()


def check_storage(config: Config | None) -> Finding:
    url = config.storage if config is not None else os.environ.get("HOLMES_STORAGE")
    if not url:
        return Finding("storage", "ok", "local only (HOLMES_STORAGE is not set)")
    try:
        store = S3Store(S3Location.parse(url), max_attempts=2)
        store.client  # noqa: B018 - made here: without the S3 extra installed, that is the finding
        creds = credential_source()
    except StorageError as exc:
        return Finding("storage", "fail", str(exc), "set HOLMES_STORAGE=s3://bucket/prefix")
    location = store.location
    deadline = Deadline(DEFAULT_TIMEOUT, store.endpoint)
    try:
        deadline.run(f"a listing of {location.url()}", store.check)
    except TimedOut as exc:
        return Finding(
            "storage", "fail", str(exc), "check that the store is up, and AWS_ENDPOINT_URL_S3"
        )
    except StorageError as exc:
        return Finding("storage", "fail", f"{exc} (credentials: {creds})", _storage_todo(exc))
    return Finding(
        "storage", "ok", f"{location.url()} answers at {store.endpoint} (credentials: {creds})"
    )


def _storage_todo(error: StorageError) -> str:
    # A permanent error's message already names the setting to fix.
    return "" if error.permanent else "check that the store is up, and AWS_ENDPOINT_URL_S3"


def _service(config: Config) -> str:
    if "HOLMES_SERVICE" in os.environ:
        return config.service
    return "from each program's script name"


def _public(name: str, value: str, given: str | None) -> str:
    """A setting as it may be shown (`describe()` already hides the webhook URL's user
    info, path and query); a default that depends on the program running says so
    rather than naming this one."""
    if name == "HOLMES_SERVICE" and given is None:
        return "(each program's script name)"
    return value
