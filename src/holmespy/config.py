"""Configuration: one declarative table of every `HOLMES_*` variable.

Each `Option` names its variable, the `Config` field it fills, its parser
(which is also its validator), its default and its help text; `Config.from_env`
walks the table, so adding a setting is one row. Parsing happens in `start()`,
never at import, and every error names the variable, the value and the
accepted form.
"""

from __future__ import annotations

import os
import sys

from holmespy._log import log
from holmespy.errors import ConfigError, ConfigWarning
from holmespy.fork import interpreter_target
from holmespy.registry import RULE_NAMES as RULE_NAMES  # the one list: holmespy.registry
from holmespy.rules import Limit, Rule
from holmespy.tempdir import temp_folder

TYPE_CHECKING = False  # typing's, without importing typing (~9 ms) at start()
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any, Literal, TypeAlias

    from holmespy.registry import RuleName as RuleName

    CpuEngine: TypeAlias = Literal["auto", "pyspy", "sampler", "yappi"]

# `start()` reads the configuration, so this module imports neither `re` nor
# `pathlib` nor `dataclasses` (~25 ms together, benchmarks/startup.py): the
# patterns are matched only when a variable is set, and a `Config` is a
# plain class.

CPU_ENGINES: tuple[CpuEngine, ...] = ("auto", "pyspy", "sampler", "yappi")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# holmes' defaults (options.go); threads and tasks get holmes' thread and
# goroutine values, with their longer cooldowns.
DEFAULT_RULES: dict[RuleName, Rule] = {
    "cpu": Rule(min=10, diff=25, abs=70, cooldown=60),
    "mem": Rule(min=10, diff=25, abs=80, cooldown=60),
    "thread": Rule(min=10, diff=25, abs=70, cooldown=3600),
    "task": Rule(min=3000, diff=20, abs=200_000, cooldown=600),
    "gcheap": Rule(min=10, diff=20, abs=40, cooldown=60),
    # Milliseconds a loop ran no callback. A busy, healthy loop reads 0 (it answers
    # its heartbeat within an iteration); a full GC of a million objects stalls
    # ~100 ms, so 500 ms leaves a big heap room. Recurring stalls fire when they
    # double, any stall over a second always does: a second of no answers is an
    # outage. docs/configuration.md gives the reasoning in full.
    "loop": Rule(min=500, diff=100, abs=1000, cooldown=60),
}
LOOP_MIN_FLOOR_MS = 200.0
"""The loop rule's min must leave room for the watchdog's looks (every 100 ms) and slack."""
DEFAULT_RECORDER_SECONDS = 30.0
COUNT_RULES: frozenset[str] = frozenset({"thread", "task"})
"""Rules over counts rather than percentages: only they accept `max=`."""

DURATION_FORM = "a duration such as 500ms, 5s, 1m, 1h or 1m30s"
SIZE_FORM = "a size such as 512MiB, 2GiB, 2G (binary) or 500MB (decimal)"
RULE_FORM = "'off', 'on', or comma-separated min=N,diff=N,abs=N,cooldown=DURATION,limit=N/DURATION"
STORAGE_FORM = (
    "s3://bucket/prefix with a valid S3 bucket name and a prefix of letters, digits and"
    " !-_.*'() in '/'-separated parts (no empty, '.' or '..' part)"
)
URL_FORM = "an http:// or https:// URL with a host and a port from 1 to 65535 (printable ASCII)"
MAX_SIZE = 1 << 62
MIN_MEM_LIMIT = 1 << 20
"""The smallest memory limit taken: `HOLMES_MEM_LIMIT=1` is one byte, surely a slip
(no Python process runs in less than a few MiB)."""
MIN_LIMIT_WINDOW = 1.0
"""A `limit=N/WINDOW` shorter than a second would never stop a rule that keeps firing."""
# ASCII digits only: Python's \d and float() also take Arabic-Indic or fullwidth digits,
# and float() "1_0".
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DIGITS = frozenset("0123456789")
_DURATION_NAMES = ("h", "m", "s", "ms")
_DURATION_UNITS = (3600.0, 60.0, 1.0, 0.001)
_SIZE = rf"({_NUMBER})\s*(?:([KMGT])(I?B)?|B)?"
_SIZE_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_PREFIX_PART = r"[A-Za-z0-9!_.*'()-]+"
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_SAFE = _ALNUM | frozenset("._-")
"""The characters of a service name: it becomes part of paths and object keys."""


# -- parsers: each takes the variable name (for the error) and the raw text --


def parse_duration(name: str, text: str, *, bare_seconds: bool = False) -> float:
    """`500ms`, `5s`, `1m30s` -> seconds; a bare number only where the name says seconds.

    A number too long for a float comes out as infinity, which every
    duration's range check then refuses.
    """
    s = text.strip().lower()
    if bare_seconds and _is_number(s):
        return float(s)
    parts = _duration_parts(s)
    if not s or parts is None:
        form = DURATION_FORM + (" (or a number of seconds)" if bare_seconds else "")
        raise ConfigError(name, text, form)
    return sum(
        float(n) * unit for n, unit in zip(parts, _DURATION_UNITS, strict=True) if n is not None
    )


