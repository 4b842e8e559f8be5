"""Writing a synthetic dataset in LumenStone layout, atomically: images, masks, dataset.yaml, deposits.csv."""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lumenkit.data.imageio import save_image, write_text
from lumenkit.synth.deposits import BASE_SCALE, DEPOSITS, JPEG_QUALITY, SCHEDULE, SynthExistsError
from lumenkit.synth.render import deposit_of, generate_section


# -- dataset --------------------------------------------------------------------------------------
def image_name(key: str, split: str, k: int) -> str:
    """File stem of image ``k`` of ``split``: ``pbzn_a_003`` (train) or ``pbzn_a_t003`` (test)."""
    return f"{key}_{'' if split == 'train' else split[0]}{k:03d}"


def write_dataset(
    out: str | Path,
    n_train: int,
    n_test: int,
    size: tuple[int, int] = (1024, 768),
    seed: int = 0,
    overwrite: bool = False,
    scale: float = BASE_SCALE,
    deposits: Sequence[str] = SCHEDULE,
    quality: int = JPEG_QUALITY,
    progress: bool = False,
) -> Path:
    """Write a synthetic dataset in LumenStone layout, atomically.

    Creates ``OUT/imgs/{train,test}/NAME.jpg``, ``OUT/masks/{train,test}/NAME.png`` (LumenStone codes),
    ``OUT/dataset.yaml`` (name, scale, classes) and ``OUT/deposits.csv`` (image, deposit, association).
    The folder is built beside ``out`` and renamed into place, so readers never see a half-written
    dataset. Image ``k`` of a split depends only on ``(seed, split, k)``: a larger dataset starts with the
    images of a smaller one, byte for byte.

    Args:
        out: output folder.
        n_train: training images (≥ 1).
        n_test: test images (≥ 0).
        size: image size ``(width, height)`` in px.
        seed: random seed.
        overwrite: replace an existing ``out``.
        scale: scale stored in ``dataset.yaml`` and used to size textures (0.5 = the real sample's).
        deposits: deposit keys cycled over images (default :data:`SCHEDULE`).
        quality: JPEG quality (1–95).
        progress: show a tqdm progress bar.

    Returns:
        The dataset folder.

    Raises:
        SynthExistsError: ``out`` exists and ``overwrite`` is false.
        ValueError: bad counts, sizes or deposit keys.
    """
    out = Path(out).expanduser()
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train ≥ 1 and n_test ≥ 0, got {n_train} and {n_test}")
    for k in deposits:
        deposit_of(k)
    if not deposits:
        raise ValueError("deposits must name at least one deposit")
    if out.exists() and not overwrite:
        raise SynthExistsError(
            f"{out}: folder already exists; pass overwrite=True (CLI: --overwrite) to replace it, "
            "or choose another --out"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        rows = []
        used: set[int] = set()
        jobs = [("train", k) for k in range(n_train)] + [("test", k) for k in range(n_test)]
        it = jobs
        if progress:
            from tqdm import tqdm

            it = tqdm(jobs, desc="synth", unit="img")
        for split, k in it:
            key = deposits[k % len(deposits)]
            dep = DEPOSITS[key]
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, k])
            image, mask = generate_section(dep, size, rng, scale=scale)
            name = image_name(key, split, k)
            save_image(image, tmp / "imgs" / split / f"{name}.jpg", quality=quality)
            save_image(mask, tmp / "masks" / split / f"{name}.png")
            used.update(dep.codes)
            rows.append((name, key, dep.association))
        if n_test == 0:
            (tmp / "imgs" / "test").mkdir(parents=True, exist_ok=True)
            (tmp / "masks" / "test").mkdir(parents=True, exist_ok=True)
        write_text(tmp / "dataset.yaml", _dataset_yaml(scale, sorted(used), seed, size, deposits))
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["image", "deposit", "association"])
        wr.writerows(rows)
        write_text(tmp / "deposits.csv", buf.getvalue())
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _dataset_yaml(scale: float, codes: list[int], seed: int, size: tuple[int, int], deposits: Sequence[str]) -> str:
    keys = list(dict.fromkeys(deposits))
    return (
        "name: \"lumenkit synthetic polished sections\"\n"
        f"scale: {scale}  # relative to native 3396x2547 images at x100\n"
        f"classes: [{', '.join(str(c) for c in codes)}]\n"
        "generator: lumenkit.synth\n"
        f"seed: {seed}\n"
        f"size: [{size[0]}, {size[1]}]\n"
        f"deposits: [{', '.join(keys)}]\n"
    )
