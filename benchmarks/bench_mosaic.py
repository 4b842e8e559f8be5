"""Whole-section mosaics streamed end to end: seconds per gigapixel and peak memory at three mosaic sizes.

Input: a synthetic tiled BigTIFF mosaic at native scale (×100, scale 1.0), written once per size into a temporary
folder: four native synthetic sections of 2048×2048 px (``generate_section(deposit, (2048, 2048), rng,
scale=1.0)``, deposits pbzn_a, cuni_e, znpb_d, cutnt_c) laid side by side, flipped by position, to fill the mosaic
(512-px tiles, zlib level 1). Sizes: about 0.1, 0.4 and 1.2 gigapixels (the last ~40 000 × 30 000 px).

Model: the default recipe's network and scale (``TrainConfig()``: ResUNet f=16, depth 4, at scale 0.125 of native),
weights untrained (the network's cost does not depend on them). Timed in a fresh subprocess per size, so its peak
resident memory (VmHWM) is its own: ``predict_mosaic`` with the default tiling — read, resample, predict, upsample,
write the tiled pyramidal BigTIFF mask, the confidence map and the overview.

Reference, in the same run: ``predict_image`` of one native 3396×2547 image held in memory (the whole-image path of
``lumenkit predict``), as seconds per gigapixel; ``ratio_to_whole_image`` is the streamed figure over it.

Goals on the 2-core build machine: peak memory flat in the mosaic's size and ≤ 1.5 GB; ≤ 90 s per gigapixel.
The last line is one JSON object: ``seconds_per_gigapixel`` and ``peak_mb`` per size, the reference, the goals.

With ``--refine`` both the mosaic and the reference are predicted with the guided upsampling (``--refine``),
which decodes every full-resolution row once more to guide it.

    python benchmarks/bench_mosaic.py [--sizes 0.1 0.4 1.2] [--keep DIR] [--refine]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import rss_mb, run_child

SIDE = 2048
ASPECT = 4 / 3


def build_mosaic(path: Path, gigapixels: float) -> tuple[int, int]:
    """Write the synthetic mosaic (streamed tile by tile); returns ``(width, height)``."""
    import tifffile

    from lumenkit.synth.render import generate_section

    h = max(512, round((gigapixels * 1e9 / ASPECT) ** 0.5 / 512) * 512)
    w = max(512, round(h * ASPECT / 512) * 512)
    blocks = [generate_section(dep, (SIDE, SIDE), np.random.default_rng(i), scale=1.0)[0]
              for i, dep in enumerate(("pbzn_a", "cuni_e", "znpb_d", "cutnt_c"))]

    def block(by: int, bx: int) -> np.ndarray:
        b = blocks[(by * 3 + bx) % len(blocks)]
        return b[:: 1 if by % 2 == 0 else -1, :: 1 if bx % 2 == 0 else -1]

    def tiles():
        for y in range(0, h, 512):
            for x in range(0, w, 512):
                by, bx = y // SIDE, x // SIDE
                yield np.ascontiguousarray(block(by, bx)[y % SIDE : y % SIDE + 512, x % SIDE : x % SIDE + 512])

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(512, 512), photometric="rgb",
                 compression="zlib", compressionargs={"level": 1})
    return w, h


def _child(mosaic: str, out: str, refine: str = "plain") -> None:
    """Run in a subprocess: predict the mosaic with the default network; print one JSON line."""
    from lumenkit.data.catalogue import CLASS_SETS, ClassMap
    from lumenkit.inference.mosaic import predict_mosaic
    from lumenkit.inference.refine import Refine
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model
    from lumenkit.training.config import TrainConfig

    cfg = TrainConfig()
    codes = list(CLASS_SETS["S1"])
    net = create_model(cfg.arch, in_channels=3, classes=len(codes), width=cfg.width, depth=cfg.depth).eval()
    ck = Checkpoint(net, ClassMap(codes), float(cfg.scale))
    t0 = time.perf_counter()
    res = predict_mosaic(ck, mosaic, out, scale=1.0, progress=False, refine=Refine() if refine == "refine" else None)
    seconds = time.perf_counter() - t0
    peak = rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "size": res.size}))


def _reference(refine: bool = False) -> float:
    """Seconds per gigapixel of predict_image on one native image in memory (warm), refined or not."""
    from lumenkit.data.catalogue import CLASS_SETS, ClassMap
    from lumenkit.inference.predict import predict_image
    from lumenkit.inference.refine import Refine
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model
    from lumenkit.synth.render import generate_section
    from lumenkit.training.config import TrainConfig

    cfg = TrainConfig()
    codes = list(CLASS_SETS["S1"])
    net = create_model(cfg.arch, in_channels=3, classes=len(codes), width=cfg.width, depth=cfg.depth).eval()
    ck = Checkpoint(net, ClassMap(codes), float(cfg.scale))
    image, _ = generate_section("pbzn_a", (3396, 2547), np.random.default_rng(0), scale=1.0)
    how = Refine() if refine else None
    predict_image(ck, image, 1.0, refine=how)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        predict_image(ck, image, 1.0, refine=how)
        times.append(time.perf_counter() - t0)
    return min(times) / (3396 * 2547 / 1e9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=float, default=[0.1, 0.4, 1.2], help="mosaic sizes in gigapixels")
    p.add_argument("--keep", type=Path, default=None, help="keep the mosaics and outputs in this folder")
    p.add_argument("--refine", action="store_true",
                   help="predict with --refine (guided upsampling), the reference refined too")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(*a.child)
        return
    reference = _reference(a.refine)
    print(f"reference: predict_image of one native image in memory: {reference:.1f} s per gigapixel")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for gp in a.sizes:
            mosaic = root / f"mosaic_{gp:g}gp.tif"
            t0 = time.perf_counter()
            w, h = build_mosaic(mosaic, gp)
            built = time.perf_counter() - t0
            r = run_child(__file__, "--child", str(mosaic), str(root / f"out_{gp:g}gp"),
                          "refine" if a.refine else "plain")
            pixels = w * h / 1e9
            rows[f"{gp:g}"] = {"width": w, "height": h, "gigapixels": round(pixels, 3),
                               "seconds": round(r["seconds"], 1),
                               "seconds_per_gigapixel": round(r["seconds"] / pixels, 1),
                               "peak_mb": round(r["peak_mb"]), "ratio_to_whole_image": round(
                                   r["seconds"] / pixels / reference, 2)}
            print(f"{w}x{h} ({pixels:.2f} GP, written in {built:.0f} s): {r['seconds']:.1f} s, "
                  f"{r['seconds'] / pixels:.1f} s/GP, peak {r['peak_mb']:.0f} MB", flush=True)
            if a.keep is None:
                mosaic.unlink()
    print(json.dumps({"refine": a.refine, "sizes": rows, "reference_seconds_per_gigapixel": round(reference, 1),
                      "goal_seconds_per_gigapixel": 90, "goal_peak_mb": 1536,
                      "seconds_per_gigapixel": max(v["seconds_per_gigapixel"] for v in rows.values()),
                      "peak_mb": max(v["peak_mb"] for v in rows.values())}))


if __name__ == "__main__":
    main()
