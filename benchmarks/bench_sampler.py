"""Benchmark the balanced patch sampler against a naive reference implementation, in the same run.

Usage: python benchmarks/bench_sampler.py [--data DIR] [--patch-size 256] [--n 2000] [--seed 0]

Default data: $LUMENKIT_LUMENSTONE/S1_v1_x05, else ../shared/lumenstone/S1_v1_x05, else data/synthetic.

Measures
  * set-up time of the balanced sampler (probability maps; cold = computed, warm = from the content-keyed cache);
  * draws/s of the sampler (position + served-pixel accounting) for lumenkit's sampler and for a naive reference
    that picks the position with ``rng.choice(p=...)`` over the whole (dense, normalised) probability map and
    counts served pixels with ``np.unique`` per patch, as many existing implementations do.  The naive map is the
    same grid map, precomputed, so the reference is, if anything, flattered (full-resolution maps cost more);
  * patches/s of PatchDataset (cut + tensors), without augmentation, with the default Augment() and Augment.mild();
  * the cost of sampling a batch of 8 relative to one training step (forward + backward of lumenkit's residual
    U-Net, f=16, batch 8×256², 2 threads);
  * balancing quality and the served share of the rarest class after N patches, balanced vs uniform.

Figures are wall-clock on whatever cores are free (on the project machine: 2 cores shared with other jobs).
The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lumenkit.data.augment import Augment
from lumenkit.data.datasets import LumenStoneDataset
from lumenkit.data.samplers import (
    DEFAULT_ALPHA,
    DEFAULT_GRID,
    DEFAULT_KAPPA,
    BalancedSampler,
    PatchDataset,
    UniformSampler,
    clear_map_cache,
    load_arrays,
)

ROOT = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    env = os.environ.get("LUMENKIT_LUMENSTONE")
    for cand in ([Path(env) / "S1_v1_x05"] if env else []) + [ROOT.parent / "shared" / "lumenstone" / "S1_v1_x05"]:
        if cand.is_dir():
            return cand
    return ROOT / "data" / "synthetic"


class NaiveSampler(BalancedSampler):
    """Reference: same class and image choice; position by ``rng.choice(p=...)`` over the whole full-resolution
    probability map (every top-left pixel position, grid 1); accounting by ``np.unique`` per patch."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["grid"] = 1
        super().__init__(*args, **kwargs)
        self._dense = {}

    def _position(self):
        rng = self.rng
        k = int(rng.choice(self.num_classes, p=self.class_weights()))
        w = np.diff(self._image_cdf[k], prepend=0.0)
        i = int(rng.choice(len(w), p=w / w.sum()))
        if (i, k) not in self._dense:
            self._dense[(i, k)] = self.maps[i].dense(k).ravel()
        j = int(rng.choice(len(self._dense[(i, k)]), p=self._dense[(i, k)]))
        return (i, *divmod(j, self.maps[i].nx))

    def draw_with_mask(self):
        i, y, x = self._position()
        patch = self.masks[i][y : y + self.patch_size, x : x + self.patch_size]
        vals, cnts = np.unique(patch, return_counts=True)
        c = np.zeros(self.num_classes, np.int64)
        keep = vals < self.num_classes
        c[vals[keep]] = cnts[keep]
        self._local += c
        self._table_np[self._row] += c
        return (i, y, x), patch


def rate(fn, seconds: float = 2.0, min_n: int = 20) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_n or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def dataset_rate(images, masks, sampler, augment, n: int) -> float:
    ds = PatchDataset(images, masks, sampler, length=n, augment=augment, seed=0)
    t0 = time.perf_counter()
    for _ in ds:
        pass
    return n / (time.perf_counter() - t0)


