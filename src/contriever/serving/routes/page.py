"""The comparison page at `/` (`page.html`: dense, BM25 and hybrid side by side, nothing loaded from
elsewhere) and its icon."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

PAGE_HEADERS = {
    # the page may load nothing from anywhere else: no CDN, no font, no analytics
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# three columns, the page's layout; browsers ask for /favicon.ico whatever the page says
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="6" fill="#2456a6"/>'
    b'<rect x="5" y="7" width="6" height="18" rx="1.5" fill="#fff"/>'
    b'<rect x="13" y="7" width="6" height="18" rx="1.5" fill="#fff" opacity=".8"/>'
    b'<rect x="21" y="7" width="6" height="18" rx="1.5" fill="#fff" opacity=".6"/></svg>'
)

router = APIRouter(include_in_schema=False)
_page = resources.files("contriever.serving").joinpath("page.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
async def index_page() -> HTMLResponse:
    return HTMLResponse(_page, headers=PAGE_HEADERS)


@router.get("/favicon.ico")
@router.get("/favicon.svg")
async def favicon() -> Response:
    return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
