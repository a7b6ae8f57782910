"""`/openapi.json`, and `/docs`: Swagger UI rendering it, from files this app serves itself.

The assets come from the installed `swagger_ui_bundle` package (the `swagger-ui-bundle-v2`
distribution: Swagger UI 5, the first to render OpenAPI 3.1; the original
`swagger-ui-bundle` stopped at 4.15, which refuses a 3.1 document). No CDN: the page works
offline. Only the files listed at import are served, by exact name (no path is ever built
from the request), and none of these routes needs credentials or counts against a limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import falcon
from swagger_ui_bundle import swagger_ui_path

if TYPE_CHECKING:
    from api.app import Deps

ROOT = Path(str(swagger_ui_path))
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".map": "application/json",
}
#: The bundle's own index and initializer point at the petstore; /docs replaces them.
ASSETS = frozenset(
    p.name
    for p in ROOT.iterdir()
    if p.is_file() and p.suffix in MEDIA_TYPES and p.name != "swagger-initializer.js"
)
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Flowledger API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      persistAuthorization: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
"""


class OpenApi:
    """The document, generated on first request (every route is added by then) and kept."""

    auth: dict[str, str] = {}

    def __init__(self, app: falcon.App) -> None:
        self.app = app
        self._document: bytes | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._document is None:
            from api.openapi import document  # it imports this module for the asset names

            self._document = json.dumps(document(self.app), ensure_ascii=False).encode()
        resp.content_type = "application/json; charset=utf-8"
        resp.data = self._document


class Docs:
    auth: dict[str, str] = {}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "text/html; charset=utf-8"
        resp.text = PAGE


class Asset:
    auth: dict[str, str] = {}

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in ASSETS:
            raise falcon.HTTPNotFound(description="no such asset")
        resp.content_type = MEDIA_TYPES[Path(name).suffix]
        resp.cache_control = ["public", "max-age=86400"]
        resp.data = (ROOT / name).read_bytes()  # the OS caches it; no copy per process


def add_routes(app: falcon.App, deps: Deps) -> None:
    app.add_route("/openapi.json", OpenApi(app))
    app.add_route("/docs", Docs())
    app.add_route("/docs/assets/{name}", Asset())
