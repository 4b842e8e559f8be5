"""Open every page of a rendered report in headless Chromium: no page errors, headings, figures that load, and
on the sections report's pages a legend in the figures and scale bars where lengths are in µm.

Usage: python scripts/browser_check.py reports/sections [--screenshot docs/report.png]
Needs Debian's chromium (/usr/bin/chromium) and `pip install playwright` (no browser download: it drives the
system Chromium). Exit code 1 when a page has a problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lumenkit.workbook.browser import check_report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path, help="report folder holding index.html")
    ap.add_argument("--screenshot", type=Path, default=None, help="PNG of the index page")
    a = ap.parse_args()
    results = check_report(a.report, screenshot=a.screenshot)
    for r in results:
        bars = sorted({b for f in r["figures"] for b in f["scale_bars"]})
        legends = sum(f["legends"] for f in r["figures"])
        print(f"{'FAIL' if r['problems'] else 'ok  '}  {r['page']}: {len(r['figures'])} figures, {legends} legends, "
              f"scale bars {bars}" + (f" — {'; '.join(r['problems'])}" if r["problems"] else ""))
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
