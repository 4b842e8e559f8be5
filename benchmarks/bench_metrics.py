"""Metrics cost on a native-size (3396×2547) mask pair: seconds and extra memory.

Usage: python benchmarks/bench_metrics.py [--repeats 5]
Last line: one JSON object with `seconds`, `extra_mb` (and the void-border variant).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from lumenkit.evaluation.metrics import Scores, confusion_matrix, void_border


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    h, w, k = 2547, 3396, 7
    # blocky truth (like real grains), prediction = truth with 10% pixel noise and some ignore pixels
    true = np.repeat(np.repeat(rng.integers(0, k, (h // 16 + 1, w // 16 + 1)), 16, 0), 16, 1)[:h, :w].astype(np.uint8)
    true[rng.random((h, w)) < 0.01] = 255
    pred = np.where(rng.random((h, w)) < 0.9, true, rng.integers(0, k, (h, w))).astype(np.uint8)
    pred[pred == 255] = 0

    def run(border: int) -> tuple[float, float]:
        times = []
        tracemalloc.start()
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            valid = void_border(true, border) if border else None
            cm = confusion_matrix(pred, true, k, valid=valid)
            Scores(cm, [str(i) for i in range(k)]).to_dict()
            times.append(time.perf_counter() - t0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return float(np.median(times)), peak / 2**20

    sec, mb = run(0)
    sec_b, mb_b = run(3)
    print(f"native pair {w}×{h}: metrics {sec:.3f} s (target < 0.5), extra memory {mb:.0f} MB (target < 300)")
    print(f"with a 3-px void border: {sec_b:.3f} s, {mb_b:.0f} MB")
    print(json.dumps({"seconds": round(sec, 4), "extra_mb": round(mb, 1), "seconds_void_border_3": round(sec_b, 4),
                      "extra_mb_void_border_3": round(mb_b, 1), "pixels": h * w}))


if __name__ == "__main__":
    main()
