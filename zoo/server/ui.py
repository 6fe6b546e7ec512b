"""The web page: one HTML file and its script and style, served from the package
(no build step, no third-party script)."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Each load asks the server whether a file changed (a 304 when not, by its ETag): without
# it a browser takes the script and style as fresh for a tenth of their age on disk, so
# after an upgrade it runs the old script against the new server, reloads included.
REVALIDATE = {"Cache-Control": "no-cache"}

# The page keeps a token that can remove artifacts: it runs only its own script, talks
# only to its server, and is never drawn inside another site's frame (where a click meant
# for that site could land on the page's buttons). Its markup sets a few inline styles.
PAGE_HEADERS = {
    **REVALIDATE,
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

# Where the page's links start (index.html's %ROOT%): relative to the page, so a proxy
# serving the server under a path the server was not told (https://host/zoo/) reaches
# its script; under --root-path, that path, which also holds at https://host/zoo.
_ROOT_MARK = "%ROOT%"


class _PageFiles(StaticFiles):
    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
        return response


def add_ui_routes(app, root_path: str = "") -> None:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace(_ROOT_MARK, f"{root_path}/" if root_path else "")

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app.mount("/static", _PageFiles(directory=STATIC), name="static")
