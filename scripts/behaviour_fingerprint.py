"""Behaviour fingerprint: the synthetic bytes and the training steps of a fixed seed, as one JSON line.

Written for the restructure into subpackages (issue "One house"): it runs on the code before and after the move,
so the two outputs can be compared byte for byte::

    git worktree add /tmp/before 32f32d4 && (cd /tmp/before && python /path/to/scripts/behaviour_fingerprint.py)
    python scripts/behaviour_fingerprint.py

It writes a 6+2-image synthetic dataset (seed 0, 256x192 px) and hashes every file, then trains a small ResUNet for
two epochs with every field of the configuration set explicitly (so changed defaults do not matter) and records each
step's loss, the validation mean IoU per epoch and a hash of the final weights. One torch thread, eager, CPU.
"""
import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import torch

from lumenkit.synth import write_dataset

try:
    from lumenkit.training import TrainConfig, train
except ImportError:  # before the restructure
    from lumenkit.train import TrainConfig, train

OLD_DEFAULTS = dict(class_set=None, scale=None, arch="resunet", width=8, depth=3, block="residual", patch_size=64,
    batch_size=4, patches_per_epoch=24, epochs=2, minutes=None, lr=1e-3, weight_decay=0.0, schedule="plateau",
    plateau_factor=0.1, plateau_patience=3, min_lr=1e-6, loss="ce", dice_weight=1.0, class_weights=None,
    sampler="balanced", strength=1.0, alpha=4.0, kappa=1.0, grid=16, void_border=0, flips=True, rot90=True,
    photometric=0.1, exposure=0.2, noise=2.0, blur=0.5, ema=0.9, n_val=2, val_seed=0, val_fold=0, val_tile=512,
    val_margin=64, seed=0, workers=0, threads=1, device="cpu", amp=True, compile="off", quiet=True)

def main(tmp: str) -> dict:
    """The fingerprint, computed in folder ``tmp``."""
    tmp = Path(tmp)
    root = write_dataset(tmp / "ds", n_train=6, n_test=2, size=(256, 192), seed=0)
    h = hashlib.sha256()  # every file
    hm = hashlib.sha256()  # images and masks only: dataset.yaml gained pixel_size_um after the move (issue 28)
    for p in sorted(root.rglob("*")):
        if p.is_file():
            for x in (h, hm) if p.name != "dataset.yaml" else (h,):
                x.update(str(p.relative_to(root)).encode())
                x.update(p.read_bytes())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in OLD_DEFAULTS.items() if k in names}
    losses = []
    res = train(TrainConfig(data=str(root), out=str(tmp / "run"), **kw), on_step=lambda d: losses.append(d["loss"]))
    mh = hashlib.sha256()
    for k, v in sorted(res.model.state_dict().items()):
        mh.update(k.encode())
        mh.update(v.detach().cpu().numpy().tobytes())
    return {"synthetic_sha256": h.hexdigest(), "images_masks_sha256": hm.hexdigest(), "steps": len(losses),
            "losses": [round(x, 6) for x in losses],
            "model_sha256": mh.hexdigest(), "val_miou": [round(float(x), 6) for x in res.history["val_miou"]],
            "versions": versions(), "cpu": cpu()}


def cpu() -> str:
    """The CPU the kernels were chosen for: model, instruction-set flags and cache size (sha256 of /proc/cpuinfo's
    lines for them, the first core's), or ``platform.processor()`` where /proc/cpuinfo is absent.

    torch's and oneDNN's kernels are picked by the CPU's instruction sets (and blocked by its caches), and they sum
    in different orders, so the same code gives losses differing by ~1e-5 on another CPU.
    """
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        return platform.processor()
    keep = [x for x in lines if x.split(":")[0].strip() in ("model name", "flags", "cache size")]
    return hashlib.sha256("\n".join(keep).encode()).hexdigest()[:16]


def versions() -> dict:
    """The library versions the bytes depend on (JPEG/PNG encoding, random streams, kernels)."""
    import numpy
    import PIL

    return {"torch": torch.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__}

if __name__ == "__main__":
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as t:
        print(json.dumps(main(t)))
