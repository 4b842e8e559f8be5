"""lumenkit.runtime.heap: freed tensor memory kept in glibc's heap within the block, the defaults restored after it.

The page-fault counts are taken in a fresh interpreter: in the test process, memory freed by earlier tests
(or by the block itself) stays in the heap's bins and is reused whatever the allocator settings.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lumenkit.runtime.heap import heap_retention_available, retained_heap

NBYTES = 40_000_000  # above glibc's largest mmap threshold (32 MiB): served by mmap under the defaults
PAGES = NBYTES / 4096

needs_glibc = pytest.mark.skipif(not heap_retention_available(), reason="the heap can be tuned with glibc only")

_PROBE = """
import json, resource, statistics, torch
from lumenkit.runtime.heap import retained_heap

def faults(nbytes, n=8):
    # median minor page faults of allocating, filling and freeing one tensor of nbytes, after n warm-ups
    x, counts = torch.ones(nbytes // 4), []
    for i in range(2 * n):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        z = x * 2
        del z
        if i >= n:
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return statistics.median(counts)

N = %d
out = {"before": faults(N)}
with retained_heap(False) as off:
    out["disabled"], out["off"] = faults(N), off
with retained_heap() as on:
    out["inside"], out["on"] = faults(N), on
    with retained_heap() as inner:
        out["inner"] = inner
    out["after_inner"] = faults(N)
# a size no freed chunk of the block can hold: it shows the settings, not a reused hole
out["after"] = faults(3 * N, n=3)
print(json.dumps(out))
"""


@needs_glibc
def test_retained_heap_reuses_freed_memory_and_restores_the_default_after_the_outermost_block():
    r = subprocess.run([sys.executable, "-c", _PROBE % NBYTES], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout.strip().splitlines()[-1])
    assert f["before"] > 0.5 * PAGES  # default: fresh pages for every large tensor
    assert f["off"] is False and f["disabled"] > 0.5 * PAGES  # a disabled block changes nothing
    assert f["on"] is True and f["inner"] is True
    assert f["inside"] < 0.05 * PAGES
    assert f["after_inner"] < 0.05 * PAGES  # the inner block's end does not restore the defaults
    assert f["after"] > 0.5 * 3 * PAGES  # the outermost one does


def test_elsewhere_the_block_is_a_no_op(monkeypatch):
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    with retained_heap() as tuned:
        assert tuned is False
    assert heap_retention_available() is False


def _spy_depth(monkeypatch, module: str, name: str) -> list[int]:
    """Replace ``module.name`` with a wrapper recording the heap-block depth it is called at."""
    import importlib

    import lumenkit.runtime.heap

    mod = importlib.import_module(module)
    real, depths = getattr(mod, name), []

    def spy(*args, **kwargs):
        depths.append(lumenkit.runtime.heap._depth)
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, name, spy)
    return depths


def _set_retention(monkeypatch, retain):
    """The process-level setting for this test only (``lumenkit --no-retain-heap`` sets it to off)."""
    import lumenkit.runtime.heap

    monkeypatch.setattr(lumenkit.runtime.heap, "_setting", None)  # undone after the test, whatever happens
    lumenkit.runtime.heap.set_heap_retention(retain)


@needs_glibc
@pytest.mark.parametrize("retain", [True, False])
def test_prediction_runs_inside_the_block_unless_asked_not_to_and_gives_the_same_result(monkeypatch, retain):
    import numpy as np
    import torch

    from lumenkit.inference.predict import predict_image
    from lumenkit.inference.tiling import Tiling
    from lumenkit.models.resunet import create_model

    torch.manual_seed(0)
    net = create_model(width=4, depth=2, classes=3).eval()
    img = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    ref = predict_image(net, img, tiling=Tiling(64, 8))["indices"]
    depths = _spy_depth(monkeypatch, "lumenkit.inference.predict", "predict_probs")
    _set_retention(monkeypatch, retain)
    got = predict_image(net, img, tiling=Tiling(64, 8))["indices"]
    assert depths == [1 if retain else 0]
    np.testing.assert_array_equal(got, ref)
    import lumenkit.runtime.heap

    assert lumenkit.runtime.heap._depth == 0  # the block closed


@needs_glibc
@pytest.mark.parametrize("retain", [True, False])
def test_predict_files_and_evaluate_hold_one_block_over_all_images(fake_dataset, tmp_path, monkeypatch, retain):
    import torch

    from lumenkit.data.catalogue import ClassMap
    from lumenkit.evaluation.evaluate import evaluate
    from lumenkit.inference.predict import predict_files
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    torch.manual_seed(0)
    ckpt = Checkpoint(model=create_model(width=4, depth=2, classes=3).eval(), class_map=ClassMap([0, 1, 2]),
                      scale=0.5)
    depths = _spy_depth(monkeypatch, "lumenkit.inference.predict", "predict_probs")
    _set_retention(monkeypatch, retain)
    rep = predict_files(ckpt, [fake_dataset / "imgs" / "test"], tmp_path / "out", scale=0.5, progress=False)
    assert rep.ok and len(rep.composition) == 2
    assert depths == ([2, 2] if retain else [0, 0])  # the loop's block and predict_image's, nested
    depths.clear()
    evaluate(fake_dataset, ckpt, split="test", baselines=False, progress=False)
    assert depths == ([2, 2] if retain else [0, 0])


@needs_glibc
@pytest.mark.parametrize("flag", [[], ["--no-retain-heap"]])
def test_cli_predict_and_evaluate_take_the_flag(fake_dataset, tmp_path, monkeypatch, flag):
    import torch

    from lumenkit.cli import main
    from lumenkit.data.catalogue import ClassMap
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    torch.manual_seed(0)
    pt = Checkpoint(model=create_model(width=4, depth=2, classes=3).eval(), class_map=ClassMap([0, 1, 2]),
                    scale=0.5).save(tmp_path / "model.pt")
    depths = _spy_depth(monkeypatch, "lumenkit.inference.predict", "predict_probs")
    want = [0, 0] if flag else [2, 2]
    assert main(["predict", "--model", str(pt), "--out", str(tmp_path / "out"), "--scale", "0.5", "--quiet", *flag,
                 str(fake_dataset / "imgs" / "test")]) == 0
    assert depths == want
    depths.clear()
    assert main(["evaluate", "--data", str(fake_dataset), "--model", str(pt), "--out", str(tmp_path / "m.json"),
                 "--no-baselines", "--quiet", *flag]) == 0
    assert depths == want
