"""A WSGI app for gunicorn (sync and gthread workers).

    gunicorn --chdir tests/servers wsgi_app:app

Routes: `/` answers, `/spin?n=SECONDS` burns CPU in `hot_spin`,
`/leak?n=COUNT` leaks threads, `/holmespy` says what the worker's watcher
does. The two lines below are the whole integration; under `holmespy run`
they find the watcher already started and do nothing more.
"""

from __future__ import annotations

import holmespy

holmespy.start()

import json  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

from faults import handle  # noqa: E402


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    reply = handle(environ["PATH_INFO"], parse_qs(environ.get("QUERY_STRING", "")))
    body = json.dumps(reply).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
