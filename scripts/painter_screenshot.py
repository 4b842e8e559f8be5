"""Run the painting loop live (Voila) in headless Chromium: paint two strokes with the mouse, fine-tune, suggest,
and save a screenshot.

Usage: python scripts/painter_screenshot.py [--model RUN/model.pt] [--out docs/painter.png]
Needs `pip install voila playwright` and Debian's chromium. Without --model it uses a small random model (the loop,
not the model's quality, is what is shown). The strokes are dragged with the mouse on the canvas, so they travel the
browser → ipycanvas → kernel path a user's do; the script then checks the kernel saved them as a sparse mask, that
fine-tuning ran and that the prediction changed. Prints what it did; exit code 1 if any step did not happen.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from lumenkit.workbook.browser import voila_page

CELL = """from lumenkit.workbook.painter import StrokePainter
painter = StrokePainter(IMAGE, MODEL, FOLDER, scale=SCALE, max_side=640, steps=15)
painter.mineral.value = CODE
painter"""



def _setup(tmp: Path, model: Path | None) -> tuple[Path, Path, float, int, list[tuple[float, float]]]:
    """A synthetic section, a model, and two stroke paths (canvas px) inside grains of one mineral."""
    import torch

    from lumenkit.data.catalogue import ClassMap
    from lumenkit.data.imageio import save_image
    from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
    from lumenkit.models.resunet import create_model
    from lumenkit.synth.render import generate_section

    image, mask = generate_section("pbzn_a", (640, 480), np.random.default_rng(3), scale=0.25)
    save_image(image, tmp / "section.png")
    if model is None:
        torch.manual_seed(0)
        net = create_model("resunet", width=8, depth=3, classes=3).eval()
        model = tmp / "model.pt"
        Checkpoint(net, ClassMap([0, 1, 2]), 0.125).save(model)
    code = 2 if 2 in load_checkpoint(model).class_map.codes else int(load_checkpoint(model).class_map.codes[-1])
    ys, xs = np.nonzero(mask == code)
    order = np.argsort(xs)
    points = [(float(xs[order[len(order) // 4]]), float(ys[order[len(order) // 4]])),
              (float(xs[order[3 * len(order) // 4]]), float(ys[order[3 * len(order) // 4]]))]
    return tmp / "section.png", model, 0.25, code, points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: a small random model)")
    ap.add_argument("--out", type=Path, default=Path("docs/painter.png"))
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each step")
    a = ap.parse_args()
    from lumenkit.data.imageio import read_mask

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        image, model, scale, code, points = _setup(tmp, a.model)
        folder = tmp / "strokes"
        cell = (f"IMAGE, MODEL, FOLDER, SCALE, CODE = {str(image)!r}, {str(model.resolve())!r}, {str(folder)!r}, "
                f"{scale}, {code}\n" + CELL)
        with voila_page([cell], tmp, viewport=(1100, 900), timeout=a.timeout) as page:
            canvas = page.locator("canvas.lumenkit-painter, .lumenkit-painter canvas").last
            canvas.wait_for(timeout=a.timeout * 1000)
            page.wait_for_timeout(2000)
            box = canvas.bounding_box()
            f = box["width"] / 640
            second = [(points[0][0], points[0][1] + 4), (points[1][0], points[1][1] + 4)]
            for (x0, y0), (x1, y1) in (points, second):
                page.mouse.move(box["x"] + x0 * f, box["y"] + y0 * f)
                page.mouse.down()
                for t in np.linspace(0, 1, 12)[1:]:
                    page.mouse.move(box["x"] + (x0 + t * (x1 - x0)) * f, box["y"] + (y0 + t * (y1 - y0)) * f)
                    page.wait_for_timeout(30)
                page.mouse.up()
                page.wait_for_timeout(1500)
            page.get_by_role("button", name="Fine-tune").click()
            page.wait_for_function("() => document.body.innerText.includes('fine-tuned')", timeout=a.timeout * 1000)
            page.get_by_role("button", name="Suggest").click()
            page.wait_for_timeout(3000)
            status = page.locator("body").inner_text()
            a.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(a.out), full_page=True)
        saved = folder / "masks" / "train" / "section.png"
        painted = int((read_mask(saved) == code).sum()) if saved.is_file() else 0
    from PIL import Image

    shot = Image.open(a.out).convert("RGB")  # reduced to 3/4 and 128 colours: small enough to commit
    shot.resize((shot.width * 3 // 4, shot.height * 3 // 4), Image.LANCZOS).quantize(colors=128).save(a.out,
                                                                                                      optimize=True)
    line = next((ln for ln in status.splitlines() if "fine-tuned" in ln), "")
    print(f"painter rendered in Chromium via Voila; two strokes dragged with the mouse: {painted} px of code {code} "
          f"saved by the kernel; {line or 'fine-tuning did NOT finish'}; screenshot {a.out}")
    return 0 if painted and line else 1


if __name__ == "__main__":
    sys.exit(main())
