"""Open a rendered report in headless Chromium: no page errors, the expected headings, a screenshot.

Usage: python scripts/browser_check.py reports/synthetic [--screenshot docs/report.png]
Needs Debian's chromium (/usr/bin/chromium) and `pip install playwright` (no browser download: it drives the
system Chromium). Exit code 1 when a page has errors or misses its headings.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

from lumenkit.workbook.browser import check_pages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path, help="report folder holding index.html")
    ap.add_argument("--screenshot", type=Path, default=None, help="PNG of the index page")
    a = ap.parse_args()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(a.report))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    pages = ["index.html", *sorted(p.name for p in a.report.glob("0*.html"))[:2]]
    results = check_pages(base, pages, screenshot=a.screenshot)
    server.shutdown()
    ok = True
    for r in results:
        status = "ok" if not r["errors"] and r["headings"] else "FAIL"
        ok &= status == "ok"
        print(f"{status}  {r['page']}: title {r['title']!r}, headings {r['headings'][:4]}, errors {r['errors']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
