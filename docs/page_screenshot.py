"""Screenshot of the page of `contriever serve` (docs/serve-page.png), taken by headless Chromium.

    python docs/page_screenshot.py --index outputs/serve/scifact-index --data ../shared/data/scifact \
        --query "vitamin D deficiency and bone fractures" --output docs/serve-page.png

Starts the server on 127.0.0.1 (a free port), opens the page in Debian's `chromium` through
Playwright, types the query, presses Enter, waits for the three columns, and saves the viewport.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from contriever.serving.loadtest import ServerProcess


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", required=True)
    parser.add_argument("--data")
    parser.add_argument("--query", default="vitamin D deficiency and bone fractures")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=760)
    parser.add_argument("--output", default="docs/serve-page.png")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args()
    if not args.chromium:
        raise SystemExit("error: Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    server_args = ["--index", args.index] + (["--data", args.data] if args.data else [])
    with ServerProcess(server_args) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(f"{server.url}/?k={args.k}")
        expect(page.locator("#status")).to_contain_text("documents")
        page.keyboard.type(args.query)
        page.keyboard.press("Enter")
        for mode in ("dense", "bm25", "hybrid"):
            expect(page.locator(f'section[data-mode="{mode}"] article').first).to_be_visible(timeout=60_000)
        page.keyboard.press("ArrowDown")  # show the keyboard focus on the first result
        page.screenshot(path=args.output)
        browser.close()
    from PIL import Image

    # a 64-colour palette keeps the text sharp and the file small enough to commit
    Image.open(args.output).convert("RGB").quantize(colors=64).save(args.output, optimize=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
