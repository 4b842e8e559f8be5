"""Mineralogy of a whole-section mask streamed band by band: seconds per gigapixel and peak memory by mosaic size.

Input: a tiled mask TIFF (LumenStone codes, 512-px tiles, zlib level 1) written once per size into a temporary
folder from the masks of four native synthetic sections of 2048×2048 px (``generate_section(deposit, (2048, 2048),
rng, scale=1.0)``, deposits pbzn_a, cuni_e, znpb_d, cutnt_c) laid side by side and flipped by position, as
``bench_mosaic.py`` lays out their images (so grains cross tile and band borders). Sizes: about 0.05, 0.2 and 0.4
gigapixels by default.

Timed in a fresh subprocess per size (its peak resident memory, read as VmHWM, is its own):
:func:`lumenkit.mineralogy.stream.stream_mineralogy` on the file — pixels per class, every grain with its full
area and shape (pieces joined across bands), the contact matrix.

Reference, in the same run: the whole-mask functions (``lumenkit.mineralogy.analysis.grains``, ``contact_matrix``,
``modal_composition``) on one native 3396×2547 mask held in memory, as seconds per gigapixel, and the streamed
result on that same mask checked equal to them; ``ratio_to_whole_mask`` is each streamed figure over the reference.

The last line is one JSON object: per size ``seconds_per_gigapixel``, ``peak_mb``, ``grains``, ``joined``; the
reference; the worst ``seconds_per_gigapixel`` and ``peak_mb``.

    python benchmarks/bench_stream_mineralogy.py [--sizes 0.05 0.2 0.4] [--keep DIR]
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
DEPOSITS = ("pbzn_a", "cuni_e", "znpb_d", "cutnt_c")


def build_mask(path: Path, gigapixels: float) -> tuple[int, int]:
    """Write the synthetic mask mosaic (streamed tile by tile); returns ``(width, height)``."""
    import tifffile

    from lumenkit.synth.render import generate_section

    h = max(512, round((gigapixels * 1e9 / ASPECT) ** 0.5 / 512) * 512)
    w = max(512, round(h * ASPECT / 512) * 512)
    blocks = [generate_section(dep, (SIDE, SIDE), np.random.default_rng(i), scale=1.0)[1]
              for i, dep in enumerate(DEPOSITS)]

    def tiles():
        for y in range(0, h, 512):
            for x in range(0, w, 512):
                by, bx = y // SIDE, x // SIDE
                b = blocks[(by * 3 + bx) % len(blocks)][:: 1 if by % 2 == 0 else -1, :: 1 if bx % 2 == 0 else -1]
                yield np.ascontiguousarray(b[y % SIDE: y % SIDE + 512, x % SIDE: x % SIDE + 512])

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(tiles(), shape=(h, w), dtype=np.uint8, tile=(512, 512), photometric="minisblack",
                 compression="zlib", compressionargs={"level": 1})
    return w, h


def _child(mask: str) -> None:
    """Run in a subprocess: stream the mask's mineralogy; print one JSON line."""
    from lumenkit.data.mosaic import MosaicMask
    from lumenkit.mineralogy.stream import stream_mineralogy

    with MosaicMask(mask) as m:  # warm-up: imports (zarr, scipy.spatial) and the file's first tile, not timed
        stream_mineralogy(m.read(0, 64, 0, 64), pixel_size_um=0.5)
    t0 = time.perf_counter()
    res = stream_mineralogy(mask, pixel_size_um=0.5)
    seconds = time.perf_counter() - t0
    peak = rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "grains": len(res.grains), "joined": res.joined,
                      "bands": res.bands}))


def _reference() -> float:
    """Seconds per gigapixel of the whole-mask functions on one native mask in memory; streamed checked equal."""
    import pandas as pd

    from lumenkit.mineralogy.analysis import contact_matrix, grains, modal_composition
    from lumenkit.mineralogy.stream import stream_mineralogy
    from lumenkit.synth.render import generate_section

    _, mask = generate_section("pbzn_a", (3396, 2547), np.random.default_rng(0), scale=1.0)
    codes = [int(c) for c in np.unique(mask) if c != 255]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        whole = grains(mask, 0.5, codes)
        contacts = contact_matrix(mask, codes)
        modal = modal_composition(mask, codes)
        times.append(time.perf_counter() - t0)
    streamed = stream_mineralogy(mask, codes, pixel_size_um=0.5, band_rows=512)
    pd.testing.assert_frame_equal(streamed.grains.reset_index(drop=True), whole.reset_index(drop=True))
    pd.testing.assert_frame_equal(streamed.contacts, contacts)
    pd.testing.assert_frame_equal(streamed.modal(), modal)
    return min(times) / (mask.size / 1e9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=float, default=[0.05, 0.2, 0.4], help="mask sizes in gigapixels")
    p.add_argument("--keep", type=Path, default=None, help="keep the masks in this folder")
    p.add_argument("--child", nargs=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child[0])
        return
    reference = _reference()
    print(f"reference: whole-mask grains, contacts and modal of one native mask in memory: {reference:.1f} s per "
          "gigapixel (streamed result on it equal)", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for gp in a.sizes:
            mask = root / f"mask_{gp:g}gp.tif"
            w, h = build_mask(mask, gp)
            r = run_child(__file__, "--child", str(mask))
            pixels = w * h / 1e9
            rows[f"{gp:g}"] = {"width": w, "height": h, "gigapixels": round(pixels, 3),
                               "seconds": round(r["seconds"], 1),
                               "seconds_per_gigapixel": round(r["seconds"] / pixels, 1),
                               "peak_mb": round(r["peak_mb"]), "grains": r["grains"], "joined": r["joined"],
                               "ratio_to_whole_mask": round(r["seconds"] / pixels / reference, 2)}
            print(f"{w}x{h} ({pixels:.2f} GP): {r['seconds']:.1f} s, {r['seconds'] / pixels:.1f} s/GP, "
                  f"peak {r['peak_mb']:.0f} MB, {r['grains']} grains ({r['joined']} joined across bands)",
                  flush=True)
    print(json.dumps({"sizes": rows, "reference_seconds_per_gigapixel": round(reference, 1),
                      "seconds_per_gigapixel": max(v["seconds_per_gigapixel"] for v in rows.values()),
                      "peak_mb": max(v["peak_mb"] for v in rows.values())}))


if __name__ == "__main__":
    main()
