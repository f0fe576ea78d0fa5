"""The dashboard's web server (aiohttp): one page, a JSON API, and a stream of events.

Every page (``/``, ``/runs``, ``/runs/<id>``, ``/waiting``) is the same static document;
its script (``static/app.js``, no build step) reads the path, fetches the JSON it needs and
then follows ``/events`` (server-sent events from the ``Feed``), so what changes in the
fleet appears without a reload and without the page asking on a timer. Nothing here can
change the fleet: there is no route that publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from shared.wire.runs import TERMINAL_RUN
from taskiq_fleet.dashboard import shapes
from taskiq_fleet.dashboard.feed import Feed
from taskiq_fleet.handles import FleetError

STATIC = Path(__file__).parent / "static"
PAGES = ("/", "/runs", "/runs/{run_id}", "/waiting")
KEEPALIVE = 15.0
"""Seconds between comments on an idle event stream, so proxies keep it open."""
LIST_LIMIT = 500
FEED = web.AppKey("feed", Feed)


def make_app(feed: Feed) -> web.Application:
    app = web.Application()
    app[FEED] = feed
    for path in PAGES:
        app.router.add_get(path, _page)
    app.router.add_get("/api/fleet", _fleet)
    app.router.add_get("/api/runs", _runs)
    app.router.add_get("/api/runs/{run_id}", _run)
    app.router.add_get("/api/waiting", _waiting)
    app.router.add_get("/events", _events)
    app.router.add_static("/static", STATIC)
    return app


def _json(feed: Feed, body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({**body, "now": feed.clock()}, status=status)


async def _page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _fleet(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    coordinators = [c.model_dump(mode="json") for c in feed.coordinators]
    workers = sorted(feed.workers.values(), key=lambda w: str(w["name"]))
    return _json(feed, {"workers": workers, "coordinators": coordinators})


async def _runs(request: web.Request) -> web.Response:
    """The newest runs first, filtered by ``status`` and by ``q`` (part of an id or name);
    a whole run id not in memory is asked for."""
    feed = request.app[FEED]
    status = request.query.get("status", "")
    if status and status not in TERMINAL_RUN | {"running"}:
        return _json(feed, {"error": f"unknown status {status!r}"}, 400)
    query = request.query.get("q", "").strip()
    if query and query not in feed.runs:
        with contextlib.suppress(FleetError, ValueError):
            await feed.run(query)
    views = [
        v
        for v in reversed(feed.runs.values())
        if (not status or v.status == status)
        and (not query or query in v.run_id or query in v.name)
    ]
    views.sort(key=lambda v: v.submitted_at, reverse=True)
    return _json(feed, {"runs": [shapes.run_summary(v) for v in views[:LIST_LIMIT]]})


async def _run(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    run_id = request.match_info["run_id"]
    try:
        view = await feed.run(run_id)
    except (FleetError, ValueError) as exc:
        return _json(feed, {"error": str(exc)}, 503)
    if view is None:
        return _json(feed, {"error": f"no run {run_id!r}"}, 404)
    return _json(feed, {"run": shapes.run_detail(view)})


async def _waiting(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    try:
        views = await feed.refresh_runs(LIST_LIMIT)
    except FleetError as exc:
        return _json(feed, {"error": str(exc)}, 503)
    return _json(feed, shapes.waiting(views))


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``data:`` line of JSON per change, until the page closes."""
    feed = request.app[FEED]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    queue = feed.listen()
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    text = await queue.get()
            except TimeoutError:
                await response.write(b": idle\n\n")
                continue
            if text is None:
                break
            await response.write(f"data: {text}\n\n".encode())
    except ConnectionResetError:  # the page closed
        pass
    finally:
        feed.forget(queue)
    return response


@contextlib.asynccontextmanager
async def serving(feed: Feed, host: str, port: int) -> AsyncIterator[int]:
    """The server, listening on ``host:port``, for the length of the block; yields the port
    (the one the system chose, for port 0). Open pages' streams end when it closes."""
    runner = web.AppRunner(make_app(feed), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield int(runner.addresses[0][1])
    finally:
        await feed.close()
        await runner.cleanup()
