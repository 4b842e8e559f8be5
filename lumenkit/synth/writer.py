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
from lumenkit.synth.deposits import BASE_SCALE, DEPOSITS, JPEG_QUALITY, PIXEL_SIZE_UM, SCHEDULE, SynthExistsError
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
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``, replacing an existing ``out`` (readers never see half)."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _dataset_yaml(scale: float, codes: list[int], seed: int, size: tuple[int, int], deposits: Sequence[str]) -> str:
    keys = list(dict.fromkeys(deposits))
    return (
        "name: \"lumenkit synthetic polished sections\"\n"
        f"scale: {scale}  # relative to native 3396x2547 images at x100\n"
        f"pixel_size_um: {PIXEL_SIZE_UM / scale:g}  # nominal µm per stored pixel (synthetic: no microscope)\n"
        f"classes: [{', '.join(str(c) for c in codes)}]\n"
        "generator: lumenkit.synth\n"
        f"seed: {seed}\n"
        f"size: [{size[0]}, {size[1]}]\n"
        f"deposits: [{', '.join(keys)}]\n"
    )


# -- sections -------------------------------------------------------------------------------------
SECTION_DEPOSITS: tuple[str, ...] = ("pbzn_a", "cuni_e", "znpb_d")
"""Deposits of the default synthetic sections (:func:`write_sections`)."""


def write_sections(
    out: str | Path,
    truth: str | Path | None = None,
    deposits: Sequence[str] = SECTION_DEPOSITS,
    samples_per_deposit: int = 2,
    images_per_sample: int = 3,
    size: tuple[int, int] = (1024, 768),
    seed: int = 0,
    overwrite: bool = False,
    quality: int = JPEG_QUALITY,
) -> tuple[Path, Path]:
    """Write synthetic sections as a mineralogist brings them: images by deposit, a ``samples.csv``, no masks.

    ``OUT/DEPOSIT/SAMPLE_k.jpg`` with ``OUT/samples.csv`` (image, sample, deposit, pixel_size_um, note), and
    the true masks withheld in ``TRUTH/DEPOSIT/SAMPLE_k.png`` (LumenStone codes), so a report on the sections can
    be checked against the truth afterwards. Two samples exercise what real sections bring:

    - the last sample of the first deposit is imaged with an objective of twice the magnification (rendered at
      twice the scale, half the pixel size, declared in ``samples.csv``): a model that records its pixel size
      sees it resampled to the magnification it knows;
    - the last sample of the second deposit is written as TIFF declaring its pixel size in its resolution tags
      and left blank in ``samples.csv`` (the pixel size then comes from the file).

    Pixel sizes are nominal (:data:`~lumenkit.synth.deposits.PIXEL_SIZE_UM` per native pixel). Both folders are
    built beside their destination and renamed into place.

    Args:
        out: folder of the sections.
        truth: folder of the withheld masks (default: ``OUT`` with ``_masks`` appended, beside it).
        deposits: deposit keys of :data:`~lumenkit.synth.deposits.DEPOSITS`, one folder each.
        samples_per_deposit: samples per deposit (≥ 1).
        images_per_sample: images per sample (≥ 1).
        size: image size ``(width, height)`` in px.
        seed: random seed (same seed → same bytes).
        overwrite: replace existing folders.
        quality: JPEG quality (1–95).

    Returns:
        ``(out, truth)``.

    Raises:
        SynthExistsError: a folder exists and ``overwrite`` is false.
        ValueError: bad counts or deposit keys.
    """
    import tifffile

    out = Path(out).expanduser()
    truth = Path(truth).expanduser() if truth is not None else out.parent / f"{out.name}_masks"
    if samples_per_deposit < 1 or images_per_sample < 1 or not deposits:
        raise ValueError("need at least one deposit, one sample per deposit and one image per sample")
    for k in deposits:
        deposit_of(k)
    for folder in (out, truth):
        if folder.exists() and not overwrite:
            raise SynthExistsError(f"{folder}: folder already exists; pass --overwrite to replace it, "
                                   "or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    truth.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp_truth = truth.parent / f".{truth.name}.tmp-{os.getpid()}"
    for t in (tmp, tmp_truth):
        shutil.rmtree(t, ignore_errors=True)
    try:
        rows = []
        for i, key in enumerate(deposits):
            for j in range(samples_per_deposit):
                sample = f"{key.upper().replace('_', '-')}-{j + 1:02d}"
                last = j == samples_per_deposit - 1 and samples_per_deposit > 1
                scale = 2 * BASE_SCALE if (last and i == 0) else BASE_SCALE
                as_tiff = last and i == 1
                px = PIXEL_SIZE_UM / scale
                for k in range(images_per_sample):
                    rng = np.random.default_rng([seed, 2, i, j, k])
                    image, mask = generate_section(key, size, rng, scale=scale)
                    rel = f"{key}/{sample}_{k + 1}"
                    if as_tiff:
                        path = tmp / f"{rel}.tif"
                        path.parent.mkdir(parents=True, exist_ok=True)
                        tifffile.imwrite(path, image, photometric="rgb", resolution=(1e4 / px, 1e4 / px),
                                         resolutionunit="CENTIMETER")
                    else:
                        save_image(image, tmp / f"{rel}.jpg", quality=quality)
                    save_image(mask, tmp_truth / f"{rel}.png")
                    note = ("twice the magnification" if scale != BASE_SCALE
                            else "pixel size in the TIFF tags" if as_tiff else "")
                    rows.append((rel, sample, key, "" if as_tiff else f"{px:g}", note))
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["image", "sample", "deposit", "pixel_size_um", "note"])
        wr.writerows(rows)
        write_text(tmp / "samples.csv", buf.getvalue())
        _move_into_place(tmp, out)
        _move_into_place(tmp_truth, truth)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp_truth, ignore_errors=True)
        raise
    return out, truth
