"""Configuration: one declarative table of every `HOLMES_*` variable.

Each `Option` names its variable, the `Config` field it fills, its parser
(which is also its validator), its default and its help text; `Config.from_env`
walks the table, so adding a setting is one row. Parsing happens in `start()`,
never at import, and every error names the variable, the value and the
accepted form.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from holmespy.errors import ConfigError, ConfigWarning
from holmespy.rules import Limit, Rule

RuleName: TypeAlias = Literal["cpu", "mem", "thread", "task", "gcheap"]
RULE_NAMES: tuple[RuleName, ...] = ("cpu", "mem", "thread", "task", "gcheap")
CpuEngine: TypeAlias = Literal["auto", "pyspy", "sampler", "yappi"]
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
}
COUNT_RULES: frozenset[str] = frozenset({"thread", "task"})
"""Rules over counts rather than percentages: only they accept `max=`."""

DURATION_FORM = "a duration such as 500ms, 5s, 1m, 1h or 1m30s"
SIZE_FORM = "a size such as 512MiB, 2GiB, 2G (binary) or 500MB (decimal)"
RULE_FORM = "'off', 'on', or comma-separated min=N,diff=N,abs=N,cooldown=DURATION,limit=N/DURATION"
_SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)$", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


# -- parsers: each takes the variable name (for the error) and the raw text --


def parse_duration(name: str, text: str, *, bare_seconds: bool = False) -> float:
    """`500ms`, `5s`, `1m30s` -> seconds; a bare number only where the name says seconds."""
    s = text.strip().lower()
    if bare_seconds and re.fullmatch(r"\d+(?:\.\d+)?", s):
        return float(s)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(s):
        form = DURATION_FORM + (" (or a number of seconds)" if bare_seconds else "")
        raise ConfigError(name, text, form)
    return total


def parse_size(name: str, text: str) -> int:
    """`512MiB`/`2G` (binary, like Docker's -m) or `500MB` (decimal) -> bytes."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ConfigError(name, text, SIZE_FORM)
    number, prefix, suffix = float(m.group(1)), m.group(2).upper(), m.group(3).lower()
    decimal = suffix == "b" and prefix != ""
    base = 1000 if decimal else 1024
    value = int(number * base ** _SIZE_POWERS[prefix])
    if value <= 0:
        raise ConfigError(name, text, SIZE_FORM + " greater than zero")
    return value


def parse_bool(name: str, text: str) -> bool:
    s = text.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, text, "1 or 0 (also true/false, yes/no, on/off)")


