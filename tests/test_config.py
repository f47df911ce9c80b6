"""Every HOLMES_* variable, in its good and bad forms (DESIGN §2)."""

from __future__ import annotations

import copy
import itertools
import logging
import os
import pickle
import re
import warnings
from pathlib import Path

import pytest

from holmespy import Config, ConfigError, ConfigWarning, Limit, Rule
from holmespy.config import (
    DEFAULT_RULES,
    OPTIONS,
    _duration_parts,
    _is_number,
    help_table,
    parse_duration,
    parse_size,
)
from holmespy.rules import Verdict

GOOD: list[tuple[str, str, str, object]] = [
    ("HOLMES_ENABLE", "0", "enable", False),
    ("HOLMES_ENABLE", "true", "enable", True),
    ("HOLMES_SERVICE", "edge-proxy.v2", "service", "edge-proxy.v2"),
    ("HOLMES_INTERVAL", "500ms", "interval", 0.5),
    ("HOLMES_INTERVAL", "1m30s", "interval", 90.0),
    ("HOLMES_DUMP_PATH", "/var/tmp/dumps", "dump_path", Path("/var/tmp/dumps")),
    ("HOLMES_CPU", "off", "cpu", None),
    ("HOLMES_CPU", "on", "cpu", DEFAULT_RULES["cpu"]),
    ("HOLMES_CPU", "min=20,abs=90", "cpu", Rule(min=20, diff=25, abs=90, cooldown=60)),
    ("HOLMES_MEM", "min=10,diff=25,abs=80,cooldown=5m", "mem", Rule(10, 25, 80, cooldown=300)),
    ("HOLMES_THREAD", "max=500", "thread", Rule(10, 25, 70, cooldown=3600, max=500)),
    (
        "HOLMES_TASK",
        "min=100,limit=2/10m",
        "task",
        Rule(100, 20, 200_000, 600, limit=Limit(2, 600)),
    ),
    ("HOLMES_GCHEAP", "diff=10", "gcheap", Rule(10, 10, 40, 60)),
    ("HOLMES_LOOP", "min=250", "loop", Rule(250, 100, 1000, 60)),
    ("HOLMES_LOOP", "off", "loop", None),
    ("HOLMES_RECORDER", "1m", "recorder", 60.0),
    ("HOLMES_RECORDER", "off", "recorder", None),
    ("HOLMES_RECORDER", "on", "recorder", 30.0),
    ("HOLMES_RECORDER_HZ", "20", "recorder_hz", 20.0),
    ("HOLMES_RECORDER_HZ", "0.5", "recorder_hz", 0.5),
    ("HOLMES_CPU_MAX", "90", "cpu_max", 90.0),
    ("HOLMES_CPU_MAX", "off", "cpu_max", None),
    ("HOLMES_CPU_PROFILE_SECONDS", "10", "cpu_profile_seconds", 10.0),
    ("HOLMES_CPU_PROFILE_SECONDS", "2500ms", "cpu_profile_seconds", 2.5),
    ("HOLMES_CPU_PROFILE_RATE", "25", "cpu_profile_rate", 25),
    ("HOLMES_CPU_PROFILE_RATE", "100Hz", "cpu_profile_rate", 100),
    ("HOLMES_CPU_ENGINE", "PySpy", "cpu_engine", "pyspy"),
    ("HOLMES_HEAP_SECONDS", "1.5", "heap_seconds", 1.5),
    ("HOLMES_EXIT_SECONDS", "0", "exit_seconds", 0.0),
    ("HOLMES_EXIT_SECONDS", "250ms", "exit_seconds", 0.25),
    ("HOLMES_CPU_CORES", "0.5", "cpu_cores", 0.5),
    ("HOLMES_MEM_LIMIT", "512MiB", "mem_limit", 512 * 2**20),
    ("HOLMES_MEM_LIMIT", "2G", "mem_limit", 2 * 2**30),
    ("HOLMES_MEM_LIMIT", "500MB", "mem_limit", 500 * 10**6),
    ("HOLMES_STORAGE", "s3://dumps/prod/", "storage", "s3://dumps/prod"),
    ("HOLMES_SPOOL_MAX", "2GiB", "spool_max", 2 * 2**30),
    (
        "HOLMES_WEBHOOK_URL",
        "https://hooks.example/holmes",
        "webhook_url",
        "https://hooks.example/holmes",
    ),
    ("HOLMES_S3_SSE", "aes256", "s3_sse", "AES256"),
    ("HOLMES_S3_SSE", "aws:kms", "s3_sse", "aws:kms"),
    ("HOLMES_S3_SSE", "off", "s3_sse", None),
    (
        "HOLMES_S3_KMS_KEY_ID",
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd",
        "s3_kms_key_id",
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd",
    ),
    ("HOLMES_PRESIGN", "1h", "presign", 3600.0),
    ("HOLMES_PRESIGN", "off", "presign", None),
    ("HOLMES_LOG_LEVEL", "debug", "log_level", "DEBUG"),
]

