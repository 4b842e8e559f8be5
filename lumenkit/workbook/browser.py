"""Headless-Chromium checks of rendered reports (optional: needs playwright and a system Chromium)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str | None:
    """Path of a system Chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


_FIGURES_JS = """() => Array.from(document.images).map(img => {
  const out = {svg: false, broken: !(img.complete && img.naturalWidth > 0), legends: 0, scale_bars: []};
  if (img.src.startsWith("data:image/svg+xml;base64,")) {
    const bytes = Uint8Array.from(atob(img.src.split(",")[1]), c => c.charCodeAt(0));
    const doc = new DOMParser().parseFromString(new TextDecoder().decode(bytes), "image/svg+xml");
    out.svg = true;
    out.legends = doc.querySelectorAll('[id^="lumenkit-legend"]').length;
    out.scale_bars = Array.from(doc.querySelectorAll('[id^="lumenkit-scale-bar"]'))
      .map(g => g.textContent.trim()).filter(t => t);
  }
  return out;
})"""
"""Per image of a page: failed to load, and for an SVG figure (decoded by the browser) its legends and scale-bar
labels, found by the SVG ids that :mod:`lumenkit.workbook.figures` gives them."""


def check_pages(base_url: str, pages: list[str], screenshot: Path | None = None) -> list[dict[str, Any]]:
    """Load each page, collect JavaScript errors, failed requests, h1/h2 headings and what its figures show.

    Each result holds ``page``, ``title``, ``headings``, ``errors`` (console errors, page errors, failed
    requests) and ``figures``: per image, ``broken`` (did not load), ``svg``, ``legends`` (legend groups) and
    ``scale_bars`` (the text of each scale bar, e.g. ``"200 µm"``).

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
            figures = page.evaluate(_FIGURES_JS)
            if i == 0 and screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            out.append({"page": name, "title": page.title(), "headings": heads, "errors": errors, "figures": figures})
            page.close()
        browser.close()
    return out


@contextlib.contextmanager
def serve(folder: str | Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on a free localhost port while in the block; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def check_report(folder: str | Path, screenshot: Path | None = None) -> list[dict[str, Any]]:
    """Open every page of a rendered report folder (``index.html`` first) in headless Chromium.

    Returns :func:`check_pages`'s results, each with ``problems``: what a reader would meet — errors, a missing
    heading, a broken image, and on the pages of the sections report (``06_sections*.html``) a gallery without a
    legend or, when lengths are in µm, without scale bars.

    Raises:
        RuntimeError: playwright or Chromium missing (the message says how to install them).
    """
    folder = Path(folder)
    pages = ["index.html", *sorted(p.name for p in folder.glob("*.html") if p.name != "index.html")]
    with serve(folder) as base:
        results = check_pages(base, pages, screenshot=screenshot)
    for r in results:
        problems = list(r["errors"])
        if not r["headings"]:
            problems.append("no heading")
        problems += [f"image {i} did not load" for i, f in enumerate(r["figures"]) if f["broken"]]
        if r["page"].startswith("06_sections"):
            svg = [f for f in r["figures"] if f["svg"]]
            if not svg or not any(f["legends"] for f in svg):
                problems.append("no figure with a legend")
            if "lengths in µm" in _page_text(folder / r["page"]) and not any(f["scale_bars"] for f in svg):
                problems.append("lengths in µm but no scale bar")
        r["problems"] = problems
    return results


def _page_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def voila_page(cells: list[str], folder: str | Path, viewport: tuple[int, int] = (1400, 1000),
               timeout: float = 120.0) -> Iterator[Any]:
    """A notebook of ``cells`` (code) rendered live by Voila, opened in headless Chromium; yields the Playwright page.

    The notebook is written into ``folder`` and served from there on a free local port; the page is opened once the
    server answers (within ``timeout`` seconds). Needs ``pip install voila playwright`` and Debian's chromium.
    Everything is stopped on exit.
    """
    import json
    import socket
    import subprocess
    import sys
    import time

    from playwright.sync_api import sync_playwright

    folder = Path(folder)
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "id": f"c{i}",
                     "source": src} for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (folder / "live.ipynb").write_text(json.dumps(nb))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    voila = subprocess.Popen(
        [sys.executable, "-m", "voila", "live.ipynb", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "--show_tracebacks=True"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            deadline = time.time() + timeout
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=30000)
                    break
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(1)
            yield page
            browser.close()
    finally:
        voila.terminate()
        voila.wait(timeout=20)
