"""Batch prediction: one process on all cores vs ``torchrun`` with one process per core, same files.

Usage: python benchmarks/bench_predict_procs.py [--images 16] [--rounds 2] [--scale 0.125] [--procs N]

``--images`` native-size 3396×2547 synthetic sections are saved as JPEG (quality 92) in a temporary folder with an
untrained f=16 checkpoint at ``--scale`` (the network's cost does not depend on its weights). Then, alternately,
``lumenkit predict`` runs as one process (torch on all cores) and as ``torchrun --standalone --nproc-per-node N -m
lumenkit predict`` (N = ``--procs``, default the usable cores; each process gets cores / N torch threads and every
N-th file). Times are wall seconds of the whole command, interpreter start-up included, per image. The masks of the
two are compared: an untrained model's near-uniform probabilities make argmax ties that a different number of torch
threads (another summation order) can break the other way, so the share of differing pixels is printed. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16, help="native-size JPEGs to predict per run")
    ap.add_argument("--rounds", type=int, default=2, help="pairs of runs (one process, torchrun)")
    ap.add_argument("--scale", type=float, default=0.125, help="model scale vs native x100 (default 1/8)")
    ap.add_argument("--procs", type=int, default=None, help="torchrun processes (default: usable cores)")
    a = ap.parse_args()
    import numpy as np
    from common import native_sections, untrained_checkpoint

    from lumenkit.data.imageio import read_mask
    from lumenkit.runtime.devices import usable_cores

    procs = a.procs or usable_cores()
    started = _dt.datetime.now().isoformat(timespec="seconds")
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {"one": [], "torchrun": []}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        native_sections(t / "images", a.images)
        pt = untrained_checkpoint(a.scale).save(t / "model.pt")
        common = ["predict", "--model", str(pt), "--scale", "1.0", "--device", "cpu", "--quiet", str(t / "images")]
        cmds = {"one": [sys.executable, "-m", "lumenkit", *common, "--out", str(t / "one")],
                "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                             str(procs), "-m", "lumenkit", *common, "--out", str(t / "torchrun")]}
        print(f"{a.images} native 3396x2547 JPEGs, f=16 at model scale {a.scale}; one process on {usable_cores()} "
              f"cores vs torchrun x{procs}")
        for r in range(a.rounds):
            for kind, cmd in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times[kind].append((time.perf_counter() - t0) / a.images)
                print(f"  round {r + 1} {kind:8s} {times[kind][-1]:6.2f} s/image")
        differ = float(np.mean([(read_mask(t / "one" / f"section_{i}.png")
                                 != read_mask(t / "torchrun" / f"section_{i}.png")).mean() for i in range(a.images)]))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["one"] / med["torchrun"]
    print(f"median: one process {med['one']:.2f} s/image, torchrun x{procs} {med['torchrun']:.2f} s/image "
          f"({ratio:.2f}x the images per second); mask pixels that differ: {100 * differ:.3f} %")
    print(json.dumps({"started": started, "load_avg_1min_at_start": round(load, 2), "procs": procs,
                      "images": a.images, "scale": a.scale, "s_per_image": {k: round(v, 3) for k, v in med.items()},
                      "speedup": round(ratio, 3), "mask_pixels_differing": round(differ, 6)}))


if __name__ == "__main__":
    main()