BAD: list[tuple[str, str, str]] = [
    ("HOLMES_ENABLE", "maybe", "1 or 0"),
    ("HOLMES_SERVICE", "../etc", "letters, digits"),
    ("HOLMES_SERVICE", "", "letters, digits"),
    ("HOLMES_INTERVAL", "5", "a duration such as 500ms"),
    ("HOLMES_INTERVAL", "5 sec", "a duration such as 500ms"),
    ("HOLMES_INTERVAL", "0s", "from 1ms to 1h"),
    ("HOLMES_INTERVAL", "-1s", "a duration such as 500ms"),
    ("HOLMES_DUMP_PATH", "  ", "a folder path"),
    ("HOLMES_CPU", "min=ten", "non-negative number"),
    ("HOLMES_CPU", "min=10,min=20", "comma-separated"),
    ("HOLMES_CPU", "max=50", "unknown key 'max'"),
    ("HOLMES_MEM", "minimum=3", "unknown key 'minimum'"),
    ("HOLMES_THREAD", "cooldown=10", "a duration"),
    ("HOLMES_TASK", "limit=0/1h", "limit=N/DURATION"),
    ("HOLMES_TASK", "limit=5", "limit=N/DURATION"),
    ("HOLMES_GCHEAP", "diff=-5", "non-negative number"),
    ("HOLMES_LOOP", "min=100", "min= at least 200 (ms"),
    ("HOLMES_LOOP", "max=5000", "unknown key 'max'"),
    ("HOLMES_RECORDER", "500ms", "from 1s to 10m"),
    ("HOLMES_RECORDER", "999ms", "from 1s to 10m"),  # just short of the bound it names
    ("HOLMES_RECORDER", "1h", "from 1s to 10m"),
    ("HOLMES_RECORDER", "30", "a duration such as 500ms"),
    ("HOLMES_RECORDER_HZ", "1000", "from 0.5 to 100"),
    ("HOLMES_RECORDER_HZ", "0.4995", "from 0.5 to 100"),
    ("HOLMES_RECORDER_HZ", "10hz", "from 0.5 to 100"),
    ("HOLMES_CPU_MAX", "120", "a percentage from 0 to 100"),
    ("HOLMES_CPU_MAX", "nan", "a percentage from 0 to 100"),
    ("HOLMES_CPU_PROFILE_SECONDS", "five", "or a number of seconds"),
    ("HOLMES_CPU_PROFILE_SECONDS", "0", "from 1ms to 10m"),
    ("HOLMES_CPU_PROFILE_RATE", "0", "from 1 to 1000"),
    ("HOLMES_CPU_PROFILE_RATE", "1001", "from 1 to 1000"),
    ("HOLMES_CPU_PROFILE_RATE", "49.5", "a whole number"),
    ("HOLMES_CPU_PROFILE_RATE", "-50", "a whole number"),
    ("HOLMES_CPU_PROFILE_RATE", "5²", "a whole number"),  # a digit to isdigit(), not int()
    ("HOLMES_CPU_PROFILE_RATE", "9" * 5000, "a whole number"),  # past int()'s digit limit
    ("HOLMES_CPU_ENGINE", "perf", "one of auto, pyspy, sampler, yappi"),
    ("HOLMES_HEAP_SECONDS", "1h", "from 1ms to 10m"),
    ("HOLMES_EXIT_SECONDS", "1m", "from 0 to 10s"),
    ("HOLMES_CPU_CORES", "0", "a number of cores"),
    ("HOLMES_CPU_CORES", "inf", "a number of cores"),
    ("HOLMES_MEM_LIMIT", "2X", "a size such as 512MiB"),
    ("HOLMES_MEM_LIMIT", "0", "greater than zero"),
    ("HOLMES_STORAGE", "/local/folder", "s3://bucket/prefix"),
    ("HOLMES_STORAGE", "s3://Bad_Bucket/x", "s3://bucket/prefix"),
    ("HOLMES_STORAGE", "s3://bucket/../x", "no empty, '.' or '..' part"),
    ("HOLMES_SPOOL_MAX", "lots", "a size such as 512MiB"),
    ("HOLMES_WEBHOOK_URL", "ftp://x", "an http:// or https:// URL"),
    ("HOLMES_S3_SSE", "aws:kms:mykey", "AES256, aws:kms, or off"),
    ("HOLMES_S3_KMS_KEY_ID", "my key", "printable ASCII, no spaces"),
    ("HOLMES_PRESIGN", "169h", "from 1s to 7 days"),
    ("HOLMES_PRESIGN", "forever", "a duration such as 500ms"),
    ("HOLMES_LOG_LEVEL", "loud", "one of DEBUG, INFO"),
]


