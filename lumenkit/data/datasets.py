"""LumenStone-layout datasets: listing, loading at any scale, validation splits and class statistics."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import CATALOGUE, IGNORE, ClassMap, resolve_class_set
from lumenkit.data.imageio import (
    image_size,
    read_image,
    read_mask,
    read_yaml_mapping,
    resize_mask,
    target_size,
    write_json,
)
from lumenkit.errors import (
    ConfigError,
    DatasetNotFoundError,
    EmptySplitError,
    LumenkitError,
    MissingMaskError,
    UnknownClassError,
)

NATIVE_SIZE: tuple[int, int] = (3396, 2547)
"""Native LumenStone image size ``(width, height)`` at ×100 (scale 1.0)."""

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
LAYOUT_HELP = "expected ROOT/imgs/SPLIT/NAME.jpg with ROOT/masks/SPLIT/NAME.png (LumenStone layout)"


@dataclass
class DatasetInfo:
    """Contents of an optional ``dataset.yaml``.

    Attributes:
        name: human-readable dataset name.
        scale: scale of the stored files relative to native ×100 images (1.0 = 3396×2547).
        class_set: class-set name (``"S1"``) if given.
        classes: LumenStone codes present in the dataset, if given.
        validation: a fixed validation split (image names in ``train``), if given; it replaces the seeded carve
            of ``fit``/``val`` (written by :func:`combine_datasets` so that each source keeps its own split).
        pixel_size_um: side of one pixel of the stored images in µm, if given; a model trained on the dataset
            records it (at its own scale) so that prediction can resample sections of another magnification.
        labels: ``"dense"`` (every pixel labelled but a few 255) or ``"sparse"`` (masks of strokes: most pixels 255,
            unlabelled): sparse masks are reduced to the training scale by a vote among labelled pixels only, so
            strokes survive (:func:`lumenkit.data.imageio.resize_mask`), and validation scores count labelled
            pixels only.
        extra: any other keys, kept as written.
    """

    name: str = ""
    scale: float = 1.0
    class_set: str | None = None
    classes: tuple[int, ...] | None = None
    validation: tuple[str, ...] | None = None
    pixel_size_um: float | None = None
    labels: str = "dense"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, root: str | Path) -> DatasetInfo:
        """Read ``ROOT/dataset.yaml``; defaults if absent.

        Raises:
            ConfigError: unreadable YAML or keys of the wrong type.
        """
        path = Path(root) / "dataset.yaml"
        if not path.exists():
            return cls(name=Path(root).name)
        raw = read_yaml_mapping(path, "name, scale, class_set, classes, validation, pixel_size_um, labels")
        name = raw.pop("name", Path(root).name)
        scale = raw.pop("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 4:
            raise ConfigError(f"{path}: 'scale' must be a number in (0, 4] relative to native ×100, got {scale!r}")
        class_set = raw.pop("class_set", None)
        if class_set is not None:
            if not isinstance(class_set, str):
                raise ConfigError(f"{path}: 'class_set' must be a name such as S1, got {class_set!r}")
            try:
                resolve_class_set(class_set)
            except UnknownClassError as e:
                raise ConfigError(f"{path}: {e}") from None
        classes = raw.pop("classes", None)
        if classes is not None:
            if not isinstance(classes, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in classes
            ):
                raise ConfigError(f"{path}: 'classes' must be a list of integer LumenStone codes, got {classes!r}")
            bad = [c for c in classes if c not in CATALOGUE]
            if bad:
                raise ConfigError(f"{path}: 'classes' holds unknown codes {bad}; valid codes are 0–14")
            classes = tuple(sorted(classes))
        validation = raw.pop("validation", None)
        if validation is not None:
            if not isinstance(validation, list) or not validation or not all(isinstance(v, str) for v in validation):
                raise ConfigError(f"{path}: 'validation' must be a non-empty list of image names in train, "
                                  f"got {validation!r}")
            validation = tuple(sorted(validation))
        px = raw.pop("pixel_size_um", None)
        if px is not None and (isinstance(px, bool) or not isinstance(px, (int, float)) or not px > 0):
            raise ConfigError(f"{path}: 'pixel_size_um' must be the positive side of one stored pixel in µm, "
                              f"got {px!r}")
        labels = raw.pop("labels", "dense")
        if labels not in ("dense", "sparse"):
            raise ConfigError(f"{path}: 'labels' must be dense (every pixel labelled) or sparse (strokes), "
                              f"got {labels!r}")
        return cls(name=str(name), scale=float(scale), class_set=class_set, classes=classes, validation=validation,
                   pixel_size_um=float(px) if px is not None else None, labels=labels, extra=raw)

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping for this info."""
        d: dict[str, Any] = {"name": self.name, "scale": self.scale}
        if self.class_set:
            d["class_set"] = self.class_set
        if self.classes is not None:
            d["classes"] = list(self.classes)
        if self.validation is not None:
            d["validation"] = list(self.validation)
        if self.pixel_size_um is not None:
            d["pixel_size_um"] = self.pixel_size_um
        if self.labels != "dense":
            d["labels"] = self.labels
        d.update(self.extra)
        return d