def train_step_seconds(num_classes: int, patch: int) -> tuple[float, str]:
    torch.set_num_threads(2)
    try:
        from lumenkit.models.resunet import ResUNet

        model = ResUNet(classes=num_classes, width=16)
        what = "lumenkit.models.ResUNet f=16"
    except Exception:  # the model module is being written in parallel; fall back to a plain conv stack
        model = torch.nn.Sequential(*[m for c0, c1 in ((3, 16), (16, 32), (32, 16)) for m in (
            torch.nn.Conv2d(c0, c1, 3, padding=1), torch.nn.BatchNorm2d(c1), torch.nn.ReLU())],
            torch.nn.Conv2d(16, num_classes, 1))
        what = "conv stack 3-16-32-16 (fallback)"
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(8, 3, patch, patch)
    y = torch.randint(0, num_classes, (8, patch, patch))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, ignore_index=255).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    step()
    step()
    return (time.perf_counter() - t0) / 2, what


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="LumenStone-layout dataset (default: real S1 sample)")
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--n", type=int, default=2000, help="patches for the quality comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--naive-images", type=int, default=3, help="images given to the naive reference")
    ap.add_argument("--no-train-step", action="store_true", help="skip timing the training step")
    a = ap.parse_args(argv)
    data = a.data or default_data()
    ds = LumenStoneDataset(data)
    if ds.class_map is None:
        print(f"{data}: dataset.yaml names no class set; add class_set or classes to it", file=sys.stderr)
        return 2
    k = len(ds.class_map)
    p = a.patch_size
    print(f"data: {ds}")
    t0 = time.perf_counter()
    images, masks = load_arrays(ds)
    t_load = time.perf_counter() - t0
    print(f"loaded {len(images)} images {images[0].shape[1]}×{images[0].shape[0]} in {t_load:.2f} s")
    kw = {"patch_size": p, "num_classes": k, "alpha": DEFAULT_ALPHA, "kappa": DEFAULT_KAPPA, "grid": DEFAULT_GRID}

    clear_map_cache()
    t0 = time.perf_counter()
    bal = BalancedSampler(masks, seed=a.seed, **kw)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    BalancedSampler(masks, seed=a.seed, **kw)
    t_warm = time.perf_counter() - t0
    sub = slice(0, max(1, min(a.naive_images, len(masks))))
    t0 = time.perf_counter()
    naive = NaiveSampler(masks[sub], seed=a.seed, cache=None, **kw)
    t_naive = time.perf_counter() - t0
    sub_bal = BalancedSampler(masks[sub], seed=a.seed, **kw)
    print(f"set-up: balanced {t_cold:.2f} s cold, {t_warm:.3f} s warm (content-keyed cache) for {len(masks)} images; "
          f"naive full-resolution maps {t_naive:.2f} s for {len(naive.masks)} images "
          f"(grid {bal.grid} px, alpha {bal.alpha}, kappa {bal.kappa})")

    for sm in (bal, naive, sub_bal):
        sm.record_history = False
    draws_bal = rate(bal.draw_with_mask)
    draws_sub = rate(sub_bal.draw_with_mask)
    draws_naive = rate(naive.draw_with_mask, seconds=3.0)
    print(f"sampler draws/s (position + accounting): balanced {draws_bal:,.0f} (all images), {draws_sub:,.0f} "
          f"({len(naive.masks)} images); naive {draws_naive:,.1f} ({len(naive.masks)} images)")

    n_rate = 600
    pps_plain = dataset_rate(images, masks, bal, None, n_rate)
    pps_aug = dataset_rate(images, masks, bal, Augment(), n_rate)
    pps_mild = dataset_rate(images, masks, bal, Augment.mild(), n_rate // 2)
    pps_sub = dataset_rate(images[sub], masks[sub], sub_bal, None, n_rate)
    pps_naive = dataset_rate(images[sub], masks[sub], naive, None, 60)
    speedup = pps_sub / pps_naive
    print(f"PatchDataset patches/s, all images: balanced {pps_plain:,.0f} (no aug), {pps_aug:,.0f} (Augment()), "
          f"{pps_mild:,.0f} (Augment.mild())")
    print(f"PatchDataset patches/s, {len(naive.masks)} images, no aug: balanced {pps_sub:,.0f}, naive "
          f"{pps_naive:,.1f}: speedup {speedup:.0f}× (draws only: {draws_sub / draws_naive:.0f}×)")

    step_s, step_what, frac, frac_mild = float("nan"), "skipped", float("nan"), float("nan")
    if not a.no_train_step:
        step_s, step_what = train_step_seconds(k, p)
        frac = (8 / pps_aug) / step_s
        frac_mild = (8 / pps_mild) / step_s
        print(f"training step ({step_what}, batch 8×{p}², fwd+bwd+Adam, 2 threads): {step_s:.2f} s; "
              f"sampling 8 patches costs {100 * frac:.2f} % of it with Augment(), {100 * frac_mild:.2f} % with "
              "Augment.mild() (single process)")

    b = BalancedSampler(masks, seed=a.seed, **kw)
    u = UniformSampler(masks, p, k, seed=a.seed)
    for _ in range(a.n):
        b.draw()
        u.draw()
    natural = b.class_pixels.sum(0) / b.class_pixels.sum()
    present = np.flatnonzero(natural > 0)
    r = int(present[np.argmin(natural[present])])
    labels = ds.class_map.labels
    print(f"after {a.n} patches of {p} px: quality balanced {b.quality():.3f}, uniform {u.quality():.3f}")
    print(f"{'class':>8} {'natural':>8} {'uniform':>8} {'balanced':>9}")
    for j, lab in enumerate(labels):
        print(f"{lab:>8} {natural[j]:8.3f} {u.shares()[j]:8.3f} {b.shares()[j]:9.3f}")
    out = {
        "data": str(data),
        "images": len(images),
        "patch_size": p,
        "alpha": bal.alpha,
        "kappa": bal.kappa,
        "grid": bal.grid,
        "load_s": round(t_load, 3),
        "setup_cold_s": round(t_cold, 3),
        "setup_warm_s": round(t_warm, 4),
        "balanced_draws_per_s": round(draws_bal, 1),
        "balanced_draws_per_s_subset": round(draws_sub, 1),
        "naive_draws_per_s": round(draws_naive, 1),
        "naive_images": len(naive.masks),
        "setup_naive_s": round(t_naive, 3),
        "balanced_patches_per_s": round(pps_plain, 1),
        "balanced_patches_per_s_augment": round(pps_aug, 1),
        "balanced_patches_per_s_mild": round(pps_mild, 1),
        "balanced_patches_per_s_subset": round(pps_sub, 1),
        "naive_patches_per_s": round(pps_naive, 1),
        "speedup": round(speedup, 1),
        "speedup_draws": round(draws_sub / draws_naive, 1),
        "train_step_s": None if a.no_train_step else round(step_s, 3),  # JSON has no NaN
        "train_step_model": step_what,
        "sampling_fraction_of_step": None if a.no_train_step else round(frac, 4),
        "sampling_fraction_of_step_mild": None if a.no_train_step else round(frac_mild, 4),
        "n_patches": a.n,
        "quality_balanced": round(b.quality(), 4),
        "quality_uniform": round(u.quality(), 4),
        "rarest_class": labels[r],
        "rarest_share_natural": round(float(natural[r]), 4),
        "rarest_share_balanced": round(float(b.shares()[r]), 4),
        "rarest_share_uniform": round(float(u.shares()[r]), 4),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),  # other load on the machine while measuring
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
