"""The `holmespy` command as a whole: verbs, usage errors, exit status, pipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_support import clean_env, cli, script, write_bundle

from holmespy import __version__

VERBS = ("ls", "fetch", "show", "top", "flame", "diff", "run", "doctor")


def test_help_lists_every_verb(capsys):
    result = cli(capsys, "--help")

    assert result.code == 0
    for verb in VERBS:
        assert f"    {verb} " in result.out


def test_version(capsys):
    assert cli(capsys, "--version").out.strip() == f"holmespy {__version__}"


def test_a_usage_error_is_one_line_with_exit_2(capsys):
    unknown = cli(capsys, "frobnicate")
    missing = cli(capsys, "top")

    assert unknown.code == missing.code == 2
    assert unknown.err.count("\n") == missing.err.count("\n") == 1
    assert "invalid choice: 'frobnicate'" in unknown.err
    assert missing.err == (
        "holmespy top: the following arguments are required: FILE (see holmespy top --help)\n"
    )


def test_python_dash_m_runs_the_same_command(tmp_path):
    write_bundle(tmp_path, service="api", rule="thread")
    env = clean_env()

    as_module = subprocess.run(
        [sys.executable, "-m", "holmespy", "ls", "--json", "--from", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert as_module.returncode == 0
    # --json, not the table: its AGE column may tick between the two runs.
    assert as_module.stdout == script("ls", "--json", "--from", str(tmp_path), env=env).out


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    for n in range(100):
        write_bundle(tmp_path, service=f"svc{n % 3}", rule="thread")
    holmespy = Path(sys.executable).parent / "holmespy"

    # ~200 KiB of JSON: more than a pipe holds, so the writer meets the closed pipe.
    piped = subprocess.run(
        f"'{holmespy}' ls --json --from '{tmp_path}' | head -1",
        shell=True,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert piped.stdout == "[\n"
    assert piped.stderr == ""


def test_help_env_lists_every_setting_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    from holmespy.cli import main
    from holmespy.config import OPTIONS

    with pytest.raises(SystemExit) as exit_info:
        main(["--help-env"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in OPTIONS:
        assert option.env in out
    assert "default: 5s" in out  # HOLMES_INTERVAL
