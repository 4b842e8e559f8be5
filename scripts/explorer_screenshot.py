"""Render the ipywidgets explorer live (Voila) in headless Chromium, move one control, save a screenshot.

Usage: python scripts/explorer_screenshot.py [--data data/synthetic] [--out docs/explorer.png]
Needs `pip install voila playwright` and Debian's chromium. Without --data it generates a small synthetic dataset.
Prints what it did; exit code 1 if the widgets did not render or the control had no effect.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from lumenkit.workbook.browser import voila_page

CELL = "from lumenkit.workbook.widgets import Explorer\nexplorer = Explorer(DATA, max_side=640)\nexplorer"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="dataset folder (default: generate 4 synthetic images)")
    ap.add_argument("--out", type=Path, default=Path("docs/explorer.png"))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the widgets")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data
        if data is None:
            from lumenkit.synth.writer import write_dataset

            data = write_dataset(Path(tmp) / "synthetic", n_train=4, n_test=0, size=(768, 576), seed=0)
        cell = f"DATA = {str(Path(data).resolve())!r}\n" + CELL
        with voila_page([cell], tmp, viewport=(1400, 1000), timeout=a.timeout) as page:
            page.wait_for_selector(".widget-image img, img.widget-image", timeout=a.timeout * 1000)
            before = page.locator(".widget-image img, img.widget-image").first.get_attribute("src")
            toggle = page.locator(".lumenkit-minerals button").nth(1)  # first mineral after background
            label = toggle.inner_text()
            toggle.click()
            page.wait_for_timeout(3000)
            after = page.locator(".widget-image img, img.widget-image").first.get_attribute("src")
            a.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(a.out), full_page=True)
    from PIL import Image

    Image.open(a.out).convert("RGB").quantize(colors=256).save(a.out, optimize=True)  # small enough to commit
    changed = before != after
    print(f"explorer rendered in Chromium via Voila; clicked the {label!r} toggle: view "
          f"{'changed' if changed else 'did NOT change'}; screenshot {a.out}")
    return 0 if changed else 1


if __name__ == "__main__":
    sys.exit(main())