def read_deposits(root: str | Path) -> pd.DataFrame:
    """Read ``ROOT/deposits.csv`` (columns ``image, deposit[, association]``) indexed by image name.

    Returns an empty frame when the file is absent.

    Raises:
        ConfigError: missing columns, duplicate names.
    """
    path = Path(root) / "deposits.csv"
    if not path.exists():
        return pd.DataFrame(columns=["deposit", "association"], index=pd.Index([], name="image"))
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable CSV ({e})") from None
    missing = {"image", "deposit"} - set(df.columns)
    if missing:
        raise ConfigError(f"{path}: missing column(s) {sorted(missing)}; expected image,deposit[,association]")
    if "association" not in df.columns:
        df["association"] = ""
    dup = df["image"][df["image"].duplicated()].tolist()
    if dup:
        raise ConfigError(f"{path}: images listed twice: {dup[:5]}")
    df["image"] = [Path(s).stem for s in df["image"]]
    return df.set_index("image")[["deposit", "association"]]


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def list_splits(root: str | Path) -> list[str]:
    """On-disk split names under ``ROOT/imgs`` (e.g. ``['test', 'train']``)."""
    imgs = Path(root) / "imgs"
    return sorted(p.name for p in imgs.iterdir() if p.is_dir()) if imgs.is_dir() else []


def validation_folds(n_images: int, n_val: int = 10) -> int:
    """How many validation folds ``n_images`` training images give in blocks of ``n_val``: ``ceil(n_images / n_val)``.

    Fold ``f`` of :func:`validation_split` is the ``f``-th block of ``n_val`` images of one seeded permutation
    (the last block may be smaller), so the folds of one seed partition the images: 59 images with ``n_val=10``
    give folds 0–5, fold 5 holding 9 images.

    Raises:
        ConfigError (a ValueError): if ``n_val`` is not in ``[1, n_images - 1]``.
    """
    if not 1 <= n_val < n_images:
        raise ConfigError(f"n_val={n_val} must be between 1 and {n_images - 1} for {n_images} images; lower n_val "
                          "(--n-val) or add training images")
    return -(-n_images // n_val)


def validation_split(
    names: Sequence[str], n_val: int = 10, seed: int = 0, fold: int = 0
) -> tuple[list[str], list[str]]:
    """Carve a fixed validation split from training image names.

    The sorted names are permuted with ``np.random.default_rng(seed)``; fold ``f`` takes the images at
    permutation positions ``f * n_val`` to ``(f + 1) * n_val - 1`` (the last fold may be smaller).  Fold 0 is
    the split lumenkit has always carved; the folds of one seed and ``n_val`` partition the names, so training
    once per fold cross-validates a recipe over every image (see :func:`validation_folds`).

    The result depends only on the set of names, ``n_val``, ``seed`` and ``fold`` (not on their order).

    Returns:
        ``(train_names, val_names)``, each sorted.

    Raises:
        ConfigError (a ValueError): if ``n_val`` is not in ``[1, len(names) - 1]``, or ``fold`` is not in
            ``[0, ceil(len(names) / n_val))`` (the message names the valid range).
    """
    names = sorted(names)
    folds = validation_folds(len(names), n_val)
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < folds:
        raise ConfigError(f"val_fold={fold!r} is out of range: {len(names)} images in blocks of n_val={n_val} give "
                          f"folds 0 to {folds - 1} (valid range [0, {folds})); choose val_fold (--val-fold) in "
                          "that range")
    fold = int(fold)
    perm = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in perm[fold * n_val:(fold + 1) * n_val])
    train = sorted(set(names) - set(val))
    return train, val