def _duration_parts(s: str) -> list[str | None] | None:
    """The numbers of `s` read as `[N h][N m][N s][N ms]` (N as `_NUMBER`), else None.

    Each unit at most once, largest first: "1m30s", never "1m1m" or "30s1m".
    By hand rather than a pattern: `re` would cost `start()` ~6 ms, and
    HOLMES_INTERVAL is often set.
    """
    found: list[str | None] = []
    at = 0
    for unit in _DURATION_NAMES:
        end = _number_end(s, at)
        # "m" only where it is not the start of "ms".
        if end > at and s.startswith(unit, end) and not (unit == "m" and s.startswith("ms", end)):
            found.append(s[at:end])
            at = end + len(unit)
        else:
            found.append(None)
    return found if at == len(s) else None


def _number_end(s: str, at: int) -> int:
    """Where the `_NUMBER` that starts at `at` ends (`at` itself: none starts there)."""
    end = at
    while end < len(s) and s[end] in _DIGITS:
        end += 1
    if end > at and s.startswith(".", end) and end + 1 < len(s) and s[end + 1] in _DIGITS:
        end += 1
        while end < len(s) and s[end] in _DIGITS:
            end += 1
    return end


def _is_number(s: str) -> bool:
    """`s` is a `_NUMBER`: ASCII digits, maybe a '.' and more digits."""
    return s != "" and _number_end(s, 0) == len(s)


def parse_size(name: str, text: str) -> int:
    """`512MiB`/`2G` (binary, like Docker's -m) or `500MB` (decimal) -> bytes.

    Computed exactly (a Fraction, not a float), so 400 nines are a size too
    large, not an OverflowError.
    """
    import re

    m = re.fullmatch(_SIZE, text.strip(), re.IGNORECASE | re.ASCII)
    if not m:
        raise ConfigError(name, text, SIZE_FORM)
    prefix, suffix = (m.group(2) or "").upper(), (m.group(3) or "").lower()
    decimal = suffix == "b" and prefix != ""
    base = 1000 if decimal else 1024
    from fractions import Fraction  # exact, and only when a size is read (it imports decimal)

    value = int(Fraction(m.group(1)) * base ** _SIZE_POWERS[prefix])
    if value <= 0:
        raise ConfigError(name, text, SIZE_FORM + " greater than zero")
    if value > MAX_SIZE:
        raise ConfigError(name, text, SIZE_FORM + " of at most 4096PiB")
    return value


def parse_bool(name: str, text: str) -> bool:
    s = text.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, text, "1 or 0 (also true/false, yes/no, on/off)")


def parse_number(name: str, text: str, *, low: float, high: float, what: str) -> float:
    s = text.strip()
    value = float(s) if _is_number(s) else float("nan")
    if not low <= value <= high:  # also rejects nan and inf
        raise ConfigError(name, text, what)
    return value


MAX_PROFILE_RATE = 1000
"""py-spy at 1000 Hz already slows a host by 30-55 % (REFERENCE)."""
RATE_FORM = f"a whole number of samples per second from 1 to {MAX_PROFILE_RATE}, e.g. 50"


def parse_rate(name: str, text: str) -> int:
    s = text.strip().lower().removesuffix("hz").strip()
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (s.isascii() and s.isdigit() and len(s) <= 4) or not 1 <= int(s) <= MAX_PROFILE_RATE:
        raise ConfigError(name, text, RATE_FORM)
    return int(s)


def parse_percent_or_off(name: str, text: str) -> float | None:
    if text.strip().lower() in ("off", ""):
        return None
    return parse_number(name, text, low=0.0, high=100.0, what="a percentage from 0 to 100, or off")


def parse_rule(name: str, text: str, *, rule: RuleName) -> Rule | None:
    """GODEBUG-style `min=10,diff=25,abs=80,cooldown=1m`; unset keys keep the defaults."""
    s = text.strip().lower()
    if s == "off":
        return None
    base = DEFAULT_RULES[rule]
    if s in ("on", ""):
        return base
    form = RULE_FORM + (",max=N" if rule in COUNT_RULES else "")
    try:
        return _parse_rule_items(name, s, base, form, rule)
    except ConfigError as exc:  # report the whole spec, not the one item
        raise ConfigError(name, text, exc.expected) from None