def parse_number(name: str, text: str, *, low: float, high: float, what: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also rejects nan and inf
        raise ConfigError(name, text, what)
    return value


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
            if not slash or not count.isdigit() or int(count) < 1:
                raise ConfigError(name, s, "limit=N/DURATION with N >= 1, e.g. limit=5/1h")
            changes[key] = Limit(int(count), parse_duration(name, window))
        else:
            raise ConfigError(name, s, form + f" (unknown key {key!r})")
    return dataclasses.replace(base, **changes)


def parse_storage(name: str, text: str) -> str | None:
    s = text.strip()
    if not s:
        return None
    parts = urlsplit(s)
    if parts.scheme != "s3" or not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", parts.netloc):
        raise ConfigError(name, text, "s3://bucket/prefix with a valid S3 bucket name")
    if ".." in parts.path.split("/") or parts.query or parts.fragment:
        raise ConfigError(name, text, "s3://bucket/prefix without '..', '?' or '#'")
    return s.rstrip("/")


def parse_url(name: str, text: str) -> str | None:
    s = text.strip()
    if not s:
        return None
    parts = urlsplit(s)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(name, text, "an http:// or https:// URL")
    return s


def parse_sse(name: str, text: str) -> str | None:
    s = text.strip()
    if s.lower() in ("", "off"):
        return None
    modes = {"aes256": "AES256", "aws:kms": "aws:kms"}
    if s.lower() not in modes:
        raise ConfigError(name, text, "AES256, aws:kms, or off")
    return modes[s.lower()]


def parse_kms_key_id(name: str, text: str) -> str | None:
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
    if not _SERVICE_RE.match(s):
        raise ConfigError(name, text, "1-128 characters of letters, digits, '.', '_' or '-'")
    return s


def parse_choice(name: str, text: str, choices: tuple[str, ...], *, upper: bool = False) -> str:
    s = text.strip().upper() if upper else text.strip().lower()
    if s not in choices:
        raise ConfigError(name, text, "one of " + ", ".join(choices))
    return s


def default_service() -> str:
    """The script's name, made safe for paths and object keys."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    stem = Path(argv0).stem if argv0 else ""
    if stem == "__main__":
        stem = Path(argv0).parent.name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:128]
    return safe or "python"


def default_dump_path() -> Path:
    """`$TMPDIR/holmespy-<euid>`: one private folder per user, named for the user it is now.

    Evaluated when a dump is written, not when the configuration is read: a
    prefork master that starts holmespy as root and whose workers drop to
    another user (gunicorn --preload --user) has each worker write in its
    own user's folder. Why this place, and how it is kept private:
    docs/security.md.
    """
    return Path(tempfile.gettempdir()) / f"holmespy-{os.geteuid()}"


# -- the typed configuration --


@dataclass(frozen=True)
class Config:
    """Every holmespy setting, typed; `Config.from_env()` reads them from `HOLMES_*`."""

    enable: bool = True
    service: str = field(default_factory=default_service)
    interval: float = 5.0
    dump_path: Path | None = None
    """None: `default_dump_path()`, resolved at each use (see `dump_root`)."""
    cpu: Rule | None = DEFAULT_RULES["cpu"]
    mem: Rule | None = DEFAULT_RULES["mem"]
    thread: Rule | None = DEFAULT_RULES["thread"]
    task: Rule | None = DEFAULT_RULES["task"]
    gcheap: Rule | None = DEFAULT_RULES["gcheap"]
    cpu_max: float | None = None
    cpu_profile_seconds: float = 5.0
    cpu_engine: CpuEngine = "auto"
    heap_seconds: float = 3.0
    cpu_cores: float | None = None
    mem_limit: int | None = None
    storage: str | None = None
    spool_max: int = 1 << 30
    webhook_url: str | None = None
    s3_sse: str | None = None
    s3_kms_key_id: str | None = None
    presign: float | None = None
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # Programmatic configs get the same checks as the environment.
        for option in OPTIONS:
            option.check(getattr(self, option.field))

    def dump_root(self) -> Path:
        """The folder dumps go to now: `dump_path`, else the effective user's default."""
        return self.dump_path if self.dump_path is not None else default_dump_path()

    def rule(self, name: RuleName) -> Rule | None:
        rule: Rule | None = getattr(self, name)
        return rule

    def replace(self, **changes: Any) -> Config:
        """A copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read every `HOLMES_*` variable; raise `ConfigError` on the first bad one.

        Unknown `HOLMES_*` variables raise a `ConfigWarning` (with the closest
        known name) instead of failing: a typo must not take a server down.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = env.get(option.env)
            if raw is not None:
                value = option.parse(option.env, raw)
                try:
                    option.check(value)
                except ConfigError as exc:  # say it with the text the user wrote
                    raise ConfigError(option.env, raw, exc.expected) from None
                values[option.field] = value
        known = {option.env for option in OPTIONS}
        for key in sorted(k for k in env if k.startswith("HOLMES_") and k not in known):
            hint = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            tip = f"; did you mean {hint[0]}?" if hint else ""
            message = f"unknown setting {key} is ignored{tip}"
            logging.getLogger("holmespy").warning(message)
            warnings.warn(message, ConfigWarning, stacklevel=3)
        return cls(**values)

    def describe(self) -> dict[str, str]:
        """Each variable with its effective value, in the variable's own syntax."""
        return {option.env: option.show(getattr(self, option.field)) for option in OPTIONS}


@dataclass(frozen=True)
class Option:
    """One row of the table: a `HOLMES_*` variable and the `Config` field it fills."""

    env: str
    field: str
    parse: Callable[[str, str], Any]
    help: str
    show: Callable[[Any], str] = str
    # Checks a programmatic value; by default: it must print and re-parse to itself.
    validate: Callable[[str, Any], None] | None = None

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
    if value is None:
        return
    if not isinstance(value, Rule):
        raise ConfigError(name, value, "a holmespy.Rule or None (off)")
    fields = (value.min, value.diff, value.abs, value.cooldown, value.limit.window)
    if any(not isinstance(x, int | float) or not 0 <= x < float("inf") for x in fields):
        raise ConfigError(name, value, "non-negative, finite min, diff, abs and cooldown")
    if value.max is not None and not name.endswith(("THREAD", "TASK")):
        raise ConfigError(name, value, "no max= (only HOLMES_THREAD and HOLMES_TASK take one)")
    if value.limit.count < 1:
        raise ConfigError(name, value, "limit=N/DURATION with N >= 1")


def _check_number(
    what: str, *, low: float = 0.0, high: float, optional: bool = False
) -> Callable[[str, Any], None]:
    """A validator for a number above `low` (exclusive) up to `high`, or None if `optional`."""

    def check(name: str, value: Any) -> None:
        if value is None and optional:
            return
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not low < value <= high:
            raise ConfigError(name, value, what)

    return check


def _check_path(name: str, value: Any) -> None:
    if value is None:
        return  # the per-user default
    if not isinstance(value, Path) or str(value).strip() == "":
        raise ConfigError(name, value, "a pathlib.Path to a folder, or None (the default)")


def _show_dump_path(value: Path | None) -> str:
    return str(default_dump_path() if value is None else value)


def _rule_option(rule: RuleName) -> Option:
    return Option(
        env=f"HOLMES_{rule.upper()}",
        field=rule,
        parse=lambda name, text: parse_rule(name, text, rule=rule),
        help=f"the {rule} rule, e.g. {_show_rule(DEFAULT_RULES[rule])}, or off",
        show=_show_rule,
        validate=_check_rule,
    )


OPTIONS: tuple[Option, ...] = (
    Option("HOLMES_ENABLE", "enable", parse_bool, "0 turns holmespy into a no-op", show=str),
    Option(
        "HOLMES_SERVICE",
        "service",
        parse_service,
        "service name used in dump paths, object keys and metadata (default: the script's name)",
    ),
    Option(
        "HOLMES_INTERVAL",
        "interval",
        parse_duration,
        "how often the watcher samples, e.g. 500ms, 5s, 1m",
        show=_show_seconds,
        validate=_check_number("a duration from 1ms to 1h", high=3600.0),
    ),
    Option(
        "HOLMES_DUMP_PATH",
        "dump_path",
        lambda name, text: Path(text) if text.strip() else _raise(name, text, "a folder path"),
        "local folder for dumps and the upload spool, owned by the user and closed to others"
        " (default: $TMPDIR/holmespy-<euid>)",
        show=_show_dump_path,
        validate=_check_path,
    ),
    *(_rule_option(name) for name in RULE_NAMES),
    Option(
        "HOLMES_CPU_MAX",
        "cpu_max",
        parse_percent_or_off,
        "no dump of any kind while CPU % is above this (off by default)",
        show=_show_optional,
        validate=_check_number(
            "a percentage from 0 to 100, or None (off)", low=-1.0, high=100.0, optional=True
        ),
    ),
    Option(
        "HOLMES_CPU_PROFILE_SECONDS",
        "cpu_profile_seconds",
        lambda name, text: parse_duration(name, text, bare_seconds=True),
        "length of a triggered CPU profile, in seconds",
        show=_show_seconds,
        validate=_check_number("a duration from 1ms to 10m", high=600.0),
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
        validate=_check_number("a duration from 1ms to 10m", high=600.0),
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
            "a number of cores from 0.01 to 4096, or None", high=4096.0, optional=True
        ),
    ),
    Option(
        "HOLMES_MEM_LIMIT",
        "mem_limit",
        parse_size,
        "memory limit, overriding the cgroup / host memory, e.g. 512MiB",
        show=_show_size,
        validate=_check_number(
            "a size in bytes greater than zero, or None", high=float(1 << 62), optional=True
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
        validate=_check_number("a size in bytes greater than zero", high=float(1 << 62)),
    ),
    Option(
        "HOLMES_WEBHOOK_URL",
        "webhook_url",
        parse_url,
        "URL POSTed the event.json of each stored event",
        show=_show_optional,
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
            low=0.999,
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


def _raise(name: str, text: str, expected: str) -> Any:
    raise ConfigError(name, text, expected)


def help_table() -> str:
    """The table as text, for `holmespy --help-env` and the docs."""
    defaults = Config()
    # Defaults that depend on the program and user running, said as such.
    placeholders = {"service": "<script name>", "dump_path": "$TMPDIR/holmespy-<euid>"}
    rows = [
        (o.env, placeholders.get(o.field) or o.show(getattr(defaults, o.field)), o.help)
        for o in OPTIONS
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(
        f"{env:<{width}}  {hlp}\n{'':<{width}}  default: {dflt or '(unset)'}"
        for env, dflt, hlp in rows
    )