@dataclass(frozen=True)
class ValidationSplit:
    """Which training images validate a model: block ``fold`` of ``n_val`` images of seed ``seed``'s permutation.

    The one object for the split that training carves (``TrainConfig.n_val / val_seed / val_fold``), that a
    checkpoint records, and that evaluation and the deposit report reopen, so a model is never scored on images it
    trained on. See :func:`validation_split` for the carving rule.

    Attributes:
        n_val: validation images (≥ 1).
        seed: seed of the permutation of the sorted training image names.
        fold: which block of ``n_val`` images of that permutation (0 = the usual split; the folds of one seed
            partition the training images).
    """

    n_val: int = 10
    seed: int = 0
    fold: int = 0

    def carve(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """``(fit_names, val_names)`` of ``names``, each sorted (see :func:`validation_split`).

        Raises:
            ConfigError: ``n_val`` or ``fold`` out of range for ``len(names)`` images.
        """
        return validation_split(names, n_val=self.n_val, seed=self.seed, fold=self.fold)

    def folds(self, n_images: int) -> int:
        """How many folds ``n_images`` training images give with this ``n_val`` (see :func:`validation_folds`).

        Raises:
            ConfigError (a ValueError): if ``n_val`` is not in ``[1, n_images - 1]``.
        """
        return validation_folds(n_images, self.n_val)

    def to_dict(self) -> dict[str, int]:
        """As recorded by training and evaluation: ``{"n_val", "val_seed", "val_fold"}``."""
        return {"n_val": int(self.n_val), "val_seed": int(self.seed), "val_fold": int(self.fold)}

    def __str__(self) -> str:
        """``n_val=10, val_seed=0, val_fold=1``: the split as messages name it (the recorded keys)."""
        return ", ".join(f"{k}={x}" for k, x in self.to_dict().items())

    @classmethod
    def from_dict(cls, d: Any, n_val: int | None = None, seed: int | None = None,
                  fold: int | None = None) -> ValidationSplit:
        """The split recorded in ``d`` (a training config or ``metrics.json``), given values winning.

        Missing values fall back to the defaults (10 images, seed 0, fold 0): checkpoints written before folds
        existed were trained on fold 0. ``d`` may be ``None``.
        """
        d = d if isinstance(d, dict) else {}
        return cls(
            int(n_val if n_val is not None else d.get("n_val", 10)),
            int(seed if seed is not None else d.get("val_seed", 0)),
            int(fold if fold is not None else d.get("val_fold", 0)),
        )

    @classmethod
    def of_model(cls, checkpoint: Any, n_val: int | None = None, seed: int | None = None,
                 fold: int | None = None) -> ValidationSplit:
        """The split a checkpoint was trained with (its ``config["train"]``), given values winning."""
        train = (getattr(checkpoint, "config", None) or {}).get("train", {}) or {}
        return cls.from_dict(train, n_val, seed, fold)


class LumenStoneDataset:
    """Image/mask pairs of one split of a folder in LumenStone layout.

    ``ROOT/imgs/SPLIT/NAME.jpg`` with ``ROOT/masks/SPLIT/NAME.png``; optional ``ROOT/dataset.yaml``
    (stored ``scale``, ``class_set``, ``classes``) and ``ROOT/deposits.csv``.

    Items are dicts ``{"image": (H, W, 3) uint8, "mask": (H, W) uint8 LumenStone codes, "name": str,
    "deposit": str}`` at the dataset's working ``scale`` (relative to native ×100).

    Args:
        root: dataset folder.
        split: on-disk split (``"train"``, ``"test"``), or ``"fit"`` / ``"val"`` for the training split
            minus / only the validation images carved by :func:`validation_split`.
        scale: working scale relative to native 3396×2547 (default: the stored scale, no resampling).
        class_set: class-set name or codes; default from ``dataset.yaml``, else every code found.
        names: restrict to these image names (stems).
        validation: which training images are ``"val"`` (default ``ValidationSplit()``: 10 images, seed 0, fold 0;
            ignored when ``dataset.yaml`` lists ``validation``).

    Raises:
        DatasetNotFoundError: the folder or split is missing.
        EmptySplitError: the split holds no images.
        MissingMaskError: an image has no mask.
        ConfigError: ``dataset.yaml`` or ``deposits.csv`` is malformed or names unknown images.
        ConfigError: ``validation`` out of range for the training images (split ``fit`` / ``val``).
        DatasetNotFoundError: ``names`` holds a name that is not an image of the split.
        UnknownClassError: ``class_set`` is an unknown set name, holds a code outside 0–14, or is empty.
        ValueError: ``scale`` is outside (0, 4].
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        scale: float | None = None,
        class_set: str | Sequence[int] | None = None,
        names: Sequence[str] | None = None,
        validation: ValidationSplit | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"{self.root}: dataset folder not found; {LAYOUT_HELP}. "
                "Create the synthetic default with `make data` or `lumenkit synth --out DIR`"
            )
        self.info = DatasetInfo.read(self.root)
        disk_split = "train" if split in ("fit", "val") else split
        img_dir = self.root / "imgs" / disk_split
        mask_dir = self.root / "masks" / disk_split
        if not img_dir.is_dir():
            have = list_splits(self.root)
            raise DatasetNotFoundError(
                f"{img_dir}: split {disk_split!r} not found (splits here: {have or 'none'}); {LAYOUT_HELP}"
            )
        files = _list_images(img_dir)
        if not files:
            raise EmptySplitError(f"{img_dir}: split {disk_split!r} holds no images (.jpg/.png/.tif); {LAYOUT_HELP}")
        by_name = {p.stem: p for p in files}
        if split in ("fit", "val") and self.info.validation is not None:
            missing = sorted(set(self.info.validation) - set(by_name))
            if missing:
                raise ConfigError(f"{self.root / 'dataset.yaml'}: 'validation' names images not in train: "
                                  f"{missing[:5]}; fix the list or add the images")
            val = list(self.info.validation)
            keep = sorted(set(by_name) - set(val)) if split == "fit" else val
            if not keep:
                raise ConfigError(f"{self.root / 'dataset.yaml'}: 'validation' lists every training image; "
                                  "leave some to train on")
            by_name = {n: by_name[n] for n in keep}
        elif split in ("fit", "val"):
            try:
                fit, val = (validation or ValidationSplit()).carve(list(by_name))
            except ConfigError as e:
                raise ConfigError(f"{self.root}: {e}") from None
            keep = fit if split == "fit" else val
            by_name = {n: by_name[n] for n in keep}
        if names is not None:
            unknown = sorted(set(names) - set(by_name))
            if unknown:
                raise DatasetNotFoundError(f"{img_dir}: no images named {unknown[:5]} in split {split!r}")
            by_name = {n: by_name[n] for n in sorted(names)}
        self.split = split
        self.names: list[str] = list(by_name)
        self.image_paths: list[Path] = list(by_name.values())
        self.mask_paths: list[Path] = []
        for n, p in by_name.items():
            m = mask_dir / f"{n}.png"
            if not m.exists():
                raise MissingMaskError(
                    f"{p}: image has no mask {m}; add the mask or move the image out of the split"
                )
            self.mask_paths.append(m)
        self.stored_scale = self.info.scale
        self.scale = float(scale) if scale is not None else self.stored_scale
        if not 0 < self.scale <= 4:
            raise ValueError(f"scale must be in (0, 4] relative to native ×100, got {scale}")
        self.sparse = self.info.labels == "sparse"
        """Masks of strokes (``labels: sparse`` in ``dataset.yaml``): reduced by a vote among labelled pixels."""
        # µm per pixel at the working scale (None when dataset.yaml does not say)
        self.pixel_size_um: float | None = (self.info.pixel_size_um * self.stored_scale / self.scale
                                            if self.info.pixel_size_um is not None else None)
        cs = class_set if class_set is not None else (self.info.class_set or self.info.classes)
        self.class_map: ClassMap | None = ClassMap(cs) if cs is not None else None
        self.deposits = read_deposits(self.root)
        if len(self.deposits):
            all_names = {p.stem for s in list_splits(self.root) for p in _list_images(self.root / "imgs" / s)}
            ghost = sorted(set(self.deposits.index) - all_names)
            if ghost:
                raise ConfigError(
                    f"{self.root / 'deposits.csv'}: names images that do not exist: {ghost[:5]}; "
                    "remove those rows or add the images"
                )

    # -- basic access -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (
            f"LumenStoneDataset({str(self.root)!r}, split={self.split!r}, images={len(self)}, "
            f"scale={self.scale}, class_set={self.class_map})"
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int | str) -> dict[str, Any]:
        return self.load(i)

    def index(self, name_or_index: int | str) -> int:
        """Position of an image given by index or name.

        Args:
            name_or_index: the image's name (file stem) or its position (negative counts from the end).

        Raises:
            KeyError: no image of that name in this split.
            IndexError: the index is out of range.
        """
        if isinstance(name_or_index, str):
            try:
                return self.names.index(name_or_index)
            except ValueError:
                raise KeyError(f"no image {name_or_index!r} in {self!r}") from None
        if not -len(self) <= name_or_index < len(self):
            raise IndexError(f"index {name_or_index} out of range for {len(self)} images")
        return int(name_or_index) % len(self)

    def deposit(self, name: str) -> str:
        """Deposit of an image ('' when ``deposits.csv`` does not list it)."""
        return str(self.deposits["deposit"].get(name, "")) if len(self.deposits) else ""

    @property
    def factor(self) -> float:
        """Resampling factor from stored files to the working scale."""
        return self.scale / self.stored_scale

    def read_mask(self, i: int | str) -> np.ndarray:
        """Mask of LumenStone codes at its stored resolution (what metrics are computed against).

        Raises:
            BadMaskError, MaskSizeError, BadImageError, UnknownClassError: as for :meth:`load`.
            KeyError, IndexError: an unknown name or an index out of range (see :meth:`index`).
        """
        k = self.index(i)
        mask = read_mask(self.mask_paths[k], expected_size=image_size(self.image_paths[k]))
        if self.class_map is not None:
            bad = self.class_map.unknown_codes(mask)
            if bad:
                self.class_map.to_index(mask, source=str(self.mask_paths[k]))  # raises with the message
        return mask

    def read_image(self, i: int | str, scale: float | None = None) -> np.ndarray:
        """RGB image at ``scale`` (relative to native ×100; default: the working scale).

        Raises:
            BadImageError: corrupt, truncated or non-RGB file.
            KeyError, IndexError: an unknown name or an index out of range (see :meth:`index`).
        """
        k = self.index(i)
        factor = (scale if scale is not None else self.scale) / self.stored_scale
        return read_image(self.image_paths[k], factor=factor)

    def load(self, i: int | str, scale: float | None = None) -> dict[str, Any]:
        """Image and mask at ``scale`` (relative to native ×100; default: the working scale), as a sample dict.

        Raises:
            BadImageError: corrupt, truncated or non-RGB image.
            BadMaskError: corrupt, colour or 16-bit mask.
            MaskSizeError: mask and image sizes differ.
            UnknownClassError: mask codes outside the class set.
            KeyError, IndexError: an unknown name or an index out of range (see :meth:`index`).
        """
        k = self.index(i)
        scale = self.scale if scale is None else scale
        mask = self.load_mask(k, scale)
        image = read_image(self.image_paths[k], factor=scale / self.stored_scale)
        return {"image": image, "mask": mask, "name": self.names[k], "deposit": self.deposit(self.names[k])}

    def load_mask(self, i: int | str, scale: float | None = None) -> np.ndarray:
        """Mask of LumenStone codes resampled to ``scale`` (relative to native ×100; default: the working scale).

        Resampling is label-preserving (:func:`lumenkit.data.imageio.resize_mask`).

        Raises:
            BadMaskError, MaskSizeError, BadImageError, UnknownClassError: as for :meth:`load`.
            KeyError, IndexError: an unknown name or an index out of range (see :meth:`index`).
        """
        mask = self.read_mask(i)
        factor = (self.scale if scale is None else scale) / self.stored_scale
        return resize_mask(mask, target_size((mask.shape[1], mask.shape[0]), factor), sparse=self.sparse)

    def content_hash(self) -> str:
        """SHA-1 over the names and bytes of every image and mask of this split: identifies the data of a run."""
        h = hashlib.sha1()
        for n, ip, mp in zip(self.names, self.image_paths, self.mask_paths):
            h.update(n.encode())
            h.update(ip.read_bytes())
            h.update(mp.read_bytes())
        return h.hexdigest()

    def validate(self) -> list[str]:
        """Decode every pair and check sizes and codes.

        Returns:
            One message per bad pair (empty when all are good); nothing is raised.
        """
        problems = []
        for k in range(len(self)):
            try:
                self.read_mask(k)
                read_image(self.image_paths[k], factor=0.125)
            except LumenkitError as e:
                problems.append(str(e))
        return problems

    @property
    def codes(self) -> tuple[int, ...]:
        """LumenStone codes of the class set, or every code found in the masks when no class set is known."""
        if self.class_map is not None:
            return self.class_map.codes
        raw = np.stack([_cached_bincount(p) for p in self.mask_paths]).sum(0)
        return tuple(int(c) for c in np.flatnonzero(raw[:IGNORE]))

    @property
    def classes(self) -> ClassMap:
        """The class map a model of this dataset predicts: the class set, or the codes found in the masks.

        Raises:
            UnknownClassError: masks hold a code outside the LumenStone catalogue (no class set given), naming the
                first mask that holds it.
        """
        if self.class_map is not None:
            return self.class_map
        codes = self.codes
        bad = [c for c in codes if c not in CATALOGUE]
        if bad:
            where = next(p for p in self.mask_paths if _cached_bincount(p)[bad].any())
            raise UnknownClassError(
                f"{where}: class code(s) {bad} are not LumenStone minerals (valid 0–14, 255 = ignore); "
                "relabel the mask or mark those pixels 255"
            )
        return ClassMap(codes)

    # -- statistics -------------------------------------------------------------------------------
    def class_counts(self) -> pd.DataFrame:
        """Pixel count per image (rows, by name) and class (columns, by label) at the stored resolution.

        Columns follow the class set (or every code found); an ``ignore`` column counts 255 pixels.
        Counts are cached in the lumenkit cache folder keyed by the mask file's content hash.

        Raises:
            UnknownClassError: with a class set, masks hold codes other than its codes and 255 (ignore).
            BadMaskError: a mask that is missing, corrupt, multi-channel or not 8-bit.
        """
        raw = np.stack([_cached_bincount(p) for p in self.mask_paths])
        codes = self.class_map.codes if self.class_map is not None else tuple(
            int(c) for c in np.flatnonzero(raw[:, :IGNORE].sum(0))
        )
        extra = sorted(set(np.flatnonzero(raw[:, :IGNORE].sum(0)).tolist()) - set(codes))
        if extra:
            raise UnknownClassError(
                f"{self.root}: masks hold codes {extra} outside the class set {list(codes)}; "
                "choose a class set that contains them"
            )
        df = pd.DataFrame(raw[:, list(codes)], index=pd.Index(self.names, name="image"),
                          columns=[CATALOGUE[c].label for c in codes])
        df["ignore"] = raw[:, IGNORE]
        return df


def cache_dir() -> Path:
    """Folder for lumenkit's caches: ``$LUMENKIT_CACHE`` or ``~/.cache/lumenkit``."""
    return Path(os.environ.get("LUMENKIT_CACHE", Path.home() / ".cache" / "lumenkit"))


_COUNT_CACHE: dict[str, np.ndarray] = {}


def _cached_bincount(mask_path: Path) -> np.ndarray:
    """256-bin histogram of a mask file's codes, cached by the file's content hash."""
    data = Path(mask_path).read_bytes()
    key = hashlib.sha1(data).hexdigest()
    if key in _COUNT_CACHE:
        return _COUNT_CACHE[key]
    path = cache_dir() / "class_counts" / f"{key}.json"
    if path.exists():
        try:
            counts = np.zeros(256, dtype=np.int64)
            for c, n in json.loads(path.read_text()).items():
                counts[int(c)] = n
            _COUNT_CACHE[key] = counts
            return counts
        except (ValueError, OSError):
            pass
    counts = np.bincount(read_mask(mask_path).ravel(), minlength=256).astype(np.int64)
    try:
        write_json(path, {str(c): int(counts[c]) for c in np.flatnonzero(counts)})
    except OSError:
        pass  # a read-only cache is not an error
    _COUNT_CACHE[key] = counts
    return counts


def open_splits(
    root: str | Path, validation: ValidationSplit | None = None, **kwargs: Any
) -> dict[str, LumenStoneDataset]:
    """Open ``fit``, ``val`` (carved from train by ``validation``, default 10 images of seed 0) and ``test`` if present.

    Raises:
        ConfigError: ``validation`` out of range; dataset errors as in :class:`LumenStoneDataset`.
    """
    out = {
        "fit": LumenStoneDataset(root, "fit", validation=validation, **kwargs),
        "val": LumenStoneDataset(root, "val", validation=validation, **kwargs),
    }
    if "test" in list_splits(root):
        out["test"] = LumenStoneDataset(root, "test", **kwargs)
    return out


def pixel_shares(counts: pd.DataFrame) -> pd.Series:
    """Dataset-wide share of each class (fractions summing to 1, ignore pixels excluded)."""
    c = counts.drop(columns=["ignore"], errors="ignore").sum()
    return c / c.sum()


def combine_datasets(
    sources: Sequence[str | Path],
    out: str | Path,
    n_val: int | Sequence[int] = 10,
    seed: int = 0,
    copy: bool = False,
    overwrite: bool = False,
    fold: int = 0,
) -> Path:
    """Write one LumenStone-layout folder holding several datasets (e.g. S1 and S2) for a joint model.

    Every image and mask is linked (or copied) as ``SOURCE__NAME`` (``SOURCE`` = the source folder's name), so
    names never clash; ``dataset.yaml`` gets the union of the classes and, as a fixed ``validation`` list, each
    source's own seeded validation split (fold ``fold`` of the ``n_val``-image blocks carved with ``seed``, as
    ``lumenkit evaluate --data SOURCE --split val`` uses), so a joint model never trains on images its
    single-dataset rivals are validated on.  ``test`` splits are combined when every source has one;
    ``deposits.csv`` rows are merged.

    Args:
        sources: dataset folders in LumenStone layout, all stored at the same scale.
        out: the new folder (must not exist unless ``overwrite``).
        n_val: validation images per source (one number for all, or one per source).
        seed: seed of every source's validation split.
        fold: fold of every source's validation split (0 = the usual split; see :func:`validation_split`); a
            fold that one source does not have (it has fewer images or a larger ``n_val``) is an error.
        copy: copy the files instead of symbolic links (links fall back to copies where unsupported).
        overwrite: replace an existing ``out``.

    Returns:
        The ``out`` path.

    Raises:
        ConfigError: fewer than two sources, duplicate source names, different stored scales, a bad ``n_val`` or
            ``fold`` for a source, or an existing ``out`` without ``overwrite``.
        DatasetNotFoundError, EmptySplitError, MissingMaskError: a bad source folder.
    """
    import shutil

    import yaml

    from lumenkit.data.imageio import write_text

    roots = [Path(s).expanduser().resolve() for s in sources]
    if len(roots) < 2:
        raise ConfigError(f"combine needs at least two dataset folders, got {len(roots)}")
    tags = [r.name for r in roots]
    if len(set(tags)) != len(tags):
        raise ConfigError(f"combine: source folders must have distinct names (they prefix the images), got {tags}")
    nv = [int(n_val)] * len(roots) if isinstance(n_val, int) else [int(v) for v in n_val]
    if len(nv) != len(roots):
        raise ConfigError(f"combine: n_val has {len(nv)} values for {len(roots)} sources; give one or one each")
    trains = [LumenStoneDataset(r, "train") for r in roots]
    scales = {ds.stored_scale for ds in trains}
    if len(scales) > 1:
        raise ConfigError(f"combine: sources are stored at different scales {sorted(scales)}; resample them to one "
                          "scale first (all LumenStone x05 folders are at 0.5)")
    out = Path(out).expanduser()
    if out.exists():
        if not overwrite:
            raise ConfigError(f"{out}: exists; choose another folder or pass overwrite=True (--overwrite)")
        shutil.rmtree(out)
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)

    def place(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not copy:
            try:
                os.symlink(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    classes: set[int] = set()
    validation: list[str] = []
    deposits = []
    splits = ["train"] + (["test"] if all("test" in list_splits(r) for r in roots) else [])
    for root, tag, train, k in zip(roots, tags, trains, nv, strict=True):
        try:
            validation += [f"{tag}__{n}" for n in validation_split(train.names, n_val=k, seed=seed, fold=fold)[1]]
        except ConfigError as e:
            raise ConfigError(f"{root}: {e}") from None
        for split in splits:
            ds = train if split == "train" else LumenStoneDataset(root, split)
            for name, img, msk in zip(ds.names, ds.image_paths, ds.mask_paths, strict=True):
                place(img, tmp / "imgs" / split / f"{tag}__{name}{img.suffix.lower()}")
                place(msk, tmp / "masks" / split / f"{tag}__{name}.png")
        info = train.info
        if info.classes is not None:
            classes |= set(info.classes)
        elif info.class_set:
            classes |= set(ClassMap(info.class_set).codes)
        else:
            classes |= set(train.classes.codes)
        dep = read_deposits(root)
        if len(dep):
            dep = dep.copy()
            dep.index = [f"{tag}__{n}" for n in dep.index]
            dep["association"] = [a or tag for a in dep["association"]]
            deposits.append(dep)
    doc = {
        "name": " + ".join(ds.info.name or r.name for ds, r in zip(trains, roots, strict=True)),
        "scale": trains[0].stored_scale,
        "classes": sorted(classes),
        "sources": [str(r) for r in roots],
        "validation": sorted(validation),
    }
    carve = f" (fold {fold})" if fold else ""  # fold 0: the file as lumenkit always wrote it
    write_text(tmp / "dataset.yaml", f"# written by lumenkit combine; 'validation' is each source's seeded split"
               f"{carve}\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    if deposits:
        df = pd.concat(deposits)
        df.index.name = "image"
        write_text(tmp / "deposits.csv", df.reset_index().to_csv(index=False))
    os.replace(tmp, out)
    return out