def _parse_rule_items(name: str, s: str, base: Rule, form: str, rule: RuleName) -> Rule:
    import re

    changes: dict[str, Any] = {}
    for item in s.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not value or key in changes:
            raise ConfigError(name, s, form)
        if key in ("min", "diff", "abs") or (key == "max" and rule in COUNT_RULES):
            what = f"{key}= a non-negative number in {form}"
            changes[key] = parse_number(name, value, low=0.0, high=1e15, what=what)
        elif key == "cooldown":
            changes[key] = parse_duration(name, value)
        elif key == "limit":
            count, slash, window = value.partition("/")
            if not slash or not re.fullmatch("[0-9]{1,9}", count) or int(count) < 1:
                raise ConfigError(name, s, "limit=N/DURATION with N >= 1, e.g. limit=5/1h")
            changes[key] = Limit(int(count), parse_duration(name, window))
        else:
            raise ConfigError(name, s, form + f" (unknown key {key!r})")
    return base.replace(**changes)


def parse_storage(name: str, text: str) -> str | None:
    """`s3://bucket/prefix`, read character by character: `urlsplit` would quietly drop
    a newline or a tab, and a prefix becomes part of every object key and log line."""
    import re

    s = text.strip()
    if not s:
        return None
    scheme, sep, rest = s.partition("://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if (
        scheme != "s3"
        or not sep
        or not re.fullmatch(_BUCKET, bucket)
        or len(prefix) > 512
        or any(p in (".", "..") or not re.fullmatch(_PREFIX_PART, p) for p in parts)
    ):
        raise ConfigError(name, text, STORAGE_FORM)
    return f"s3://{bucket}/{prefix}".rstrip("/")


def parse_url(name: str, text: str) -> str | None:
    """An http(s) URL the webhook can be POSTed to: a host, a valid port, nothing
    invisible. User info (`https://user:password@host/`) becomes HTTP Basic auth."""
    import re
    from urllib.parse import urlsplit

    s = text.strip()
    if not s:
        return None
    try:
        if not re.fullmatch(r"[\x21-\x7e]+", s):
            raise ValueError("invisible or non-ASCII characters")
        parts = urlsplit(s)
        port = parts.port  # raises ValueError when out of range or not a number
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise ValueError("no http(s) scheme, no host, or port 0")
    except ValueError:
        raise ConfigError(name, hide_url_path(text), URL_FORM) from None
    return s


def hide_url_path(text: str) -> str:
    """A URL, even a malformed one, cut after its host (`https://host/…`): a webhook's
    path may be its token. `ConfigError` hides the user info and query on its own."""
    import re

    m = re.match(r"\s*([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)(.*)", text, re.DOTALL)
    if m is None:
        return text
    return m.group(1) + ("/…" if m.group(2).strip("/") else m.group(2))


def parse_sse(name: str, text: str) -> str | None:
    s = text.strip()
    if s.lower() in ("", "off"):
        return None
    modes = {"aes256": "AES256", "aws:kms": "aws:kms"}
    if s.lower() not in modes:
        raise ConfigError(name, text, "AES256, aws:kms, or off")
    return modes[s.lower()]


def parse_kms_key_id(name: str, text: str) -> str | None:
    import re

    s = text.strip()
    if not s:
        return None
    if len(s) > 2048 or not re.fullmatch(r"[\x21-\x7e]+", s):
        raise ConfigError(name, text, "a KMS key id, alias or ARN (printable ASCII, no spaces)")
    return s


def parse_presign(name: str, text: str) -> float | None:
    if text.strip().lower() in ("", "off"):
        return None
    return parse_duration(name, text)


def parse_service(name: str, text: str) -> str:
    s = text.strip()
    # By hand, not a pattern: the default service is checked at every start().
    if not (0 < len(s) <= 128 and s[0] in _ALNUM and all(c in _SAFE for c in s)):
        raise ConfigError(name, text, "1-128 characters of letters, digits, '.', '_' or '-'")
    return s


