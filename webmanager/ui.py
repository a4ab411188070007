"""The browser UI: serves the page at / and its files under /ui/ (webmanager/ui/), with a Content Security Policy that
lets the page reach only this cluster's servers."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from cluster.config import NodeConfig

logger = logging.getLogger(__name__)

FILES = Path(__file__).with_name("ui")
ROUTES = frozenset({("GET", "/"), ("GET", "/ui")})  # (method, canonical path): not API, so not in the OpenAPI document


def _policy(servers: list[NodeConfig]) -> str:
    origins = " ".join(f"{n.url} {n.url.replace('http', 'ws', 1)}" for n in servers)
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {origins}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


# every file is revalidated (a cheap 304 when unchanged), so an upgraded server never runs with an old script
FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


async def _file_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/ui/"):
        response.headers.update(FILE_HEADERS)


def install(app: web.Application, servers: list[NodeConfig]) -> None:
    headers = {"Content-Security-Policy": _policy(servers), **FILE_HEADERS}

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(FILES / "index.html", headers=headers)

    app.router.add_get("/", page)
    app.router.add_static("/ui/", FILES, append_version=False)
    app.on_response_prepare.append(_file_headers)