@pytest.mark.parametrize(
    ("env", "text", "field", "value"), GOOD, ids=[f"{g[0]}={g[1]}" for g in GOOD]
)
def test_good_values_are_parsed(env: str, text: str, field: str, value: object) -> None:
    assert getattr(Config.from_env({env: text}), field) == value


@pytest.mark.parametrize(("env", "text", "expected"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bad_values_raise_an_error_naming_variable_value_and_form(
    env: str, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({env: text})
    message = str(info.value)
    assert message.startswith(f"{env}={text!r} is invalid: expected ")
    assert expected in message
    assert info.value.name == env


def test_every_variable_has_good_and_bad_cases_here() -> None:
    names = {option.env for option in OPTIONS}
    assert names == {g[0] for g in GOOD}
    assert names - {"HOLMES_DUMP_PATH"} <= {b[0] for b in BAD} | {"HOLMES_DUMP_PATH"}


def test_defaults_follow_holmes_and_the_design() -> None:
    config = Config.from_env({})
    assert config.enable is True
    assert config.interval == 5.0
    assert config.cpu == Rule(min=10, diff=25, abs=70, cooldown=60, limit=Limit(5, 3600))
    assert config.thread is not None
    assert config.thread.cooldown == 3600
    assert config.cpu_profile_seconds == 5.0
    assert config.cpu_profile_rate == 50  # chosen by benchmarks/proxy_capture.py (performance.md)
    assert config.heap_seconds == 3.0
    assert config.cpu_engine == "auto"
    assert config.spool_max == 2**30
    assert config.dump_path is None
    assert config.dump_root().name == f"holmespy-{os.geteuid()}"


def test_the_loop_rule_and_the_flight_recorder_are_on_by_default() -> None:
    config = Config.from_env({})
    assert config.loop == Rule(min=500, diff=100, abs=1000, cooldown=60, limit=Limit(5, 3600))
    assert config.recorder == 30.0
    assert config.recorder_hz == 10.0


def test_a_loop_rule_below_its_heartbeat_is_refused_in_code_too() -> None:
    with pytest.raises(ConfigError, match=r"HOLMES_LOOP.*at least 200"):
        Config(loop=Rule(min=50, diff=100, abs=1000))
    with pytest.raises(ConfigError, match="HOLMES_RECORDER_HZ"):
        Config(recorder_hz=0)


def test_unknown_holmes_variables_warn_with_the_closest_name() -> None:
    with pytest.warns(ConfigWarning, match="HOLMES_TRHEAD is ignored; did you mean HOLMES_THREAD"):
        Config.from_env({"HOLMES_TRHEAD": "off"})


def test_other_variables_are_none_of_our_business() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Config.from_env({"PATH": "/bin", "HOLMESPY": "1", "AWS_REGION": "x"})


def test_programmatic_config_gets_the_same_checks() -> None:
    with pytest.raises(ConfigError, match="HOLMES_INTERVAL=-1"):
        Config(interval=-1)
    with pytest.raises(ConfigError, match="HOLMES_CPU_ENGINE"):
        Config(cpu_engine="perf")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="only HOLMES_THREAD and HOLMES_TASK"):
        Config(cpu=Rule(min=1, diff=1, abs=1, max=5))
    with pytest.raises(ConfigError, match="HOLMES_SERVICE"):
        Config().replace(service="a/b")
    for rate in (0, 2000, 49.5, True, "50"):
        with pytest.raises(ConfigError, match="HOLMES_CPU_PROFILE_RATE"):
            Config(cpu_profile_rate=rate)  # type: ignore[arg-type]
    # Just short of the bounds the messages name: what the variables refuse, so do Configs.
    with pytest.raises(ConfigError, match=r"HOLMES_RECORDER=0\.9995"):
        Config(recorder=0.9995)
    with pytest.raises(ConfigError, match=r"HOLMES_RECORDER_HZ=0\.4995"):
        Config(recorder_hz=0.4995)


def test_every_default_passes_the_check_a_given_value_gets() -> None:
    # Config() checks only the values it is given (its defaults are not checked
    # at each start()): so each default must be one the check would take.
    config = Config()
    for option in OPTIONS:
        option.check(getattr(config, option.field))


def test_config_is_immutable_and_compares_by_value() -> None:
    config = Config.from_env({"HOLMES_DUMP_PATH": "/var/tmp/dumps", "HOLMES_INTERVAL": "1s"})
    with pytest.raises(AttributeError):
        config.interval = 2.0  # type: ignore[misc]
    same = Config(dump_path=Path("/var/tmp/dumps"), interval=1.0, service=config.service)
    assert config == same
    assert hash(config) == hash(same)
    assert config != same.replace(interval=2.0)
    with pytest.raises(TypeError, match="no setting 'intervall'"):
        config.replace(intervall=2.0)


def test_a_dump_path_given_as_text_is_refused() -> None:
    # HOLMES_DUMP_PATH's text becomes a Path; a program must give a Path itself.
    with pytest.raises(ConfigError, match=r"a pathlib\.Path to a folder"):
        Config(dump_path="/var/tmp/dumps")  # type: ignore[arg-type]


def test_replace_makes_a_validated_copy() -> None:
    config = Config(interval=1.0)
    assert config.replace(interval=2.0).interval == 2.0
    assert config.interval == 1.0


def test_describe_shows_each_variable_in_its_own_syntax() -> None:
    shown = Config(mem_limit=512 * 2**20, thread=None).describe()
    assert shown["HOLMES_MEM_LIMIT"] == "512MiB"
    assert shown["HOLMES_THREAD"] == "off"
    assert shown["HOLMES_CPU"] == "min=10,diff=25,abs=70,cooldown=1m,limit=5/1h"
    assert Config.from_env({k: v for k, v in shown.items() if v}).describe() == shown


def test_help_table_lists_every_variable() -> None:
    text = help_table()
    for option in OPTIONS:
        assert option.env in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1ms", 0.001), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("1h1m1s", 3661.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("X", text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("1K", 1024),
        ("1KiB", 1024),
        ("1KB", 1000),
        ("1.5GiB", 3 * 2**29),
        ("1T", 2**40),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size("X", text) == size


def test_durations_are_read_as_their_pattern_says() -> None:
    # parse_duration reads by hand what this pattern says (no `re` at start()):
    # both must agree on every string built from the pieces a duration is made of.
    number = r"[0-9]+(?:\.[0-9]+)?"
    pattern = re.compile(rf"(?:({number})h)?(?:({number})m(?!s))?(?:({number})s)?(?:({number})ms)?")
    pieces = ["1", "0", "5", ".", "h", "m", "s", "ms", " ", "x", "\u0661"]
    for text in map("".join, itertools.product(pieces, repeat=4)):
        match = pattern.fullmatch(text)
        assert _duration_parts(text) == (list(match.groups()) if match else None), text
        assert _is_number(text) == bool(re.fullmatch(number, text)), text


def test_the_configuration_docs_list_every_variable() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for option in OPTIONS:
        assert f"| `{option.env}` |" in docs, f"{option.env} is missing from docs/configuration.md"


# Values that used to be taken, each named after what it would have done.
SLIPS: dict[str, tuple[str, str, str]] = {
    "one-byte-memory-limit": ("HOLMES_MEM_LIMIT", "1", "a size from 1MiB"),
    "unit-without-prefix": ("HOLMES_MEM_LIMIT", "1iB", "a size such as 512MiB"),
    "kelvin-sign-for-k": ("HOLMES_MEM_LIMIT", "1\u212aiB", "a size such as 512MiB"),
    "overflowing-memory-limit": ("HOLMES_MEM_LIMIT", "9" * 400, "of at most 4096PiB"),
    "overflowing-spool": ("HOLMES_SPOOL_MAX", "9" * 400 + "GiB", "of at most 4096PiB"),
    "unclosed-ipv6-webhook": ("HOLMES_WEBHOOK_URL", "http://[::1", "a port from 1 to 65535"),
    "webhook-port-out-of-range": ("HOLMES_WEBHOOK_URL", "http://hooks.example:99999", "1 to"),
    "webhook-port-zero": ("HOLMES_WEBHOOK_URL", "http://hooks.example:0", "1 to 65535"),
    "webhook-without-host": ("HOLMES_WEBHOOK_URL", "https://", "with a host"),
    "webhook-with-a-space": ("HOLMES_WEBHOOK_URL", "https://h ooks.example", "printable ASCII"),
    "prefix-with-newline": ("HOLMES_STORAGE", "s3://dumps/prod\nfake", "no empty, '.'"),
    "prefix-with-escape": ("HOLMES_STORAGE", "s3://dumps/prod\x1b[2J", "no empty, '.'"),
    "prefix-with-dot-part": ("HOLMES_STORAGE", "s3://dumps/prod/./x", "no empty, '.'"),
    "prefix-with-empty-part": ("HOLMES_STORAGE", "s3://dumps/prod//x", "no empty, '.'"),
    "prefix-with-fragment": ("HOLMES_STORAGE", "s3://dumps/prod#x", "no empty, '.'"),
    "interval-below-1ms": ("HOLMES_INTERVAL", "0.0001ms", "from 1ms to 1h"),
    "arabic-indic-digit": ("HOLMES_INTERVAL", "\u0661s", "a duration such as 500ms"),
    "fullwidth-digit": ("HOLMES_CPU_CORES", "\uff15", "a number of cores"),
    "fullwidth-limit-count": ("HOLMES_TASK", "limit=\uff15/1h", "limit=N/DURATION"),
    "unit-twice": ("HOLMES_INTERVAL", "1m1m", "a duration such as 500ms"),
    "units-out-of-order": ("HOLMES_INTERVAL", "30s1m", "a duration such as 500ms"),
    "digit-separator": ("HOLMES_CPU_MAX", "1_0", "a percentage"),
    "digit-separator-in-seconds": ("HOLMES_CPU_PROFILE_SECONDS", "1_0", "a number of seconds"),
    "rule-that-never-fires-max-0": ("HOLMES_THREAD", "max=0", "max= greater than min="),
    "rule-that-never-fires-max-below-min": ("HOLMES_TASK", "min=10,max=5", "greater than min="),
    "rule-that-never-stops": ("HOLMES_TASK", "limit=5/0s", "a DURATION of at least 1s"),
}


@pytest.mark.parametrize(("env", "text", "expected"), SLIPS.values(), ids=SLIPS.keys())
def test_each_slip_is_refused_naming_variable_value_and_form(
    env: str, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({env: text})
    assert info.value.name == env
    assert str(info.value).startswith(f"{env}={text!r} is invalid: expected ")
    assert expected in str(info.value)


def test_a_programmatic_rule_that_can_never_fire_or_never_stop_is_refused() -> None:
    with pytest.raises(ConfigError, match="max= greater than min="):
        Config(thread=Rule(min=10, diff=25, abs=70, max=10))
    with pytest.raises(ConfigError, match="at least 1s"):
        Config(task=Rule(min=10, diff=25, abs=70, limit=Limit(5, 0)))
    with pytest.raises(ConfigError, match="from 1ms to 1h"):
        Config(interval=0.0000001)


def test_a_webhook_password_never_shows_in_an_error_repr_or_description() -> None:
    secret = "https://bot:pa55word@hooks.example/T0/s3cr3t?token=t0k3n"
    with pytest.raises(ConfigError) as info:
        Config.from_env({"HOLMES_WEBHOOK_URL": secret.replace("example/", "example:99999/")})
    config = Config.from_env({"HOLMES_WEBHOOK_URL": secret})
    shown = str(info.value) + repr(config) + str(config.describe())
    for part in ("pa55word", "s3cr3t", "t0k3n"):
        assert part not in shown
    assert "https://***@hooks.example/…" in repr(config)
    assert config.webhook_url == secret  # the real one is kept to be used


# -- the kill switch --


def test_the_kill_switch_wins_over_a_malformed_variable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"HOLMES_ENABLE": "0", "HOLMES_INTERVAL": "soon", "HOLMES_MEM_LIMIT": "9" * 400}
    with pytest.warns(ConfigWarning) as caught:
        config = Config.from_env(env)
    assert config.enable is False
    messages = [str(w.message) for w in caught]
    assert any("HOLMES_INTERVAL='soon' is invalid" in m for m in messages)
    assert any("HOLMES_MEM_LIMIT=" in m for m in messages)
    assert all(m.startswith("HOLMES_ENABLE=0, so this is ignored") for m in messages)
    assert "HOLMES_INTERVAL='soon'" in caplog.text


def test_the_kill_switch_keeps_the_valid_settings_for_doctor_to_show() -> None:
    with pytest.warns(ConfigWarning):
        config = Config.from_env(
            {"HOLMES_ENABLE": "off", "HOLMES_SERVICE": "edge", "HOLMES_CPU": "min=x"}
        )
    assert (config.enable, config.service, config.cpu) == (False, "edge", DEFAULT_RULES["cpu"])


def test_the_kill_switch_wins_even_when_warnings_are_errors() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logging.getLogger("holmespy").disabled = True
        try:
            config = Config.from_env(
                {"HOLMES_ENABLE": "0", "HOLMES_TASK": "max=0", "HOLMES_X": "1"}
            )
        finally:
            logging.getLogger("holmespy").disabled = False
    assert config.enable is False


def test_a_malformed_kill_switch_is_still_an_error() -> None:
    with pytest.raises(ConfigError, match="HOLMES_ENABLE='nope'"):
        Config.from_env({"HOLMES_ENABLE": "nope", "HOLMES_INTERVAL": "soon"})


def test_start_is_a_no_op_under_the_kill_switch_whatever_else_is_set(
    monkeypatch: pytest.MonkeyPatch, holmes_stopped: None
) -> None:
    import holmespy

    monkeypatch.setenv("HOLMES_ENABLE", "0")
    monkeypatch.setenv("HOLMES_WEBHOOK_URL", "http://[::1")
    monkeypatch.setenv("HOLMES_SPOOL_MAX", "9" * 400)
    with pytest.warns(ConfigWarning):
        assert holmespy.start() is None
    assert holmespy.status().running is False


def test_settings_copy_and_pickle_as_values() -> None:
    # Immutable plain classes refuse attribute assignment, which copy and pickle
    # use by default: each rebuilds itself from its values instead.
    config = Config.from_env({"HOLMES_DUMP_PATH": "/var/tmp/dumps", "HOLMES_TASK": "limit=2/1h"})
    for clone in (copy.copy(config), copy.deepcopy(config), pickle.loads(pickle.dumps(config))):
        assert clone == config
        assert clone.dump_path == Path("/var/tmp/dumps")
    rule = Rule(1, 2, 3, 4, 5, Limit(6, 7))
    assert pickle.loads(pickle.dumps(rule)) == copy.deepcopy(rule) == rule
    for verdict in (Verdict.FIRE, Verdict.CPU_MAX):  # the same object again, as an enum's
        assert pickle.loads(pickle.dumps(verdict)) is copy.deepcopy(verdict) is verdict


@pytest.mark.parametrize(
    "text", ["/var/tmp/dumps/", "dumps//today", "./a/./b/", "//srv/x", "///srv", ".", "a/..//b"]
)
def test_the_dump_folder_is_said_as_its_path_would_say_it(text: str) -> None:
    # The start-up line names the folder without importing pathlib.
    config = Config.from_env({"HOLMES_DUMP_PATH": text})
    assert config.dump_folder() == str(Path(text))
    assert config.dump_root() == Path(text)
