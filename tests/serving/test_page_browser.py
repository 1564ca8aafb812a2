"""The page in a real browser: headless Chromium (Debian's `chromium` package) driven by Playwright
for Python. Open the page, type a query, see results in all three columns, move with the keyboard.

Skipped, saying why, where Playwright or Chromium is missing (`make test` installs both where it
can: Playwright with the dev extra, Chromium with apt-get when run as root on Debian).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the `serve` extra is not installed (pip install 'contriever[serve]')")
pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)

CHROMIUM_ENV = "CONTRIEVER_CHROMIUM"


def chromium_path() -> str:
    """$CONTRIEVER_CHROMIUM, else `chromium` / `chromium-browser` on PATH; skips the test if none."""
    for candidate in (os.environ.get(CHROMIUM_ENV), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    pytest.skip(
        "Chromium is not installed: the page's browser test needs Debian's `chromium` package "
        f"(apt-get install chromium; `make test` does it when run as root) or ${CHROMIUM_ENV}"
    )


@pytest.fixture
def live_url(searcher):
    """The app served by uvicorn on 127.0.0.1 in a thread of this process."""
    import uvicorn

    from contriever.serving.app import ServeSettings, create_app
    from contriever.serving.server import LOOPBACK_HOSTS

    app = create_app(searcher, ServeSettings(allowed_hosts=LOOPBACK_HOSTS))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(30)
    sock.close()


def test_page_shows_three_columns_of_results_and_works_from_the_keyboard(live_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            outside = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_url) else None)
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(live_url)
            expect(page.locator("#status")).to_contain_text("12 documents")
            expect(page.locator("#q")).to_be_focused()  # autofocus: type straight away

            page.keyboard.type("vitamin deficiency")
            page.keyboard.press("Enter")
            for mode in ("dense", "bm25", "hybrid"):
                column = page.locator(f'section[data-mode="{mode}"]')
                expect(column.locator("article").first).to_be_visible()
                expect(column.locator(".latency")).to_have_text(re.compile(r"^\d+\.\d ms$"))
                assert column.locator("article").count() == 10 or mode == "bm25"
            bm25 = page.locator('section[data-mode="bm25"]')
            assert bm25.locator("article").count() >= 2  # scurvy, rickets, ... share a term
            marks = {text.lower() for text in bm25.locator("mark").all_inner_texts()}
            assert marks and marks <= {"vitamin", "deficiency"}
            assert "q=vitamin+deficiency" in page.url  # shareable

            # keyboard: down into the results, across the columns, "/" back to the box
            page.keyboard.press("ArrowDown")
            focused = page.evaluate("document.activeElement.closest('section')?.dataset.mode")
            assert focused == "dense"
            page.keyboard.press("ArrowDown")
            page.keyboard.press("ArrowRight")
            assert page.evaluate("document.activeElement.closest('section')?.dataset.mode") == "bm25"
            page.keyboard.press("/")
            expect(page.locator("#q")).to_be_focused()

            page.screenshot(path=str(tmp_path / "page.png"))
            assert (tmp_path / "page.png").stat().st_size > 10_000
            assert errors == [] and outside == []  # no script error, nothing fetched from elsewhere
        finally:
            browser.close()


def test_page_reports_a_server_error_in_the_columns(live_url):
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page()
            page.goto(live_url + "?q=" + "x" * 10_001)  # over --max-chars: every column says why
            for mode in ("dense", "bm25", "hybrid"):
                expect(page.locator(f'section[data-mode="{mode}"] .state')).to_contain_text("10,000")
        finally:
            browser.close()
