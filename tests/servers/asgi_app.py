"""A bare ASGI app for uvicorn (one worker, or `--workers 2`).

    uvicorn --app-dir tests/servers asgi_app:app

The routes of `wsgi_app`, run on the event loop (so `/spin` blocks it), plus
`/tasks?n=COUNT`, which parks tasks that never finish.
"""

from __future__ import annotations

import holmespy

holmespy.start()

import json  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

from faults import handle, park_tasks  # noqa: E402


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]  # startup, shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if scope["path"] == "/tasks":
        reply = park_tasks(int(query["n"][0]))
    else:
        reply = handle(scope["path"], query)
    body = json.dumps(reply).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
