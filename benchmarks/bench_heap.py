"""Training step (or whole-image prediction) with glibc's default allocator vs :func:`lumenkit.runtime.retained_heap`.

Usage: python benchmarks/bench_heap.py [--rounds 3] [--steps 6] [--threads N] [--compile] [--patch-size 256]
       python benchmarks/bench_heap.py --predict [--images 3] [--scale 0.125] [--rounds 3] [--threads N]

The training step of :mod:`lumenkit.training.loop` (ResUNet f=16, depth 4, batch 8 × 256², channels-last, Adam,
cross-entropy; eager unless ``--compile``) is timed in alternating blocks — default allocator, retained heap,
default, … — on the same model and batch, so both see the same machine state. Each block runs two untimed warm-up
steps, then ``--steps`` timed ones. Prints per block and as medians over the blocks of each kind: wall ms per step,
minor page faults per step, and the user and system CPU seconds per step (``resource.getrusage``), then the ratio
of step times. The last line is one JSON object. Not meaningful off glibc (the retained heap is then a no-op,
which the script says).

``--predict`` times :func:`lumenkit.inference.predict_files` (what ``lumenkit predict`` runs: decode at model scale,
768-px windows, mask, overlay and confidence map written) over ``--images`` native-size 3396×2547 synthetic sections
saved as JPEG (quality 92), with an untrained f=16 model at ``--scale`` (default 1/8, the training default; the
network's cost does not depend on its weights), in the same alternating blocks; one unit is one image. One
untimed pass over the images comes first.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

Block = Callable[[bool], dict[str, float]]
"""Runs one timed block (``True``: inside :func:`lumenkit.runtime.retained_heap`) and returns its figures per unit."""


def measure(work: Callable[[], None], units: int) -> dict[str, float]:
    """Wall ms, minor page faults and user/system CPU seconds per unit of one call of ``work`` doing ``units``."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    work()
    dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {"ms": dt / units * 1e3, "faults": (r1.ru_minflt - r0.ru_minflt) / units,
            "user_s": (r1.ru_utime - r0.ru_utime) / units, "sys_s": (r1.ru_stime - r0.ru_stime) / units}


def train_setup(a: argparse.Namespace) -> tuple[Block, str, str]:
    """The model, batch and training step; a block times ``a.steps`` steps after two warm-up steps."""
    from lumenkit.models.resunet import create_model
    from lumenkit.runtime.heap import retained_heap
    from lumenkit.training.losses import SegmentationLoss

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

    def steps(n: int) -> None:
        for _ in range(n):
            step()

    step()  # compilation (if any) outside the timed blocks

    def block(retain: bool) -> dict[str, float]:
        with retained_heap(retain):
            steps(2)
            return measure(lambda: steps(a.steps), a.steps)

    return block, "step", f"{'compiled' if a.compile else 'eager'} step, batch {a.batch_size} x {a.patch_size}^2"


def predict_setup(a: argparse.Namespace, tmp: Path) -> tuple[Block, str, str]:
    """Synthetic native-size JPEGs in ``tmp``; a block predicts them all with ``predict_files``."""
    from common import native_sections, untrained_checkpoint

    from lumenkit.inference.predict import predict_files
    from lumenkit.runtime.heap import set_heap_retention

    native_sections(tmp / "images", a.images)
    ckpt = untrained_checkpoint(a.scale)

    def run(retain: bool) -> None:
        set_heap_retention(retain)  # the process-level setting predict_files follows (lumenkit --no-retain-heap)
        try:
            rep = predict_files(ckpt, [tmp / "images"], tmp / "out", scale=1.0, progress=False)
        finally:
            set_heap_retention(None)
        if not rep.ok:
            raise SystemExit(f"prediction failed: {rep.failures}")

    run(False)  # imports, the fused model and other first-call costs outside the timed blocks
    return (lambda retain: measure(lambda: run(retain), a.images), "image",
            f"predict_files over {a.images} native 3396x2547 JPEGs at model scale {a.scale}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="pairs of blocks (default allocator, retained heap)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per block (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="step through torch.compile, as long runs train")
    ap.add_argument("--patch-size", type=int, default=256, help="patch side in px")
    ap.add_argument("--batch-size", type=int, default=8, help="patches per step")
    ap.add_argument("--predict", action="store_true", help="time `lumenkit predict` over images instead of training")
    ap.add_argument("--images", type=int, default=3, help="--predict: images per block")
    ap.add_argument("--scale", type=float, default=0.125, help="--predict: model scale vs native x100 (default 1/8)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from lumenkit.runtime.heap import heap_retention_available

    started = _dt.datetime.now().isoformat(timespec="seconds")
    load = os.getloadavg()[0]
    blocks: dict[str, list[dict[str, float]]] = {"default": [], "retained": []}
    with tempfile.TemporaryDirectory() as tmp:
        block, unit, what = predict_setup(a, Path(tmp)) if a.predict else train_setup(a)
        print(f"glibc allocator tunable: {heap_retention_available()}; threads {torch.get_num_threads()}; {what}")
        for r in range(a.rounds):
            for kind in ("default", "retained"):
                b = block(kind == "retained")
                blocks[kind].append(b)
                print(f"  round {r + 1} {kind:9s} {b['ms']:7.0f} ms/{unit}  {b['faults']:9.0f} faults/{unit}  "
                      f"user {b['user_s']:.2f} s  sys {b['sys_s']:.2f} s")
    med = {k: {m: statistics.median(b[m] for b in v) for m in ("ms", "faults", "user_s", "sys_s")}
           for k, v in blocks.items()}
    ratio = med["default"]["ms"] / med["retained"]["ms"]
    for k, m in med.items():
        print(f"median {k:9s} {m['ms']:7.0f} ms/{unit}  {m['faults']:9.0f} faults/{unit}  user {m['user_s']:.2f} s  "
              f"sys {m['sys_s']:.2f} s")
    print(f"retained heap: {ratio:.2f}x the {unit}s per second of the default allocator")
    print(json.dumps({"started": started, "load_avg_1min_at_start": round(load, 2), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "measured": what, "glibc": heap_retention_available(),
                      "median": {k: {m: round(v, 3) for m, v in d.items()} for k, d in med.items()},
                      "speedup": round(ratio, 3)}))


if __name__ == "__main__":
    main()
