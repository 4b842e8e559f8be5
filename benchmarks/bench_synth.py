"""Benchmark the synthetic generator and the loader on native-size synthetic JPEGs.

Prints one line per figure; the last line is a JSON object:
images_per_s_1024x768 / images_per_s_3396x2547 (generation only and with JPEG+PNG encoding),
loader_images_per_s_native_jpeg_scale_0.5 (LumenStoneDataset(..., scale=0.5) reading 3396x2547 JPEGs).

    python benchmarks/bench_synth.py [--n 6] [--n-native 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lumenkit.data.datasets import LumenStoneDataset
from lumenkit.synth.deposits import SCHEDULE
from lumenkit.synth.render import generate_section
from lumenkit.synth.writer import write_dataset


def _encode(image: np.ndarray, mask: np.ndarray) -> None:
    Image.fromarray(image).save(io.BytesIO(), format="JPEG", quality=90, subsampling=0)
    Image.fromarray(mask).save(io.BytesIO(), format="PNG")


def bench_generate(size: tuple[int, int], n: int, scale: float) -> tuple[float, float]:
    gen = enc = 0.0
    for k in range(n):
        rng = np.random.default_rng([0, 0, k])
        t0 = time.perf_counter()
        image, mask = generate_section(SCHEDULE[k % len(SCHEDULE)], size, rng, scale=scale)
        t1 = time.perf_counter()
        _encode(image, mask)
        gen += t1 - t0
        enc += time.perf_counter() - t1
    return n / gen, n / (gen + enc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=6, help="images at 1024x768")
    p.add_argument("--n-native", type=int, default=2, help="images at 3396x2547")
    a = p.parse_args()
    out: dict[str, float] = {}
    g, ge = bench_generate((1024, 768), a.n, 0.5)
    print(f"1024x768 @ x0.5: {g:.2f} images/s generation, {ge:.2f} images/s incl. JPEG+PNG encode")
    out["images_per_s_1024x768"] = round(ge, 3)
    out["images_per_s_1024x768_generation_only"] = round(g, 3)
    g, ge = bench_generate((3396, 2547), a.n_native, 1.0)
    print(f"3396x2547 @ x1.0: {g:.3f} images/s generation ({1 / g:.1f} s/image), {ge:.3f} incl. encode")
    out["images_per_s_3396x2547"] = round(ge, 3)
    out["images_per_s_3396x2547_generation_only"] = round(g, 3)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LUMENKIT_CACHE", str(Path(tmp) / "cache"))
        root = write_dataset(Path(tmp) / "native", n_train=a.n_native, n_test=0, size=(3396, 2547), seed=0,
                             scale=1.0)
        ds = LumenStoneDataset(root, "train", scale=0.5)
        ds.load(0)  # warm the file cache
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            for i in range(len(ds)):
                s = ds.load(i)
        dt = time.perf_counter() - t0
        shape = s["image"].shape
        rate = reps * len(ds) / dt
        print(f"loader: native 3396x2547 JPEG at scale 0.5 -> {shape[1]}x{shape[0]}: {rate:.2f} images/s")
        out["loader_images_per_s_native_jpeg_scale_0.5"] = round(rate, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
