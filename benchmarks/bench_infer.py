"""Whole-image inference speed and peak memory of the residual U-Net on CPU.

Usage: python benchmarks/bench_infer.py [--width 16] [--size 1024x768] [--tile 512] [--margin 64] [--native]
Prints model size, GFLOP per megapixel, megapixels per second and peak RSS. ``--native`` also predicts a
native 3396×2547 image at model scale 0.25 and 0.5 (output at input resolution) to show bounded memory.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from lumenkit.infer import predict_image
from lumenkit.model import count_flops, count_parameters, create_model


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--margin", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--native", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = create_model(width=a.width, classes=7).eval()
    w, h = (int(v) for v in a.size.split("x"))
    gflop_mp = count_flops(model, 1024, 1024) / (1024 * 1024 / 1e6) / 1e9
    print(f"ResUNet f={a.width}: {count_parameters(model) / 1e6:.2f} M params, {gflop_mp:.0f} GFLOP/MP (conv only)")
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    predict_image(model, img[:256, :256], tile=a.tile, margin=a.margin)  # warm-up
    t = time.perf_counter()
    predict_image(model, img, tile=a.tile, margin=a.margin, batch=a.batch)
    dt = time.perf_counter() - t
    mp = w * h / 1e6
    print(f"{w}x{h}, tile {a.tile} margin {a.margin}: {dt:.2f} s, {mp / dt:.3f} MP/s, "
          f"{gflop_mp * mp / dt:.0f} GFLOP/s effective (tiling overhead included); peak RSS {peak_rss_mb():.0f} MB")
    if a.native:
        native = np.random.default_rng(1).integers(0, 256, (2547, 3396, 3), dtype=np.uint8)
        for scale in (0.25, 0.5, 1.0):
            t = time.perf_counter()
            out = predict_image(model, native, 1.0, model_scale=scale, tile=a.tile, margin=a.margin, batch=a.batch)
            print(f"native 3396x2547 at model scale {scale}: {time.perf_counter() - t:.1f} s, "
                  f"codes {out['codes'].shape}; peak RSS so far {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
