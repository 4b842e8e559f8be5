"""Shared fixtures: headless matplotlib, a private cache folder, torch seeded, tiny LumenStone-layout datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "agg")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("agg")
    monkeypatch.setenv("LUMENKIT_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from torch's seed 0: a random network built in a test is the same network every run.

    Module- and session-scoped fixtures are set up before this runs: those that build random networks seed
    themselves.
    """
    import torch

    torch.manual_seed(0)


def make_pair(
    rng: np.random.Generator, size: tuple[int, int] = (96, 64), codes=(0, 1, 2)
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image whose colour is a function of the class code, and its mask (W, H = size)."""
    from lumenkit.data.colours import PALETTE

    w, h = size
    mask = np.full((h, w), codes[0], dtype=np.uint8)
    for c in codes[1:]:
        for _ in range(3):
            y, x = rng.integers(0, h), rng.integers(0, w)
            r = rng.integers(4, max(5, min(h, w) // 4))
            yy, xx = np.ogrid[:h, :w]
            mask[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = c
    image = PALETTE[mask].copy()
    return image, mask


def write_fake_dataset(
    root: Path,
    n_train: int = 6,
    n_test: int = 2,
    size: tuple[int, int] = (96, 64),
    codes=(0, 1, 2),
    scale: float | None = 0.5,
    seed: int = 0,
    deposits: bool = True,
) -> Path:
    """A tiny dataset in LumenStone layout (PNG images, so pixel colours are exact)."""
    from lumenkit.data.imageio import save_image, write_text

    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            name = f"{split[:2]}{i:02d}"
            image, mask = make_pair(rng, size, codes)
            save_image(image, root / "imgs" / split / f"{name}.png")
            save_image(mask, root / "masks" / split / f"{name}.png")
            rows.append(f"{name},dep{i % 2},Pb-Zn-Cu")
    if scale is not None:
        write_text(root / "dataset.yaml", f"name: fake\nscale: {scale}\nclasses: {list(codes)}\n")
    if deposits:
        write_text(root / "deposits.csv", "image,deposit,association\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture
def fake_dataset(tmp_path: Path) -> Path:
    return write_fake_dataset(tmp_path / "fake")


REAL_ROOT = Path(os.environ.get("LUMENKIT_LUMENSTONE", Path(__file__).resolve().parents[2] / "shared" / "lumenstone"))


@pytest.fixture
def real_s1() -> Path:
    path = REAL_ROOT / "S1_v1_x05"
    if not path.is_dir():
        pytest.skip("real LumenStone sample absent (set LUMENKIT_LUMENSTONE to the folder holding S1_v1_x05)")
    return path


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody, root included, can write in (``chattr +i``; ``chmod`` when not root), else skip."""
    import os
    import shutil
    import subprocess

    ro = tmp_path / "read-only"
    ro.mkdir()
    undo = None
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", str(ro)], check=True)
    elif os.geteuid() != 0:
        ro.chmod(0o555)
        undo = lambda: ro.chmod(0o755)
    writable = True
    if undo is not None:
        try:
            (ro / "probe").touch()
        except OSError:
            writable = False
    if writable:
        if undo is not None:
            undo()
        pytest.skip("cannot make a read-only folder here (no chattr +i, and root ignores chmod)")
    yield ro
    undo()
