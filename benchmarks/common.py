"""Shared by the benchmark scripts: the in-process sgemm reference, native-size synthetic inputs, an untrained model."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lumenkit.models.checkpoint import Checkpoint


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a square ``n``³ sgemm on torch's current threads (best of ``repeats``)."""
    from lumenkit.runtime.devices import cpu_gflops

    return cpu_gflops(n, repeats)


def native_sections(folder: Path, n: int, seed: int = 0) -> None:
    """Write ``n`` native-size 3396×2547 synthetic polished sections as ``folder/section_I.jpg`` (quality 92),
    cycling through the synthetic deposits."""
    import numpy as np

    from lumenkit.data.imageio import save_image
    from lumenkit.synth.deposits import DEPOSITS
    from lumenkit.synth.render import generate_section

    rng = np.random.default_rng(seed)
    names = list(DEPOSITS)
    for i in range(n):
        img, _ = generate_section(DEPOSITS[names[i % len(names)]], (3396, 2547), rng, scale=1.0)
        save_image(img, folder / f"section_{i}.jpg")


def untrained_checkpoint(scale: float) -> Checkpoint:
    """An f=16 S1 ResUNet with seed-0 random weights at model ``scale`` (a network's cost does not depend on them)."""
    import torch

    from lumenkit.data.catalogue import ClassMap
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    torch.manual_seed(0)
    return Checkpoint(model=create_model(width=16, classes=7), class_map=ClassMap("S1"), scale=scale)


def rss_mb() -> float:
    """Peak resident memory of this process in MB (``VmHWM``, reset at exec; ``ru_maxrss`` would keep the peak of
    the process that forked it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # macOS: bytes, close enough for a fallback


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run ``python SCRIPT ARGS...`` in a fresh process and return the JSON object of its last output line.

    Raises:
        RuntimeError: the child failed (the end of its stderr in the message).
    """
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def predict_seconds_per_image(runs: dict, images: int, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` seconds per image of ``lumenkit predict`` for each named ``(model, refine)``.

    ``images`` native-size synthetic sections are written to a temporary folder; the configurations run
    alternately after one warm-up each, so drift of the machine falls on all alike.
    """
    import tempfile
    import time

    from lumenkit.inference.predict import predict_files

    best = {k: float("inf") for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        native_sections(folder, images)
        for k, (model, refine) in runs.items():  # warm-up
            predict_files(model, [folder], Path(tmp) / k, scale=1.0, progress=False, refine=refine)
        for _ in range(repeats):
            for k, (model, refine) in runs.items():
                t0 = time.perf_counter()
                rep = predict_files(model, [folder], Path(tmp) / k, scale=1.0, progress=False, refine=refine)
                best[k] = min(best[k], (time.perf_counter() - t0) / images)
                assert rep.ok
    for k in runs:
        print(f"{k}: {best[k]:.3f} s per native image (best of {repeats}, {images} images each)")
    return best
