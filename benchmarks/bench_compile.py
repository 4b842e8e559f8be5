"""Eager vs ``torch.compile`` training step of the default recipe, in one process, on the same batches.

Usage: python benchmarks/bench_compile.py [--steps 16] [--threads N] [--width 16] [--patch-size 256]

The training step of :mod:`lumenkit.training.loop` (ResUNet f=16, depth 4, batch 8 × 256², channels-last, Adam,
cross-entropy) is timed eagerly and through ``torch.compile`` (inductor) from the same initial weights on the same
random batches. Prints the one-off compilation time (the first two compiled steps minus two median compiled
steps), the median step of each, their ratio, the difference of the first step's loss, and what a 45-minute
budget of 512-patch epochs buys with each (validation excluded). The inductor cache
(``TORCHINDUCTOR_CACHE_DIR``, by default under the system's temp folder) makes later compilations of the same
graph faster; pass ``--fresh-cache`` to time a cold one.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import statistics
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16, help="timed steps of each (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--width", type=int, default=16, help="ResUNet base width f")
    ap.add_argument("--patch-size", type=int, default=256, help="patch side in px")
    ap.add_argument("--batch-size", type=int, default=8, help="patches per step")
    ap.add_argument("--fresh-cache", action="store_true", help="compile into an empty inductor cache (a cold start)")
    a = ap.parse_args()
    if a.fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    if a.threads:
        torch.set_num_threads(a.threads)
    from lumenkit.models.resunet import create_model
    from lumenkit.training.losses import SegmentationLoss

    started = _dt.datetime.now().isoformat(timespec="seconds")
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    net0 = create_model("resunet", classes=7, width=a.width, depth=4).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    n = a.steps + 2
    xs = [torch.randn(a.batch_size, 3, a.patch_size, a.patch_size, generator=g)
          .contiguous(memory_format=torch.channels_last) for _ in range(n)]
    ys = [torch.randint(0, 7, (a.batch_size, a.patch_size, a.patch_size), generator=g) for _ in range(n)]
    criterion = SegmentationLoss(None, 0.0)

    def run(compiled: bool) -> tuple[list[float], list[float]]:
        net = copy.deepcopy(net0).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        f = torch.compile(net) if compiled else net
        times, losses = [], []
        for x, y in zip(xs, ys, strict=True):
            t0 = time.perf_counter()
            loss = criterion(f(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            times.append(time.perf_counter() - t0)
        return times, losses

    t_eager, l_eager = run(False)
    t_comp, l_comp = run(True)
    eager = statistics.median(t_eager[2:])
    comp = statistics.median(t_comp[2:])
    compile_s = sum(t_comp[:2]) - 2 * comp
    budget = 45 * 60
    steps_per_epoch = 512 // a.batch_size
    epochs_eager = budget / (eager * steps_per_epoch)
    epochs_comp = max(0.0, budget - compile_s) / (comp * steps_per_epoch)
    print(f"{started}  load average {load:.2f}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"ResUNet f={a.width}, batch {a.batch_size} × {a.patch_size}²")
    print(f"  eager step      {eager * 1e3:8.0f} ms")
    print(f"  compiled step   {comp * 1e3:8.0f} ms   ({eager / comp:.2f}× eager)")
    print(f"  compilation     {compile_s:8.1f} s once{' (cold cache)' if a.fresh_cache else ''}")
    print(f"  first-step loss eager {l_eager[0]:.6f}, compiled {l_comp[0]:.6f}")
    print(f"  45 min of 512-patch epochs (no validation): {epochs_eager:.1f} eager, {epochs_comp:.1f} compiled")
    print(json.dumps({
        "started": started, "load_avg_1min_at_start": round(load, 2), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "width": a.width, "patch_size": a.patch_size, "batch_size": a.batch_size,
        "eager_step_ms": round(eager * 1e3, 1), "compiled_step_ms": round(comp * 1e3, 1),
        "speedup": round(eager / comp, 3), "compile_s": round(compile_s, 1), "cold_cache": a.fresh_cache,
        "first_loss_abs_diff": abs(l_eager[0] - l_comp[0]),
        "epochs_in_45_min": {"eager": round(epochs_eager, 1), "compiled": round(epochs_comp, 1)},
    }))


if __name__ == "__main__":
    main()
