"""Training and inference throughput of the residual U-Net at three widths, against this machine's matmul peak.

Usage: python benchmarks/bench_model.py [--threads 2] [--steps 3] [--skip-native] [--configs default f64]

For each configuration — ``default`` (lumenkit's default width), ``f16`` (the paper era) and ``f64`` (petroscope's
default) — prints: parameters, GFLOP per megapixel (forward, conv layers), training patches/s (batch 8 × 256²,
forward+backward+Adam, channels-last), inference megapixels/s (tiled whole-image prediction), the share of the fp32
matmul peak reached (measured in the same process: a 2048³ sgemm), and the peak memory of predicting one native
3396×2547 image at the model's scale in a fresh subprocess. The last line is one JSON object keyed by configuration;
a configuration of the same width as one before it is not measured again: its entry repeats that one's, with
``same_as`` naming it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
from common import matmul_peak

from lumenkit.inference.predict import predict_image
from lumenkit.models.resunet import count_flops, count_parameters, create_model
from lumenkit.training.config import TrainConfig

# Peak memory is read from VmHWM (reset at exec), not ru_maxrss (which keeps the forking parent's peak).
CHILD = """
import sys, numpy as np, torch
from lumenkit.inference.predict import predict_image
from lumenkit.models.resunet import create_model
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024
torch.set_num_threads(int(sys.argv[2]))
m = create_model(width=int(sys.argv[1]), classes=7).eval()
img = np.random.default_rng(0).integers(0, 256, (2547, 3396, 3), dtype=np.uint8)
base = hwm()
predict_image(m, img, input_scale=1.0, model_scale=float(sys.argv[3]))
print(hwm(), base)
"""


def train_patches_per_s(width: int, steps: int, batch: int = 8, patch: int = 256) -> float:
    model = create_model(width=width, classes=7).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, patch, patch).to(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch, patch, patch))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


def infer_mp_per_s(width: int, size: tuple[int, int] = (1024, 768), repeats: int = 2) -> float:
    model = create_model(width=width, classes=7).eval()
    img = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    predict_image(model, img, input_scale=1.0)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_image(model, img, input_scale=1.0)
        best = min(best, time.perf_counter() - t0)
    return size[0] * size[1] / 1e6 / best


def native_peak_mb(width: int, threads: int, scale: float) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(width), str(threads), str(scale)],
                         capture_output=True, text=True, check=True)
    peak, base = (float(v) for v in out.stdout.split())
    return peak, base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    ap.add_argument("--scale", type=float, default=0.5, help="model scale for the native-image memory figure")
    ap.add_argument("--skip-native", action="store_true", help="skip the native-image memory subprocesses")
    ap.add_argument("--configs", nargs="+", choices=("default", "f16", "f64"), default=["default", "f16", "f64"],
                    help="configurations measured (default: all three)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    peak = matmul_peak()
    print(f"reference: fp32 sgemm 2048³ on {a.threads} threads: {peak:.0f} GFLOP/s")
    configs = {k: v for k, v in {"default": TrainConfig().width, "f16": 16, "f64": 64}.items() if k in a.configs}
    result: dict[str, dict[str, float]] = {"matmul_gflops": {"value": round(peak, 1)}}
    measured: dict[int, str] = {}  # width -> the configuration that measured it (default and f16 may be one net)
    for name, width in configs.items():
        if width in measured:
            result[name] = {**result[measured[width]], "same_as": measured[width]}
            print(f"{name:8s} f={width:<3d} the same network as {measured[width]}: not measured twice", flush=True)
            continue
        measured[width] = name
        model = create_model(width=width, classes=7)
        gflop_mp = count_flops(model, 1024, 1024) / 1.048576 / 1e9
        tps = train_patches_per_s(width, a.steps)
        mps = infer_mp_per_s(width)
        train_share = tps * 256 * 256 / 1e6 * gflop_mp * 3 / peak  # forward + backward ≈ 3× forward
        infer_share = mps * gflop_mp / peak
        row = {"width": width, "params_m": round(count_parameters(model) / 1e6, 2),
               "gflop_per_mp": round(gflop_mp, 1), "train_patches_per_s": round(tps, 2),
               "infer_mp_per_s": round(mps, 3), "train_share_of_peak": round(train_share, 3),
               "infer_share_of_peak": round(infer_share, 3)}
        if not a.skip_native:
            pk, base = native_peak_mb(width, a.threads, a.scale)
            row["native_peak_mb"] = round(pk, 0)
            row["native_extra_mb"] = round(pk - base, 0)
        result[name] = row
        print(f"{name:8s} f={width:<3d} {row['params_m']:6.2f} M params {gflop_mp:7.1f} GFLOP/MP | train "
              f"{tps:6.2f} patches/s ({train_share:.0%} of peak) | infer {mps:6.3f} MP/s ({infer_share:.0%} of peak)"
              + (f" | native image at scale {a.scale}: peak {row['native_peak_mb']:.0f} MB" if not a.skip_native
                 else ""), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
