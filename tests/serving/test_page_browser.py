"""The page in a real browser: headless Chromium (Debian's `chromium` package) driven by Playwright
for Python. Open the page, type a query, see results in all three columns, move with the keyboard.

Skipped, saying why, where Playwright or Chromium is missing (`make test` installs both where it
can: Playwright with the dev extra, Chromium with apt-get when run as root on Debian).
"""

from __future__ import annotations

import os
import re
import shutil

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
def live_url(searcher, serve_app):
    """The app served by uvicorn on 127.0.0.1 in a thread of this process."""
    from contriever.serving.app import ServeSettings, create_app
    from contriever.serving.server import LOOPBACK_HOSTS

    with serve_app(create_app(searcher, ServeSettings(allowed_hosts=LOOPBACK_HOSTS))) as url:
        yield url


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
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)  # favicon 404
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

            # k = 5: at most five in every column, BM25 included (it has seven matches for this query)
            page.locator("#k").select_option("5")
            page.locator("#q").fill("vitamin cells diabetes mosquitoes vaccines")
            page.keyboard.press("Enter")
            for mode in ("dense", "bm25", "hybrid"):
                expect(page.locator(f'section[data-mode="{mode}"] article')).to_have_count(5)

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


def test_docs_page_lists_the_operations_in_chromium(live_url, client):
    """Swagger UI renders the OpenAPI 3.1 document: every operation appears, and none of its error banners."""
    from playwright.sync_api import expect, sync_playwright

    paths = client.get("/openapi.json").json()["paths"]
    operations = sum(len(methods) for methods in paths.values())
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors, outside = [], []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_url) else None)
            page.goto(live_url + "docs")
            expect(page.locator(".opblock")).to_have_count(operations)
            summaries = page.locator(".opblock-summary-path").all_inner_texts()
            assert {s.replace("\u200b", "") for s in summaries} == set(paths)
            assert "Unable to render" not in page.content()
            assert errors == [] and outside == []
        finally:
            browser.close()
