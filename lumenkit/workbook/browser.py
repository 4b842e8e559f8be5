"""Headless-Chromium checks of rendered reports (optional: needs playwright and a system Chromium)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str | None:
    """Path of a system Chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def check_pages(base_url: str, pages: list[str], screenshot: Path | None = None) -> list[dict[str, Any]]:
    """Load each page, collect JavaScript errors, failed requests and h1/h2 headings.

    Args:
        base_url: where the report folder is served (``http://127.0.0.1:PORT``).
        pages: page paths relative to ``base_url``.
        screenshot: write a full-page PNG of the first page here.

    Raises:
        RuntimeError: playwright or Chromium missing (the message says how to install them).
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RuntimeError("pip install playwright (it drives the system Chromium; no browser download)") from None
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("no Chromium found; on Debian/Ubuntu: apt-get install chromium")
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        for i, name in enumerate(pages):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e, errs=errors: errs.append(str(e)))
            page.on("console", lambda m, errs=errors: errs.append(m.text) if m.type == "error" else None)
            page.on("requestfailed", lambda r, errs=errors: errs.append(f"failed request {r.url}"))
            page.goto(f"{base_url}/{name}", wait_until="load")
            heads = [h.strip() for h in page.locator("h1, h2").all_inner_texts()]
            if i == 0 and screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            out.append({"page": name, "title": page.title(), "headings": heads, "errors": errors})
            page.close()
        browser.close()
    return out
