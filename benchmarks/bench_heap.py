"""Training step with glibc's default allocator vs :func:`lumenkit.heap.retained_heap`, in one process.

Usage: python benchmarks/bench_heap.py [--rounds 3] [--steps 6] [--threads N] [--compile] [--patch-size 256]

The training step of :mod:`lumenkit.train` (ResUNet f=16, depth 4, batch 8 × 256², channels-last, Adam,
cross-entropy; eager unless ``--compile``) is timed in alternating blocks — default allocator, retained heap,
default, … — on the same model and batch, so both see the same machine state. Each block runs two untimed warm-up
steps, then ``--steps`` timed ones. Prints per block and as medians over the blocks of each kind: wall ms per step,
minor page faults per step, and the user and system CPU seconds per step (``resource.getrusage``), then the ratio
of step times. The last line is one JSON object. Not meaningful off glibc (the retained heap is then a no-op,
which the script says).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="pairs of blocks (default allocator, retained heap)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per block (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="step through torch.compile, as long runs train")
    ap.add_argument("--patch-size", type=int, default=256, help="patch side in px")
    ap.add_argument("--batch-size", type=int, default=8, help="patches per step")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from lumenkit.heap import heap_retention_available, retained_heap
    from lumenkit.model import create_model
    from lumenkit.train import SegmentationLoss

    started = _dt.datetime.now().isoformat(timespec="seconds")
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    net = create_model("resunet", classes=7, width=16, depth=4).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    step_model = torch.compile(net) if a.compile else net
    criterion = SegmentationLoss(None, 0.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.batch_size, 3, a.patch_size, a.patch_size, generator=g).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 7, (a.batch_size, a.patch_size, a.patch_size), generator=g)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        criterion(step_model(x), y).backward()
        opt.step()

    step()  # compilation (if any) outside the timed blocks
    blocks: dict[str, list[dict[str, float]]] = {"default": [], "retained": []}
    print(f"glibc allocator tunable: {heap_retention_available()}; threads {torch.get_num_threads()}; "
          f"{'compiled' if a.compile else 'eager'} step, batch {a.batch_size} x {a.patch_size}^2")
    for r in range(a.rounds):
        for kind in ("default", "retained"):
            with retained_heap(kind == "retained"):
                for _ in range(2):
                    step()
                r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                for _ in range(a.steps):
                    step()
                dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            b = {"ms": dt / a.steps * 1e3, "faults": (r1.ru_minflt - r0.ru_minflt) / a.steps,
                 "user_s": (r1.ru_utime - r0.ru_utime) / a.steps, "sys_s": (r1.ru_stime - r0.ru_stime) / a.steps}
            blocks[kind].append(b)
            print(f"  round {r + 1} {kind:9s} {b['ms']:7.0f} ms/step  {b['faults']:9.0f} faults/step  "
                  f"user {b['user_s']:.2f} s  sys {b['sys_s']:.2f} s")
    med = {k: {m: statistics.median(b[m] for b in v) for m in ("ms", "faults", "user_s", "sys_s")}
           for k, v in blocks.items()}
    ratio = med["default"]["ms"] / med["retained"]["ms"]
    for k, m in med.items():
        print(f"median {k:9s} {m['ms']:7.0f} ms/step  {m['faults']:9.0f} faults/step  user {m['user_s']:.2f} s  "
              f"sys {m['sys_s']:.2f} s")
    print(f"retained heap: {ratio:.2f}x the steps per second of the default allocator")
    print(json.dumps({"started": started, "load_avg_1min_at_start": round(load, 2), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "compiled": a.compile, "glibc": heap_retention_available(),
                      "median": {k: {m: round(v, 3) for m, v in d.items()} for k, d in med.items()},
                      "speedup": round(ratio, 3)}))


if __name__ == "__main__":
    main()
