"""Real programs with HOLMES_STORAGE set: their dumps end up in SeaweedFS, and none is lost.

These run the example programs in subprocesses, configured only by HOLMES_*
and AWS_* variables, as a user would run them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from holmespy.watcher import Status
from tests.s3_server import SeaweedFS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    "storage" not in Status.__dataclass_fields__,
    reason="the watcher does not start holmespy.storage.uploader.Uploader yet",
)


def test_a_thread_leak_dump_is_shipped_before_the_program_exits(
    run_program, aws_env: SeaweedFS, bucket: str
) -> None:
    run = run_program(
        ROOT / "examples" / "thread_leak.py",
        **aws_env.env(),
        HOLMES_STORAGE=f"s3://{bucket}/prod",
        HOLMES_SERVICE="leaky",
    )
    assert run.bundles() == []  # shipped, so gone from the spool
    client = aws_env.client()
    keys = aws_env.keys(bucket)
    events = {}  # on a loaded machine the default cpu rule may fire too: every event counts
    for event_key in [k for k in keys if k.endswith("/event.json")]:
        assert event_key.startswith("prod/leaky/")
        events[event_key.rsplit("/", 1)[0]] = json.loads(
            client.get_object(Bucket=bucket, Key=event_key)["Body"].read()
        )
    shipped = [f"{folder}/event.json" for folder in events] + [
        f"{folder}/{f['name']}" for folder, event in events.items() for f in event["files"]
    ]
    assert sorted(shipped) == keys
    for folder, event in events.items():
        for listed in event["files"]:
            body = client.get_object(Bucket=bucket, Key=f"{folder}/{listed['name']}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == listed["sha256"]
    [thread_event] = [folder for folder, event in events.items() if event["rule"] == "thread"]
    threads = client.get_object(Bucket=bucket, Key=f"{thread_event}/threads.txt")["Body"].read()
    assert b"leaked-" in threads


def test_a_dump_kept_by_a_wrong_setting_is_shipped_by_the_next_run(
    run_program, aws_env: SeaweedFS
) -> None:
    bucket = f"later-{hashlib.sha256(str(aws_env.root).encode()).hexdigest()[:8]}"
    first = run_program(
        ROOT / "examples" / "thread_leak.py",
        **aws_env.env(),
        HOLMES_STORAGE=f"s3://{bucket}/prod",
        HOLMES_SERVICE="leaky",
    )
    [kept] = first.bundles(rule="thread")  # no such bucket yet: the host ran on, dumps stayed
    assert "thread leak done" in first.proc.stdout
    aws_env.bucket(bucket)
    second = run_program(
        "import holmespy\nholmespy.start()\n",  # starts, exits: the flush at exit ships it
        **aws_env.env(),
        HOLMES_STORAGE=f"s3://{bucket}/prod",
        HOLMES_SERVICE="leaky",
    )
    assert second.bundles() == []
    day, event_id = kept.path.parent.name, kept.path.name
    assert f"prod/leaky/{day}/{event_id}/event.json" in aws_env.keys(bucket)
