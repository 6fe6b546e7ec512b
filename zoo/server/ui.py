"""The web page: one HTML file and its script and style, served from the package
(no build step, no third-party script)."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Each load asks the server whether a file changed (a 304 when not, by its ETag): without
# it a browser takes the script and style as fresh for a tenth of their age on disk, so
# after an upgrade it runs the old script against the new server, reloads included.
REVALIDATE = {"Cache-Control": "no-cache"}


class _RevalidatedFiles(StaticFiles):
    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(REVALIDATE)
        return response


def add_ui_routes(app) -> None:
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers=REVALIDATE)

    app.mount("/static", _RevalidatedFiles(directory=STATIC), name="static")
