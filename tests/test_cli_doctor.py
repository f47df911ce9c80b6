"""`holmespy doctor`: each check for real, each finding with what to do.

The storage checks against a real S3 server are in test_cli_s3.py.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
from pathlib import Path

import pytest
from test_cli_support import clean_env, cli, script


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment: no HOLMES_* or AWS_* settings but a dump folder."""
    for key in list(os.environ):
        if key.startswith(("HOLMES_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOLMES_DUMP_PATH", str(tmp_path / "dumps"))
    monkeypatch.setenv("HOLMES_CPU_ENGINE", "sampler")  # the py-spy probe has its own test
    return monkeypatch


def findings(capsys, *argv: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = cli(capsys, "doctor", "--json", *argv)
    return result.code, {f["check"]: f for f in json.loads(result.out)}


def test_a_working_setup_is_all_ok(capsys, env, tmp_path):
    code, found = findings(capsys)

    assert code == 0
    assert {check: f["status"] for check, f in found.items()} == {
        "config": "ok",
        "py-spy": "ok",
        "dumps": "ok",
        "storage": "ok",
    }
    assert found["py-spy"]["detail"] == "not used: HOLMES_CPU_ENGINE=sampler"
    me = f"uid {os.geteuid()} ({pwd.getpwuid(os.geteuid()).pw_name})"
    assert found["dumps"]["detail"].startswith(
        f"{tmp_path / 'dumps'} is writable: owned by {me}, mode 0700, "
    )
    assert found["storage"]["detail"] == "local only (HOLMES_STORAGE is not set)"
    assert (tmp_path / "dumps").stat().st_mode & 0o777 == 0o700
    assert list((tmp_path / "dumps").iterdir()) == []  # the probe file is gone


def test_the_table_lists_the_effective_settings_and_findings(capsys, env):
    env.setenv("HOLMES_CPU", "abs=90")

    result = cli(capsys, "doctor")

    assert result.code == 0
    assert "  HOLMES_CPU                   min=10,diff=25,abs=90,cooldown=1m,limit=5/1h" in (
        result.out.splitlines()
    )
    assert any(line.startswith("ok    dumps    ") for line in result.out.splitlines())


def test_a_bad_setting_fails_with_the_fix(capsys, env):
    env.setenv("HOLMES_INTERVAL", "5")

    code, found = findings(capsys)

    assert code == 1
    assert found["config"] == {
        "check": "config",
        "status": "fail",
        "detail": "HOLMES_INTERVAL='5' is invalid: expected a duration such as 500ms, 5s, 1m,"
        " 1h or 1m30s",
        "todo": "fix HOLMES_INTERVAL: a duration such as 500ms, 5s, 1m, 1h or 1m30s",
    }
    assert found["dumps"]["status"] == "ok"  # the other checks still run


def test_an_unknown_variable_and_the_kill_switch_are_warnings(capsys, env):
    env.setenv("HOLMES_INTERVALL", "1s")
    env.setenv("HOLMES_ENABLE", "0")

    result = cli(capsys, "doctor")

    assert result.code == 0
    lines = result.out.splitlines()
    assert "warn  config   unknown setting HOLMES_INTERVALL is ignored; did you mean" in "\n".join(
        lines
    )
    assert "warn  config   HOLMES_ENABLE=0: holmespy does nothing" in lines


def test_a_dump_folder_that_cannot_be_written_fails(capsys, env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    env.setenv("HOLMES_DUMP_PATH", str(blocker / "dumps"))

    code, found = findings(capsys)

    assert code == 1
    assert found["dumps"]["status"] == "fail"
    assert "set HOLMES_DUMP_PATH to a writable folder" in found["dumps"]["detail"]


def test_a_dump_folder_open_to_others_fails_with_the_command_to_fix_it(capsys, env, tmp_path):
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps").chmod(0o777)

    code, found = findings(capsys)

    assert code == 1
    assert found["dumps"]["status"] == "fail"
    assert found["dumps"]["detail"] == (
        f"refused {tmp_path / 'dumps'}: it is writable by group and others (mode 0777);"
        f" run `chmod go-w {tmp_path / 'dumps'}` if what it holds is yours, or set"
        " HOLMES_DUMP_PATH to a folder that only this user can write"
    )


def test_a_dump_folder_planted_as_a_symlink_fails(capsys, env, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dumps").symlink_to(tmp_path / "elsewhere")

    code, found = findings(capsys)

    assert code == 1
    assert "it is a symbolic link, not a folder; remove it" in found["dumps"]["detail"]
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_webhook_url_is_shown_without_its_secret_parts(capsys, env):
    env.setenv("HOLMES_WEBHOOK_URL", "https://hooks.example.com/services/T0/B0/s3cr3tT0ken?k=v")

    result = cli(capsys, "doctor")

    assert "https://hooks.example.com/…" in result.out
    assert "s3cr3tT0ken" not in result.out


def test_py_spy_attaches_to_a_process_here(capsys, env):
    if not (Path(sys.executable).parent / "py-spy").exists() and not shutil.which("py-spy"):
        pytest.skip("py-spy is not installed (pip install 'holmespy[profile]')")
    env.delenv("HOLMES_CPU_ENGINE")

    _, found = findings(capsys)

    pyspy = found["py-spy"]
    if pyspy["status"] == "ok":
        assert pyspy["detail"].startswith("py-spy attached to a test process")
    else:  # a container without ptrace: the finding must say so, and what to do
        assert pyspy["status"] == "warn"
        assert pyspy["detail"].startswith("py-spy cannot profile here: pyspy: ")
        assert "SYS_PTRACE" in pyspy["todo"] or "ptrace_scope" in pyspy["todo"]


def test_the_console_script_exits_1_on_a_failure(tmp_path):
    env = clean_env(HOLMES_DUMP_PATH=str(tmp_path), HOLMES_CPU_ENGINE="sampler", HOLMES_MEM="x")

    result = script("doctor", env=env)

    assert result.code == 1
    assert "fail  config   HOLMES_MEM='x' is invalid" in result.out


def test_the_kill_switch_with_a_malformed_variable_is_a_warning_not_a_failure(capsys, env):
    env.setenv("HOLMES_ENABLE", "0")
    env.setenv("HOLMES_INTERVAL", "soon")

    result = cli(capsys, "doctor", "--json")

    config = [f for f in json.loads(result.out) if f["check"] == "config"]
    assert result.code == 0
    assert {f["status"] for f in config} == {"warn"}
    [ignored] = [f for f in config if "HOLMES_INTERVAL='soon'" in f["detail"]]
    assert ignored["detail"].startswith("HOLMES_ENABLE=0, so this is ignored: ")
    assert ignored["todo"] == "fix it before holmespy is turned back on"
