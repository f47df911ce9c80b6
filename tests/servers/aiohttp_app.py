"""An aiohttp server, started the way most are: a script that calls `web.run_app`.

    python tests/servers/aiohttp_app.py PORT

The routes of `asgi_app`, as aiohttp handlers.
"""

from __future__ import annotations

import holmespy

holmespy.start()

import sys  # noqa: E402

from aiohttp import web  # noqa: E402
from faults import handle, park_tasks  # noqa: E402


async def route(request: web.Request) -> web.Response:
    query = {key: request.query.getall(key) for key in request.query}
    if request.path == "/tasks":
        return web.json_response(park_tasks(int(query["n"][0])))
    return web.json_response(handle(request.path, query))


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/{tail:.*}", route)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None)
