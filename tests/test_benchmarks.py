"""Every benchmark script still runs, and its last output line is one JSON object with its headline figures.

Each ``benchmarks/bench_*.py`` runs in a fresh interpreter (from the repository root, as its usage lines say) with
the smallest arguments its command line offers: a smoke test of the script, not a measurement. A new benchmark
needs an entry in :data:`SMOKE` (``test_every_benchmark_has_a_smoke_entry`` fails until it has one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
TIMEOUT_S = 600

# script -> (smallest arguments, headline keys of its last-line JSON object). In the arguments, ``{tmp}`` is the
# test's tmp_path and ``{data}`` a tiny synthetic dataset (2 training images of 512x384) written there.
SMOKE: dict[str, tuple[list[str], tuple[str, ...]]] = {
    # cuni_e: the deposit whose native section generates fastest
    "bench_analysis.py": (["--deposits", "cuni_e", "--repeats", "1"], ("seconds", "grains", "seconds_per_deposit")),
    # compiles through torch.compile: ~85 s on a cold inductor cache, ~15 s warm (loaded 2-core machine)
    "bench_compile.py": (["--steps", "1", "--patch-size", "64", "--batch-size", "1"],
                         ("eager_step_ms", "compiled_step_ms", "compile_s")),
    "bench_ensemble.py": (["--images", "1", "--repeats", "1"], ("seconds", "ratio", "ratio_refine")),
    "bench_geojson.py": (["--deposits", "cuni_e", "--repeats", "1"], ("seconds", "ratio_to_label", "write_seconds")),
    "bench_heap.py": (["--rounds", "1", "--steps", "1", "--patch-size", "64", "--batch-size", "1"],
                      ("median", "speedup")),
    "bench_metrics.py": (["--repeats", "1"], ("seconds", "extra_mb")),
    "bench_model.py": (["--steps", "1", "--skip-native", "--configs", "default", "f16"],
                       ("matmul_gflops", "default", "f16")),
    "bench_mosaic.py": (["--sizes", "0.0003", "--keep", "{tmp}/mosaic"], ("seconds_per_gigapixel", "peak_mb")),
    "bench_predict.py": (["--quick", "--size", "256x192"], ("petroscope_f64", "lumenkit_torch", "lumenkit_onnx")),
    "bench_predict_procs.py": (["--images", "1", "--rounds", "1", "--procs", "1"], ("s_per_image", "speedup")),
    "bench_refine.py": (["--images", "1", "--repeats", "1"], ("seconds_plain", "seconds_refine", "ratio")),
    # --no-train-step: its skipped figures must still be JSON (null, not NaN)
    "bench_sampler.py": (["--data", "{data}", "--patch-size", "64", "--n", "10", "--naive-images", "1",
                          "--no-train-step"],
                         ("speedup", "balanced_patches_per_s", "quality_balanced")),
    "bench_stream_mineralogy.py": (["--sizes", "0.0001", "--keep", "{tmp}/stream"],
                                   ("seconds_per_gigapixel", "peak_mb")),
    "bench_synth.py": (["--n", "1", "--n-native", "1"],
                       ("images_per_s_1024x768", "images_per_s_3396x2547",
                        "loader_images_per_s_native_jpeg_scale_0.5")),
    "bench_train_step.py": (["--data", "{data}", "--scale", "0.5", "--steps", "1", "--images", "1"],
                            ("step_ms", "patches_per_s", "share_outside_forward_backward")),
    "bench_upsample.py": (["--repeats", "1"], ("seconds_full", "seconds_labels", "speedup")),
    "bench_variants.py": (["default", "--steps", "1", "--rounds", "1"], ("step", "variants")),
}


def _tiny_dataset(root: Path) -> Path:
    from lumenkit.synth.writer import write_dataset

    return write_dataset(root, n_train=2, n_test=0, size=(512, 384), seed=0)


def _strict_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def test_every_benchmark_has_a_smoke_entry():
    scripts = {p.name for p in BENCHMARKS.glob("bench_*.py")}
    assert scripts, f"no benchmark scripts under {BENCHMARKS}"
    assert sorted(scripts - SMOKE.keys()) == [], "benchmarks without an entry in SMOKE"
    assert sorted(SMOKE.keys() - scripts) == [], "entries in SMOKE without a benchmark script"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_and_ends_with_one_json_object(script: str, tmp_path: Path):
    argv, keys = SMOKE[script]
    data = _tiny_dataset(tmp_path / "data") if any("{data}" in a for a in argv) else None
    args = [a.format(tmp=tmp_path, data=data) for a in argv]
    cmd = [sys.executable, str(BENCHMARKS / script), *args]
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:  # its captured output can be bytes even with text=True
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        pytest.fail(f"{' '.join(cmd)} ran over {TIMEOUT_S} s; stderr ends:\n{err[-3000:]}")
    assert out.returncode == 0, f"{' '.join(cmd)} exited {out.returncode}; stderr ends:\n{out.stderr[-3000:]}"
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed nothing; stderr ends:\n{out.stderr[-3000:]}"
    try:  # strict JSON: NaN and Infinity, which json.dumps writes by default, are not JSON
        result = json.loads(lines[-1], parse_constant=_strict_constant)
    except ValueError as e:
        pytest.fail(f"{script}: the last output line is not one JSON object ({e}):\n{lines[-1][:1000]}")
    assert isinstance(result, dict), f"{script}: the last output line is JSON but not an object: {lines[-1][:1000]}"
    missing = [k for k in keys if k not in result]
    assert missing == [], f"{script}: headline keys missing from {sorted(result)}"
