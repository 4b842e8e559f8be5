"""Labels and confidence at full resolution: every class upsampled then compared, against the boundary-only blend.

Input: the probabilities a confident model gives for a native 3396×2547 synthetic section (deposit pbzn_a, seed
0): its true mask brought to the default model scale (1/8 of native, 424×318) as one-hot over the 7 S1 classes,
blurred (Gaussian, σ = 1 px at that scale) and mixed with 5 % uniform, so boundaries are soft as a network's are.
Both ways bring them to 3396×2547 in strips of 256 output rows (as ``resize_probs`` and the streamed mosaic do):

* ``full``: :func:`lumenkit.inference.tiling.upsample_rows` (all 7 classes at full resolution), then the maximum;
* ``labels``: :func:`lumenkit.inference.tiling.upsample_labels` (one blended channel where both source rows agree
  on the class, all classes only along boundaries).

The outputs are checked equal; times are the best of ``--repeats`` after one warm-up, in one process on torch's
threads. The last line is one JSON object: ``seconds_full``, ``seconds_labels``, ``speedup`` (full / labels) and
``mixed_share`` (the share of output pixels whose two source rows disagree).

    python benchmarks/bench_upsample.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def probabilities(scale: float = 0.125) -> torch.Tensor:
    from scipy import ndimage as ndi

    from lumenkit.data.catalogue import CLASS_SETS, ClassMap
    from lumenkit.data.imageio import resize_mask
    from lumenkit.synth.render import generate_section

    _, mask = generate_section("pbzn_a", (3396, 2547), np.random.default_rng(0), scale=1.0)
    small = resize_mask(mask, (round(3396 * scale), round(2547 * scale)))
    idx = ClassMap(list(CLASS_SETS["S1"])).to_index(small)
    k = len(CLASS_SETS["S1"])
    onehot = np.stack([ndi.gaussian_filter((idx == c).astype(np.float32), 1.0) for c in range(k)])
    p = 0.95 * onehot / onehot.sum(0, keepdims=True).clip(1e-6) + 0.05 / k
    return torch.from_numpy(p.astype(np.float32))


def run(probs: torch.Tensor, size: tuple[int, int], labels: bool, strip: int = 256) -> tuple[np.ndarray, np.ndarray]:
    from lumenkit.inference.tiling import _linear_weights, upsample_labels, upsample_rows

    out_w, out_h = size
    weights = _linear_weights(probs.shape[1], out_h)
    r0, r1, _ = weights
    idx = np.empty((out_h, out_w), np.uint8)
    conf = np.empty((out_h, out_w), np.float32)
    for s in range(0, out_h, strip):
        e = min(out_h, s + strip)
        a, b = int(r0[s]), int(r1[e - 1]) + 1
        if labels:
            c, i = upsample_labels(probs[:, a:b], a, weights, s, e, out_w)
        else:
            c, i = upsample_rows(probs[:, a:b], a, weights, s, e, out_w).max(dim=0)
        idx[s:e], conf[s:e] = i.numpy(), c.numpy()
    return idx, conf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    probs = probabilities()
    size = (3396, 2547)
    full, fast = run(probs, size, False), run(probs, size, True)
    np.testing.assert_array_equal(full[0], fast[0])
    np.testing.assert_array_equal(full[1], fast[1])
    from lumenkit.inference.tiling import _linear_weights

    r0, r1, _ = _linear_weights(probs.shape[1], size[1])
    x = torch.nn.functional.interpolate(probs[None], size=(probs.shape[1], size[0]), mode="bilinear",
                                        align_corners=False)[0].argmax(0)
    mixed = float((x[r0] != x[r1]).float().mean())
    times = {}
    for labels in (False, True):
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            run(probs, size, labels)
            best = min(best, time.perf_counter() - t0)
        times[labels] = best
        print(f"{'labels' if labels else 'full'}: {best:.3f} s per native image (best of {a.repeats})", flush=True)
    print(json.dumps({"seconds_full": round(times[False], 4), "seconds_labels": round(times[True], 4),
                      "speedup": round(times[False] / times[True], 2), "mixed_share": round(mixed, 4),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
