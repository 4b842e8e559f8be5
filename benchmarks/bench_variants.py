"""Training cost of ablation variants against the default, and the epochs each gets for the default's budget.

Usage: python benchmarks/bench_variants.py [VARIANT ...] [--reference default] [--reference-epochs 46]
                                           [--steps 6] [--rounds 3] [--threads N] [--compile]

Equal-CPU-time comparisons (issue "accuracy") train every candidate for the epochs its own training step allows in
the time the reference variant's ``--reference-epochs`` take; fixed epochs, unlike a time budget, give the same
model whatever else runs on the machine. This benchmark builds each variant's network as
:func:`lumenkit.lab.ablation.variant_config` describes it (architecture, width, depth, block, context; 7 classes),
channels-last, and times eager (or, with ``--compile``, compiled) training steps (forward, cross-entropy, backward,
Adam) on one batch of the variant's patch size and batch size — random pixels, as the cost of a convolution does
not depend on them. Rounds
interleave the variants so drift of the machine falls on all alike; the median step is kept. The data phase
(sampler, cut, augmentation: ``bench_train_step.py``) and per-epoch validation are the same work for every variant
with the same patches and scale and are left out, so the epochs are a slight overestimate for a variant slower than
the reference and an underestimate for a faster one.

The absolute ``step_ms`` says how fast the machine is at the time; wall times of runs made at other times (the
``seconds`` of their ``history.csv``) are comparable only when the same benchmark ran alike then.

The last line is one JSON object: ``step`` (eager or compiled), and per variant ``step_ms``, ``ratio`` (its step
over the reference's), ``epochs`` (``floor(reference_epochs / ratio)``), ``parameters`` and
``gflop_per_megapixel``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import time

import numpy as np
import torch

CANDIDATES = ("default", "separable", "aspp", "separable_aspp", "quarter_depth5")


def build(name: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, int, int, dict]:
    """The variant's network, its optimiser, patch size, batch size and configuration summary."""
    from lumenkit.lab.ablation import variant_config
    from lumenkit.models.resunet import count_flops, count_parameters, create_model

    cfg = variant_config(name, "data", "runs")
    torch.manual_seed(0)
    net = create_model(cfg.arch, in_channels=3, classes=7, width=cfg.width, depth=cfg.depth, block=cfg.block,
                       context=cfg.context).to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    info = {"arch": cfg.arch, "width": cfg.width, "depth": cfg.depth, "block": cfg.block, "context": cfg.context,
            "scale": cfg.scale, "patch_size": cfg.patch_size, "batch_size": cfg.batch_size,
            "parameters": count_parameters(net), "gflop_per_megapixel": round(count_flops(net, 1024, 1024) / 1e9
                                                                                / (1024 * 1024 / 1e6), 1)}
    return net, opt, cfg.patch_size, cfg.batch_size, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", default=list(CANDIDATES), help="ablation variants (default: %(default)s)")
    ap.add_argument("--reference", default="default", help="the variant the others are compared with")
    ap.add_argument("--reference-epochs", type=int, default=46,
                    help="epochs of the reference in the budget (46: what 45 minutes buy the default on the build "
                         "machine)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--compile", action="store_true",
                    help="time steps through torch.compile (as the candidate runs train; the compilation, in the "
                         "warm-up steps, is not timed)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    names = list(dict.fromkeys([a.reference, *a.variants]))
    started = _dt.datetime.now().isoformat(timespec="seconds")
    load = os.getloadavg()[0]
    built = {n: build(n) for n in names}
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    batches = {}
    for n, (_, _, p, b, _) in built.items():
        x = torch.rand(b, 3, p, p, generator=gen).contiguous(memory_format=torch.channels_last)
        batches[n] = (x, torch.randint(0, 7, (b, p, p), generator=gen))

    run = {n: torch.compile(built[n][0]) if a.compile else built[n][0] for n in names}

    def step(n: str) -> None:
        _, opt, *_ = built[n]
        x, y = batches[n]
        loss = loss_fn(run[n](x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for n in names:  # warm-up
        step(n)
        step(n)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(a.rounds):
        for n in names:
            for _ in range(a.steps):
                t0 = time.perf_counter()
                step(n)
                times[n].append(time.perf_counter() - t0)
    med = {n: float(np.median(v)) for n, v in times.items()}
    ref = med[a.reference]
    mode = "compiled" if a.compile else "eager"
    out: dict = {"started": started, "load_avg_1min_at_start": round(load, 2), "threads": torch.get_num_threads(),
                 "step": mode, "reference": a.reference, "reference_epochs": a.reference_epochs, "variants": {}}
    print(f"{started}  load average {load:.2f}; {torch.get_num_threads()} threads; {mode} steps, median of "
          f"{a.rounds}×{a.steps}")
    print(f"{'variant':16s} {'step ms':>8s} {'ratio':>6s} {'epochs':>6s} {'params':>8s} {'GFLOP/MP':>8s}")
    for n in names:
        info = built[n][4]
        ratio = med[n] / ref
        epochs = math.floor(a.reference_epochs / ratio + 1e-9)
        print(f"{n:16s} {med[n] * 1e3:8.0f} {ratio:6.2f} {epochs:6d} {info['parameters']:8d} "
              f"{info['gflop_per_megapixel']:8.1f}")
        out["variants"][n] = {"step_ms": round(med[n] * 1e3, 1), "ratio": round(ratio, 3), "epochs": epochs, **info}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