def parse_choice(name: str, text: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    s = text.strip().upper() if upper else text.strip().lower()
    if s not in choices:
        raise ConfigError(name, text, "one of " + ", ".join(choices))
    return s


def default_service() -> str:
    """The name of the program the user started, made safe for paths and object keys.

    `python app.py` gives `app`, a console script its own name (`gunicorn`,
    `uvicorn`), `python -m pkg.mod` gives `mod` (the name runpy's `argv[0]`
    gives once the module runs; before that, in a `sitecustomize`, `argv[0]`
    is still `-m` and the module is read from `sys.orig_argv`).
    """
    argv = getattr(sys, "argv", None)
    argv0 = argv[0] if isinstance(argv, list) and argv and isinstance(argv[0], str) else ""
    if argv0 == "-m":
        kind, module = interpreter_target([str(a) for a in getattr(sys, "orig_argv", [])])
        stem = module.rpartition(".")[2] if kind == "-m" else ""
    elif argv0 in ("", "-c"):
        stem = ""
    else:
        # `pathlib.Path(argv0)`'s parts (no empty or '.' part), without pathlib.
        parts = [part for part in argv0.split("/") if part not in ("", ".")]
        stem = _stem(parts[-1] if parts else "")
        if stem == "__main__":
            stem = parts[-2] if len(parts) > 1 else ""
    safe = _safe_name(stem).strip("-._")[:128]
    return safe or "python"


def _stem(name: str) -> str:
    """`PurePath(name).stem` of a single name: without its last suffix."""
    i = name.rfind(".")
    return name[:i] if 0 < i < len(name) - 1 else name


def _safe_name(text: str) -> str:
    """Each run of characters other than letters, digits, '.', '_' and '-' made one '-'."""
    out: list[str] = []
    for char in text:
        if char in _SAFE:
            out.append(char)
        elif not out or out[-1] != "\0":
            out.append("\0")
    return "".join(out).replace("\0", "-")


def default_dump_path() -> Path:
    """`$TMPDIR/holmespy-<euid>`: one private folder per user, named for the user it is now.

    Evaluated when a dump is written, not when the configuration is read: a
    prefork master that starts holmespy as root and whose workers drop to
    another user (gunicorn --preload --user) has each worker write in its
    own user's folder. Why this place, and how it is kept private:
    docs/security.md.
    """
    return _path(default_dump_folder())


def _as_path_text(text: str) -> str:
    """`str(Path(text))` without pathlib: no empty or '.' part, no trailing '/'."""
    root = ""
    if text.startswith("/"):
        # POSIX keeps exactly two leading slashes (pathlib does too); more are one.
        root = "//" if text.startswith("//") and not text.startswith("///") else "/"
    parts = [part for part in text.split("/") if part not in ("", ".")]
    return root + "/".join(parts) or "."


def _path(text: str) -> Path:
    """`Path(text)`, importing pathlib on first use, on any thread (holmespy.lazyimport)."""
    from holmespy.lazyimport import importing

    with importing:
        from pathlib import Path

    return Path(text)


def default_dump_folder() -> str:
    """`default_dump_path()` as a string, without importing pathlib."""
    return os.path.join(temp_folder(), f"holmespy-{os.geteuid()}")


# -- the typed configuration --


class _PathText(str):
    """A `HOLMES_DUMP_PATH` as read: made a `Path` when first asked for (pathlib costs ~9 ms)."""

    __slots__ = ()


_DEFAULT_SERVICE = "".join(["<the program's", " name>"])
"""`Config(service=...)` left out: `default_service()` (a private object, compared by `is`)."""


class Config:
    """Every holmespy setting, typed and immutable; `Config.from_env()` reads them from `HOLMES_*`.

    A plain class rather than a dataclass (`import dataclasses` alone would
    add ~15 ms to `start()`); `replace()` makes a changed, validated copy.
    """

    __slots__ = (
        "_dump_path",
        "cpu",
        "cpu_cores",
        "cpu_engine",
        "cpu_max",
        "cpu_profile_rate",
        "cpu_profile_seconds",
        "enable",
        "exit_seconds",
        "gcheap",
        "heap_seconds",
        "interval",
        "log_level",
        "loop",
        "mem",
        "mem_limit",
        "presign",
        "recorder",
        "recorder_hz",
        "s3_kms_key_id",
        "s3_sse",
        "service",
        "spool_max",
        "storage",
        "task",
        "thread",
        "webhook_url",
    )
    enable: bool
    service: str
    interval: float
    _dump_path: Path | _PathText | None
    cpu: Rule | None
    mem: Rule | None
    thread: Rule | None
    task: Rule | None
    gcheap: Rule | None
    loop: Rule | None
    recorder: float | None
    recorder_hz: float
    cpu_max: float | None
    cpu_profile_seconds: float
    cpu_profile_rate: int
    cpu_engine: CpuEngine
    heap_seconds: float
    exit_seconds: float
    cpu_cores: float | None
    mem_limit: int | None
    storage: str | None
    spool_max: int
    webhook_url: str | None
    s3_sse: str | None
    s3_kms_key_id: str | None
    presign: float | None
    log_level: str

    def __init__(
        self,
        enable: bool = True,
        service: str = _DEFAULT_SERVICE,
        interval: float = 5.0,
        dump_path: Path | None = None,
        cpu: Rule | None = DEFAULT_RULES["cpu"],
        mem: Rule | None = DEFAULT_RULES["mem"],
        thread: Rule | None = DEFAULT_RULES["thread"],
        task: Rule | None = DEFAULT_RULES["task"],
        gcheap: Rule | None = DEFAULT_RULES["gcheap"],
        loop: Rule | None = DEFAULT_RULES["loop"],
        recorder: float | None = DEFAULT_RECORDER_SECONDS,
        recorder_hz: float = 10.0,
        cpu_max: float | None = None,
        cpu_profile_seconds: float = 5.0,
        cpu_profile_rate: int = 50,
        cpu_engine: CpuEngine = "auto",
        heap_seconds: float = 3.0,
        exit_seconds: float = 0.5,
        cpu_cores: float | None = None,
        mem_limit: int | None = None,
        storage: str | None = None,
        spool_max: int = 1 << 30,
        webhook_url: str | None = None,
        s3_sse: str | None = None,
        s3_kms_key_id: str | None = None,
        presign: float | None = None,
        log_level: str = "INFO",
    ) -> None:
        if service is _DEFAULT_SERVICE:
            service = default_service()
        given = dict(locals())
        del given["self"]
        # Programmatic configs get the same checks as the environment; a value
        # left at its default is valid by construction (test_config checks them all).
        defaults = _INIT_DEFAULTS
        for option in OPTIONS:
            value = given[option.field]
            if value is not defaults.get(option.field, _DEFAULT_SERVICE):
                option.check(value)
        for name, value in given.items():
            object.__setattr__(self, "_dump_path" if name == "dump_path" else name, value)

    @property
    def dump_path(self) -> Path | None:
        """The dumps' folder; None: `default_dump_path()`, resolved at each use (`dump_root`)."""
        value = self._dump_path
        if not isinstance(value, _PathText):
            return value
        path = _path(value)
        object.__setattr__(self, "_dump_path", path)  # the same path, now a Path
        return path

    def dump_root(self) -> Path:
        """The folder dumps go to now: `dump_path`, else the effective user's default."""
        path = self.dump_path
        return path if path is not None else default_dump_path()

    def dump_folder(self) -> str:
        """`dump_root()` as a string, without importing pathlib (the start-up line says it)."""
        value = self._dump_path
        if value is None:
            return default_dump_folder()
        return _as_path_text(value) if isinstance(value, _PathText) else os.fspath(value)

    def rule(self, name: RuleName) -> Rule | None:
        rule: Rule | None = getattr(self, name)
        return rule

    def fields(self) -> dict[str, Any]:
        """Every setting by its field name, in the order of the `HOLMES_*` table."""
        return {name: getattr(self, name) for name in FIELDS}

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied and validated."""
        values = {
            name: getattr(self, "_dump_path" if name == "dump_path" else name) for name in FIELDS
        }
        for name in changes:
            if name not in values:
                raise TypeError(f"Config has no setting {name!r}")
        values.update(changes)
        return Config(**values)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Config:
            return NotImplemented
        return self is other or self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash(tuple(self.fields().values()))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: use Config.replace()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: a Config is immutable")

    def __reduce__(self) -> tuple[Callable[..., Config], tuple[dict[str, Any]]]:
        # copy and pickle: built again (and validated) from its settings.
        return (_config_from, (self._raw_fields(),))

    def _raw_fields(self) -> dict[str, Any]:
        # As given: a HOLMES_DUMP_PATH not made a Path yet stays text.
        return {
            name: getattr(self, "_dump_path" if name == "dump_path" else name) for name in FIELDS
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read every `HOLMES_*` variable; raise `ConfigError` on the first bad one.

        Unknown `HOLMES_*` variables raise a `ConfigWarning` (with the closest
        known name) instead of failing: a typo must not take a server down.
        `HOLMES_ENABLE=0` always wins: then a malformed variable is only logged
        (and warned about), and the result is a disabled config.
        """
        env = os.environ if environ is None else environ
        if _killed(env):
            return cls._disabled(env)
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = env.get(option.env)
            if raw is not None:
                values[option.field] = _read(option, raw)
        _warn_unknown(env)
        return cls(**values)

    @classmethod
    def _disabled(cls, env: Mapping[str, str]) -> Config:
        """The kill switch: what an engineer sets at 3 a.m. when the settings are broken.

        A malformed variable is only a warning here; the rest are kept (so
        `doctor` and `describe()` still show them), as far as they are valid.
        """
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = env.get(option.env)
            if raw is None or option.field == "enable":
                continue
            try:
                values[option.field] = _read(option, raw)
            except ConfigError as exc:
                _warn(f"HOLMES_ENABLE=0, so this is ignored: {exc}", quiet=True)
        try:  # noqa: SIM105 (contextlib.suppress: contextlib costs start() ~0.7 ms)
            _warn_unknown(env)
        except ConfigWarning:  # `python -W error`: not a failure here
            pass
        try:
            return cls(enable=False, **values)
        except ConfigError as exc:  # settings valid alone but not together
            _warn(f"HOLMES_ENABLE=0, so this is ignored: {exc}", quiet=True)
            return cls(enable=False)

    def __repr__(self) -> str:
        # Not every value as it is: the webhook URL may hold a password or a token.
        shown = self.fields()
        if self.webhook_url is not None:
            from holmespy.redact import public_url

            shown["webhook_url"] = public_url(self.webhook_url, path=False)
        return f"Config({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def describe(self) -> dict[str, str]:
        """Each variable with its effective value, in the variable's own syntax
        (the webhook URL without the parts that may be secret)."""
        return {option.env: option.show(getattr(self, option.field)) for option in OPTIONS}


def _config_from(values: dict[str, Any]) -> Config:
    return Config(**values)


def _killed(env: Mapping[str, str]) -> bool:
    """True when HOLMES_ENABLE turns holmespy off (a malformed value is still an error)."""
    raw = env.get("HOLMES_ENABLE")
    return raw is not None and not parse_bool("HOLMES_ENABLE", raw)


def _read(option: Option, raw: str) -> Any:
    value = option.parse(option.env, raw)
    try:
        option.check(value)
    except ConfigError as exc:  # say it with the text the user wrote
        raise ConfigError(option.env, option.display(raw), exc.expected) from None
    return value


def _warn(message: str, *, quiet: bool = False) -> None:
    """Log `message` and warn with it; `quiet`: never raise, even under `-W error`."""
    import warnings  # (only for a setting that is wrong)

    log.warning(message)
    try:
        warnings.warn(message, ConfigWarning, stacklevel=4)
    except ConfigWarning:
        if not quiet:
            raise


def _warn_unknown(env: Mapping[str, str]) -> None:
    """Unknown `HOLMES_*` variables warn, with the closest known name: a typo must not
    take a server down."""
    known = {option.env for option in OPTIONS}
    for key in sorted(k for k in env if k.startswith("HOLMES_") and k not in known):
        import difflib

        hint = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        tip = f"; did you mean {hint[0]}?" if hint else ""
        _warn(f"unknown setting {key} is ignored{tip}")


class Option:
    """One row of the table: a `HOLMES_*` variable and the `Config` field it fills."""

    __slots__ = ("display", "env", "field", "help", "parse", "show", "validate")

    def __init__(
        self,
        env: str,
        field: str,
        parse: Callable[[str, str], Any],
        help: str,
        show: Callable[[Any], str] = str,
        validate: Callable[[str, Any], None] | None = None,
        display: Callable[[str], str] = str,
    ) -> None:
        self.env = env
        self.field = field
        self.parse = parse
        self.help = help
        self.show = show
        # Checks a programmatic value; by default: it must print and re-parse to itself.
        self.validate = validate
        # How a value the user wrote may appear in an error (the webhook's path may be a token).
        self.display = display

    def __repr__(self) -> str:
        return f"Option({self.env!r}, {self.field!r})"

    def check(self, value: Any) -> None:
        if self.validate is not None:
            self.validate(self.env, value)
            return
        text = self.show(value)
        if self.parse(self.env, text) != value:
            raise ConfigError(self.env, value, f"a value of the form of {self.env}")


def _show_rule(rule: Rule | None) -> str:
    return "off" if rule is None else rule.spec()


def _show_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _show_size(size: int | None) -> str:
    if size is None:
        return ""
    for unit, power in (("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size % 1024**power == 0:
            return f"{size // 1024**power}{unit}"
    return str(size)


def _show_optional(value: object) -> str:
    return "" if value is None else str(value)


def _check_rule(name: str, value: Any) -> None:
    """A rule that can fire and that stops: the checks of both the variable and a `Rule`."""
    if value is None:
        return
    if not isinstance(value, Rule):
        raise ConfigError(name, value, "a holmespy.Rule or None (off)")
    fields = [value.min, value.diff, value.abs, value.cooldown, value.limit.window]
    if value.max is not None:
        fields.append(value.max)
    if any(not isinstance(x, int | float) or not 0 <= x < float("inf") for x in fields):
        raise ConfigError(name, value, "non-negative, finite min, diff, abs, max and cooldown")
    if value.max is not None and not name.endswith(("THREAD", "TASK")):
        raise ConfigError(name, value, "no max= (only HOLMES_THREAD and HOLMES_TASK take one)")
    if value.max is not None and value.max <= value.min:
        # A sample fires only when min <= value < max: this rule never could.
        raise ConfigError(name, value, f"max= greater than min= (min is {value.min:g})")
    if not isinstance(value.limit.count, int) or value.limit.count < 1:
        raise ConfigError(name, value, "limit=N/DURATION with N >= 1")
    if value.limit.window < MIN_LIMIT_WINDOW:
        raise ConfigError(name, value, "limit=N/DURATION with a DURATION of at least 1s")


def _check_number(
    what: str, *, low: float, high: float, optional: bool = False
) -> Callable[[str, Any], None]:
    """A validator for a number from `low` to `high`, both included, or None if `optional`."""

    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not low <= value <= high:
            raise ConfigError(name, value, what)

    return check


def _check_url(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or parse_url(name, value) != value):
        from holmespy.redact import public_url

        raise ConfigError(name, public_url(str(value), path=False), URL_FORM)


def _check_rate(name: str, value: Any) -> None:
    integer = isinstance(value, int) and not isinstance(value, bool)
    if not integer or not 1 <= value <= MAX_PROFILE_RATE:
        raise ConfigError(name, value, RATE_FORM)


def _check_path(name: str, value: Any) -> None:
    if value is None:
        return  # the per-user default
    # A Path, unless pathlib was never imported (then it cannot be one), or the
    # text HOLMES_DUMP_PATH gave.
    path_type = getattr(sys.modules.get("pathlib"), "Path", None)  # (None while half made)
    path = isinstance(value, _PathText) or (path_type is not None and isinstance(value, path_type))
    if not path or str(value).strip() == "":
        raise ConfigError(name, value, "a pathlib.Path to a folder, or None (the default)")


def _show_dump_path(value: Path | None) -> str:
    return default_dump_folder() if value is None else str(value)


def _show_webhook(value: str | None) -> str:
    from holmespy.redact import public_url

    return "" if value is None else public_url(value, path=False)


def _check_loop_rule(name: str, value: Any) -> None:
    _check_rule(name, value)
    if value is not None and value.min < LOOP_MIN_FLOOR_MS:
        raise ConfigError(
            name, value, f"min= at least {LOOP_MIN_FLOOR_MS:g} (ms; loops are looked at every 100)"
        )


_RULE_HELP: dict[str, str] = {"loop": " (values: ms an event loop ran no callback)"}


def _rule_option(rule: RuleName) -> Option:
    return Option(
        env=f"HOLMES_{rule.upper()}",
        field=rule,
        parse=lambda name, text: parse_rule(name, text, rule=rule),
        help=f"the {rule} rule{_RULE_HELP.get(rule, '')}, e.g. "
        f"{_show_rule(DEFAULT_RULES[rule])}, or off",
        show=_show_rule,
        validate=_check_loop_rule if rule == "loop" else _check_rule,
    )


def parse_recorder(name: str, text: str) -> float | None:
    """`off`, `on` (the default window) or the window as a duration, e.g. `30s`."""
    s = text.strip().lower()
    if s == "off":
        return None
    if s == "on":
        return DEFAULT_RECORDER_SECONDS
    return parse_duration(name, text)


OPTIONS: tuple[Option, ...] = (
    Option("HOLMES_ENABLE", "enable", parse_bool, "0 turns holmespy into a no-op", show=str),
    Option(
        "HOLMES_SERVICE",
        "service",
        parse_service,
        "service name used in dump paths, object keys and metadata (default: the program's name:"
        " the script, the console script such as gunicorn, or the -m module)",
    ),
    Option(
        "HOLMES_INTERVAL",
        "interval",
        parse_duration,
        "how often the watcher samples, e.g. 500ms, 5s, 1m",
        show=_show_seconds,
        validate=_check_number("a duration from 1ms to 1h", low=0.001, high=3600.0),
    ),
    Option(
        "HOLMES_DUMP_PATH",
        "dump_path",
        lambda name, text: _PathText(text) if text.strip() else _raise(name, text, "a folder path"),
        "local folder for dumps and the upload spool, owned by the user and closed to others"
        " (default: $TMPDIR/holmespy-<euid>)",
        show=_show_dump_path,
        validate=_check_path,
    ),
    *(_rule_option(name) for name in RULE_NAMES),
    Option(
        "HOLMES_RECORDER",
        "recorder",
        parse_recorder,
        "the flight recorder: how many seconds of every thread's stacks it keeps for the next"
        " event (recorder.pb.gz), e.g. 30s; off",
        show=lambda value: "off" if value is None else _show_seconds(value),
        validate=_check_number(
            "a duration from 1s to 10m, or None (off)", low=1.0, high=600.0, optional=True
        ),
    ),
    Option(
        "HOLMES_RECORDER_HZ",
        "recorder_hz",
        lambda name, text: parse_number(
            name, text, low=0.5, high=100.0, what="a rate in samples per second from 0.5 to 100"
        ),
        "the flight recorder's samples per second",
        show=lambda value: f"{value:g}",
        validate=_check_number("a rate in samples per second from 0.5 to 100", low=0.5, high=100.0),
    ),
    Option(
        "HOLMES_CPU_MAX",
        "cpu_max",
        parse_percent_or_off,
        "no dump of any kind while CPU % is above this (off by default)",
        show=_show_optional,
        validate=_check_number(
            "a percentage from 0 to 100, or None (off)", low=0.0, high=100.0, optional=True
        ),
    ),
    Option(
        "HOLMES_CPU_PROFILE_SECONDS",
        "cpu_profile_seconds",
        lambda name, text: parse_duration(name, text, bare_seconds=True),
        "length of a triggered CPU profile, in seconds",
        show=_show_seconds,
        validate=_check_number("a duration from 1ms to 10m", low=0.001, high=600.0),
    ),
    Option(
        "HOLMES_CPU_PROFILE_RATE",
        "cpu_profile_rate",
        parse_rate,
        "samples per second of a CPU profile (py-spy's -r, the in-process sampler's rate)",
        validate=_check_rate,
    ),
    Option(
        "HOLMES_CPU_ENGINE",
        "cpu_engine",
        lambda name, text: parse_choice(name, text, CPU_ENGINES),
        "auto (py-spy when permitted, else the in-process sampler), pyspy, sampler, yappi (costly)",
    ),
    Option(
        "HOLMES_HEAP_SECONDS",
        "heap_seconds",
        lambda name, text: parse_duration(name, text, bare_seconds=True),
        "length of the allocation-tracing window a heap dump opens, in seconds",
        show=_show_seconds,
        validate=_check_number("a duration from 1ms to 10m", low=0.001, high=600.0),
    ),
    Option(
        "HOLMES_EXIT_SECONDS",
        "exit_seconds",
        lambda name, text: parse_duration(name, text, bare_seconds=True),
        "longest time holmespy adds to the process's exit (atexit, SIGTERM) to publish a capture"
        " in progress, cut short and marked partial; 0 adds nothing and publishes nothing",
        show=_show_seconds,
        validate=_check_number("a duration from 0 to 10s", low=-1e-9, high=10.0),
    ),
    Option(
        "HOLMES_CPU_CORES",
        "cpu_cores",
        lambda name, text: parse_number(
            name, text, low=0.01, high=4096, what="a number of cores such as 2 or 0.5"
        ),
        "usable CPU cores, overriding the cgroup quota / CPU affinity",
        show=_show_optional,
        validate=_check_number(
            "a number of cores from 0.01 to 4096, or None", low=0.01, high=4096.0, optional=True
        ),
    ),
    Option(
        "HOLMES_MEM_LIMIT",
        "mem_limit",
        parse_size,
        "memory limit, overriding the cgroup / host memory, e.g. 512MiB",
        show=_show_size,
        validate=_check_number(
            f"a size from 1MiB to 4096PiB ({SIZE_FORM}), or None",
            low=MIN_MEM_LIMIT,
            high=MAX_SIZE,
            optional=True,
        ),
    ),
    Option(
        "HOLMES_STORAGE",
        "storage",
        parse_storage,
        "s3://bucket/prefix: ship every dump there (unset: local only)",
        show=_show_optional,
    ),
    Option(
        "HOLMES_SPOOL_MAX",
        "spool_max",
        parse_size,
        "size cap of the local dump folder / upload spool, e.g. 1GiB",
        show=_show_size,
        validate=_check_number(
            f"a size from 1 byte to 4096PiB ({SIZE_FORM})", low=1, high=MAX_SIZE
        ),
    ),
    Option(
        "HOLMES_WEBHOOK_URL",
        "webhook_url",
        parse_url,
        "URL POSTed the event.json of each stored event (user:password@ sends Basic auth)",
        # Shown without user info, query or path: webhook tokens hide in all three.
        show=_show_webhook,
        validate=_check_url,
        display=hide_url_path,
    ),
    Option(
        "HOLMES_S3_SSE",
        "s3_sse",
        parse_sse,
        "server-side encryption of uploaded objects: AES256, aws:kms, or off",
        show=_show_optional,
    ),
    Option(
        "HOLMES_S3_KMS_KEY_ID",
        "s3_kms_key_id",
        parse_kms_key_id,
        "KMS key id or ARN for aws:kms encryption (setting it implies HOLMES_S3_SSE=aws:kms)",
        show=_show_optional,
    ),
    Option(
        "HOLMES_PRESIGN",
        "presign",
        parse_presign,
        "give the reporter presigned download links valid this long, e.g. 1h (max 7 days); off",
        show=lambda value: "" if value is None else _show_seconds(value),
        validate=_check_number(
            "a duration from 1s to 7 days, or None (off)",
            low=1.0,
            high=7 * 86400.0,
            optional=True,
        ),
    ),
    Option(
        "HOLMES_LOG_LEVEL",
        "log_level",
        lambda name, text: parse_choice(name, text, LOG_LEVELS, upper=True),
        "level of the 'holmespy' logger",
    ),
)


FIELDS: tuple[str, ...] = tuple(option.field for option in OPTIONS)
"""`Config`'s settings, in the table's order."""
_INIT_DEFAULTS: dict[str, object] = {
    name: value
    for name, value in zip(
        Config.__init__.__code__.co_varnames[1 : 1 + len(FIELDS)],
        Config.__init__.__defaults__ or (),
        strict=True,
    )
}


def _raise(name: str, text: str, expected: str) -> Any:
    raise ConfigError(name, text, expected)


def help_table() -> str:
    """The table as text, for `holmespy --help-env` and the docs."""
    defaults = Config()
    # Defaults that depend on the program and user running, said as such.
    placeholders = {"service": "<program name>", "dump_path": "$TMPDIR/holmespy-<euid>"}
    rows = [
        (o.env, placeholders.get(o.field) or o.show(getattr(defaults, o.field)), o.help)
        for o in OPTIONS
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(
        f"{env:<{width}}  {hlp}\n{'':<{width}}  default: {dflt or '(unset)'}"
        for env, dflt, hlp in rows
    )
