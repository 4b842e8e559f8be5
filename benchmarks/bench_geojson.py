"""Benchmark the QuPath GeoJSON export of one native-size mask (issue 28: ``lumenkit convert --to geojson``).

Input: the mask of a native 3396×2547 synthetic polished section, ``lumenkit.synth.render.generate_section(deposit,
(3396, 2547), default_rng(seed), scale=1.0)`` (generation is not timed). Timed, best of ``--repeats`` after one
warm-up: ``mask_to_geojson(mask, pixel_size_um)`` (grains, exact pixel-edge outlines, measurements) and
``write_grains_geojson`` (the same, written to a file as ``lumenkit convert`` does). Reference, in the same process:
one ``skimage.measure.label`` pass over the same mask (8-connectivity), the first step any grain export takes; the
ratio ``seconds / label_seconds`` compares machines and runs less noisily than seconds.

Prints one line per deposit; the last line is a JSON object: ``seconds`` (worst deposit's best-of export time),
``ratio_to_label`` (of that deposit), ``write_seconds``, ``seconds_per_deposit``, ``grains``, ``pixels``.

    python benchmarks/bench_geojson.py [--deposits pbzn_a cutnt_c] [--repeats 3] [--pixel-size-um 0.5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from skimage.measure import label

from lumenkit.interop.geojson import mask_to_geojson, write_grains_geojson
from lumenkit.synth.deposits import DEPOSITS
from lumenkit.synth.render import generate_section

NATIVE = (3396, 2547)


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Best and all wall times of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deposits", nargs="+", default=["pbzn_a", "cutnt_c"], choices=list(DEPOSITS),
                   help="synthetic deposits whose native section is exported (default: the two with most grains)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pixel-size-um", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    per: dict[str, float] = {}
    worst: dict[str, float | int | str] = {"seconds": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for dep in a.deposits:
            _, mask = generate_section(DEPOSITS[dep], NATIVE, np.random.default_rng(a.seed), scale=1.0)
            fg = np.where((mask == 0) | (mask == 255), 0, mask)
            ref, _ = best_of(partial(label, fg, background=0, connectivity=2), a.repeats)
            best, times = best_of(partial(mask_to_geojson, mask, pixel_size_um=a.pixel_size_um), a.repeats)
            out = Path(tmp) / f"{dep}.geojson"
            write, _ = best_of(partial(write_grains_geojson, mask, out, pixel_size_um=a.pixel_size_um), a.repeats)
            n = len(mask_to_geojson(mask)["features"])
            per[dep] = round(best, 3)
            print(f"{dep}: {NATIVE[0]}x{NATIVE[1]} mask, {n} grains: export best {best:.3f} s, median "
                  f"{float(np.median(times)):.3f} s over {a.repeats} ({best / ref:.1f}x one labelling pass of "
                  f"{ref:.3f} s); written to a file {write:.3f} s ({out.stat().st_size / 1e6:.1f} MB)")
            if best >= float(worst["seconds"]):
                worst = {"seconds": round(best, 3), "deposit": dep, "grains": n, "ratio_to_label": round(best / ref, 2),
                         "label_seconds": round(ref, 3), "write_seconds": round(write, 3)}
    print(json.dumps({**worst, "pixels": NATIVE[0] * NATIVE[1], "seconds_per_deposit": per}))


if __name__ == "__main__":
    main()
