"""Where a training step's time goes: patch sampling, augmentation, batching, forward, backward, optimizer.

Usage: python benchmarks/bench_train_step.py [--steps 12] [--images 16] [--scale S] [--threads N] [--data DIR]

A faithful replica of the loop in :mod:`lumenkit.training.loop` with :class:`lumenkit.training.TrainConfig` defaults
(balanced sampler, flips + rot90, batch 8 × 256², ResUNet f=16, channels-last, Adam, cross-entropy,
``DataLoader(num_workers=0)``): every phase of every step is timed with ``time.perf_counter``. Data: the real
LumenStone S1 sample if present (``--data`` or ``LUMENKIT_LUMENSTONE``), read at ``--scale``; otherwise synthetic
sections from :func:`lumenkit.synth.generate_section`. Prints the share of step time spent outside forward and
backward; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def load_data(a: argparse.Namespace) -> tuple[list[np.ndarray], list[np.ndarray], int, str]:
    from lumenkit.data.catalogue import ClassMap

    root = Path(a.data) if a.data else Path(os.environ.get("LUMENKIT_LUMENSTONE", "../shared/lumenstone"))
    root = root / "S1_v1_x05" if (root / "S1_v1_x05").is_dir() else root
    if (root / "imgs").is_dir():
        from lumenkit.data.datasets import LumenStoneDataset

        ds = LumenStoneDataset(root, "train", scale=a.scale)
        sub = list(range(min(a.images, len(ds))))
        cm = ds.class_map or ClassMap("S1")
        samples = [ds.load(i) for i in sub]
        images = [smp["image"] for smp in samples]
        masks = [cm.to_index(smp["mask"]) for smp in samples]
        return images, masks, len(cm), f"{root} ({len(sub)} train images at scale {a.scale})"
    from lumenkit.synth.deposits import DEPOSITS
    from lumenkit.synth.render import generate_section

    rng = np.random.default_rng(0)
    cm = ClassMap("S1")
    images, masks = [], []
    size = (int(3396 * a.scale), int(2547 * a.scale))
    keys = list(DEPOSITS)
    for i in range(a.images):
        img, codes = generate_section(keys[i % len(keys)], size, rng, scale=a.scale)
        images.append(img)
        masks.append(cm.to_index(np.where(np.isin(codes, cm.codes), codes, 0).astype(np.uint8)))
    return images, masks, len(cm), f"synthetic ({a.images} sections {size[0]}x{size[1]})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--images", type=int, default=16, help="training images to load")
    ap.add_argument("--scale", type=float, default=None, help="training scale vs native ×100 (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--data", default=None, help="LumenStone folder (default: LUMENKIT_LUMENSTONE or synthetic)")
    a = ap.parse_args()
    if a.scale is None:
        from lumenkit.training.config import TrainConfig

        a.scale = TrainConfig().scale
    if a.threads:
        torch.set_num_threads(a.threads)
    from lumenkit.data.samplers import BalancedSampler, PatchDataset
    from lumenkit.models.resunet import create_model
    from lumenkit.training.config import TrainConfig
    from lumenkit.training.loop import patch_augment
    from lumenkit.training.losses import SegmentationLoss

    cfg = TrainConfig()
    started = _dt.datetime.now().isoformat(timespec="seconds")
    load = os.getloadavg()[0]
    images, masks, k, source = load_data(a)
    t0 = time.perf_counter()
    sampler = BalancedSampler(masks, cfg.patch_size, k, strength=cfg.strength, alpha=cfg.alpha, kappa=cfg.kappa,
                              grid=cfg.grid, void_border=cfg.void_border, seed=0)
    setup_s = time.perf_counter() - t0
    sampler.record_history = False
    augment = patch_augment(cfg)  # as training builds it
    n_steps = a.steps + 2
    patches = PatchDataset(images, masks, sampler, length=n_steps * cfg.batch_size, augment=augment, seed=0)
    patches.set_epoch(0)
    loader = torch.utils.data.DataLoader(patches, batch_size=cfg.batch_size, num_workers=cfg.workers)
    torch.manual_seed(0)
    net = create_model(cfg.arch, classes=k, width=cfg.width, depth=cfg.depth).to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    criterion = SegmentationLoss(None, 0.0)
    phases = ("data", "to_tensor", "forward", "backward", "optimizer", "bookkeeping")
    times: dict[str, list[float]] = {p: [] for p in phases}
    it = iter(loader)
    for step in range(n_steps):
        t = [time.perf_counter()]
        batch = next(it)  # sampler draw + cut + augment + collate
        t.append(time.perf_counter())
        x = net.normalize(batch["image"]).contiguous(memory_format=torch.channels_last)
        y = batch["mask"]
        t.append(time.perf_counter())
        loss = criterion(net(x), y)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        _ = float(loss.detach())  # what the loop logs every step
        _ = torch.tensor([0.0, 0.0])  # the stop/deadline flags tensor
        t.append(time.perf_counter())
        if step >= 2:
            for p, t0_, t1_ in zip(phases, t[:-1], t[1:]):
                times[p].append(t1_ - t0_)
    med = {p: float(np.median(v)) for p, v in times.items()}
    total = sum(med.values())
    # split the data phase: sampler draws alone, then cut + augment alone, per patch
    n = 64
    t0 = time.perf_counter()
    draws = [sampler.draw_with_mask() for _ in range(n)]
    draw_s = (time.perf_counter() - t0) / n
    from lumenkit.data.samplers import cut

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for (i, y0, x0), m in draws:
        augment(cut(images[i], y0, x0, cfg.patch_size, 0), m, rng=rng)
    aug_s = (time.perf_counter() - t0) / n
    outside = (total - med["forward"] - med["backward"]) / total
    print(f"{started}  load average {load:.2f}; {torch.get_num_threads()} threads; data: {source}")
    print(f"sampler setup (probability maps): {setup_s:.2f} s once")
    for p in phases:
        print(f"  {p:12s} {med[p] * 1e3:8.1f} ms  {med[p] / total:6.1%}")
    print(f"  per patch: sampler draw {draw_s * 1e3:.2f} ms, cut + augment {aug_s * 1e3:.2f} ms "
          f"(× batch {cfg.batch_size} = {(draw_s + aug_s) * cfg.batch_size * 1e3:.1f} ms of the data phase)")
    print(f"step {total * 1e3:.0f} ms ({cfg.batch_size / total:.1f} patches/s); "
          f"outside forward/backward: {outside:.1%}")
    out = {"started": started, "load_avg_1min_at_start": round(load, 2), "threads": torch.get_num_threads(),
           "data": source, "step_ms": round(total * 1e3, 1), "patches_per_s": round(cfg.batch_size / total, 2),
           "share_outside_forward_backward": round(outside, 4),
           "phase_ms": {p: round(v * 1e3, 2) for p, v in med.items()},
           "sampler_draw_ms_per_patch": round(draw_s * 1e3, 3), "cut_augment_ms_per_patch": round(aug_s * 1e3, 3),
           "sampler_setup_s": round(setup_s, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
