"""A mineralogist's own sections: a folder of images, an optional ``samples.csv``, and each image's pixel size in µm.

A folder (searched at any depth) of JPEG, PNG or TIFF images of polished sections, without masks. An optional
``samples.csv`` beside them (or given explicitly) says which sample and deposit each image belongs to and its
pixel size; further columns are kept as they are::

    image,sample,deposit,pixel_size_um,operator
    north/s12_a.jpg,S12,North,1.30,AK
    s13_b,S13,North,,AK

``image`` is the path relative to the folder, or its stem when that is unique. The pixel size of each image comes,
in this order, from ``samples.csv``, from the file's own metadata (OME-XML ``PhysicalSizeX`` of an OME-TIFF, else
the TIFF resolution tags), from the caller's default (``--pixel-size``), else it is unknown (lengths then stay in
pixels); :attr:`Section.pixel_size_source` records which one was used, and every table reports it per image.
A ``samples.csv`` value that differs by more than 1 % from the one the file declares is refused
(:class:`~lumenkit.errors.ConfigError`), not silently preferred: one of the two is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lumenkit.errors import ConfigError, DatasetNotFoundError

SECTION_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
"""File types read as sections (case-insensitive)."""

SAMPLES_CSV = "samples.csv"
"""Name of the optional table of samples beside the images."""



@dataclass(frozen=True)
class Section:
    """One image of a polished section and what is known about it.

    Attributes:
        path: the image file.
        name: its path relative to the folder without suffix, ``/``-separated (unique; names output files).
        sample: sample name (default: the image's name).
        deposit: deposit name (default: ``""``, unknown).
        pixel_size_um: side of one pixel in µm, or ``None`` when unknown.
        pixel_size_source: where the pixel size came from (``"samples.csv"``, ``"OME-XML"``, ``"TIFF tags"``,
            ``"parameter"``) or ``None``.
        extra: further columns of ``samples.csv`` for this image.
    """

    path: Path
    name: str
    sample: str
    deposit: str = ""
    pixel_size_um: float | None = None
    pixel_size_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """One row of ``sections.csv``: name, file, sample, deposit, pixel size and its source, extra columns."""
        return {"image": self.name, "file": str(self.path), "sample": self.sample, "deposit": self.deposit,
                "pixel_size_um": self.pixel_size_um, "pixel_size_source": self.pixel_size_source, **self.extra}


def find_images(folder: Path) -> list[Path]:
    """Section images below ``folder`` at any depth, sorted; hidden files and folders are skipped."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in SECTION_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _positive(value: Any, where: str) -> float | None:
    """A pixel size from a cell: ``None`` when empty, else a positive finite float."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: pixel_size_um {value!r} is not a number; write the pixel side in µm, "
                          "e.g. 1.3, or leave it empty") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{where}: pixel_size_um must be a positive number of µm, got {value!r}")
    return v


def metadata_pixel_size_um(path: str | Path) -> tuple[float | None, str | None]:
    """The pixel size a TIFF declares about itself, in µm, and where it was read (``(None, None)`` otherwise).

    OME-XML ``PhysicalSizeX`` (with its ``PhysicalSizeXUnit``; µm when absent) wins over the baseline TIFF tags
    ``XResolution``/``ResolutionUnit`` (pixels per inch or per centimetre; a TIFF without a unit, or at the
    72/96 dpi that cameras and editors write by default, declares no physical size). JPEG and PNG carry no
    trustworthy physical size: ``(None, None)``.

    Raises:
        ConfigError: the TIFF declares different sizes along x and y (non-square pixels), naming the file.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff", ".btf", ".tf8"):  # BigTIFF suffixes too
        return None, None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.ome_metadata:
                size = _ome_pixel_size_um(tif.ome_metadata, path)
                if size is not None:
                    return size, "OME-XML"
            tags = tif.pages[0].tags
            return _tag_pixel_size_um(tags, path), "TIFF tags"
    except ConfigError:
        raise
    except Exception:  # an unreadable TIFF is reported by the image reader with its own one-line error
        return None, None


_UNITS_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}


def _ome_pixel_size_um(xml: str, path: Path) -> float | None:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("}Pixels") or el.tag == "Pixels":
            sx, sy = el.get("PhysicalSizeX"), el.get("PhysicalSizeY")
            if sx is None:
                return None
            ux = _UNITS_UM.get(el.get("PhysicalSizeXUnit", "µm"))
            uy = _UNITS_UM.get(el.get("PhysicalSizeYUnit", "µm"))
            if ux is None or uy is None:
                return None
            x = float(sx) * ux
            y = float(sy) * uy if sy is not None else x
            _check_square(x, y, path, "OME-XML PhysicalSizeX/Y")
            return x
    return None


def _tag_pixel_size_um(tags: Any, path: Path) -> float | None:
    unit = tags.get("ResolutionUnit")
    xres, yres = tags.get("XResolution"), tags.get("YResolution")
    if unit is None or xres is None:
        return None
    per_um = {2: 25_400.0, 3: 10_000.0}.get(int(unit.value))  # inch, centimetre
    if per_um is None:
        return None

    def value(tag: Any) -> float:
        num, den = tag.value
        return num / den if den else 0.0

    px_per_unit_x = value(xres)
    px_per_unit_y = value(yres) if yres is not None else px_per_unit_x
    if px_per_unit_x <= 0 or px_per_unit_y <= 0:
        return None
    if int(unit.value) == 2 and round(px_per_unit_x) in (72, 96, 150, 300) and px_per_unit_x == px_per_unit_y:
        return None  # a screen/printer default, not a microscope calibration
    x, y = per_um / px_per_unit_x, per_um / px_per_unit_y
    _check_square(x, y, path, "TIFF XResolution/YResolution")
    return x


def _check_square(x: float, y: float, path: Path, what: str) -> None:
    if abs(x - y) > 1e-3 * max(x, y):
        raise ConfigError(f"{path}: {what} declare non-square pixels ({x:g} × {y:g} µm); resample the image to square "
                          "pixels, or give its pixel size in samples.csv")


def read_samples_csv(path: str | Path) -> pd.DataFrame:
    """Read a ``samples.csv``: columns ``image`` (required), ``sample``, ``deposit``, ``pixel_size_um``, others kept.

    Raises:
        ConfigError: unreadable, no ``image`` column, empty image names, or an image listed twice with
            different values (the message names the rows and the fix).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ConfigError(f"{path}: not a readable CSV ({type(e).__name__}); write columns image,sample,deposit,"
                          "pixel_size_um") from None
    df.columns = [str(c).strip() for c in df.columns]
    if "image" not in df.columns:
        raise ConfigError(f"{path}: no 'image' column (found {list(df.columns)}); the first line must name the "
                          "columns, e.g. image,sample,deposit,pixel_size_um")
    df["image"] = df["image"].str.strip()
    if (df["image"] == "").any():
        rows = [int(i) + 2 for i in df.index[df["image"] == ""]]
        raise ConfigError(f"{path}: rows {rows} have no image name; fill them in or delete them")
    dup = df[df.duplicated("image", keep=False)]
    if len(dup):
        clash = dup.groupby("image").nunique().gt(1).any(axis=1)
        if clash.any():
            name = clash[clash].index[0]
            raise ConfigError(f"{path}: image {name!r} is listed more than once with different values (e.g. "
                              "conflicting pixel sizes); keep one row per image")
        df = df.drop_duplicates("image")
    return df


def read_sections(
    folder: str | Path,
    samples_csv: str | Path | None = None,
    pixel_size_um: float | None = None,
) -> list[Section]:
    """The sections in ``folder`` with their sample, deposit and pixel size (see the module docstring).

    Args:
        folder: folder of images, searched at any depth (hidden files skipped).
        samples_csv: table of samples (default: ``FOLDER/samples.csv`` when it exists).
        pixel_size_um: pixel size for images that neither ``samples.csv`` nor their metadata describe.

    Raises:
        DatasetNotFoundError: the folder does not exist or holds no images.
        ConfigError: a bad ``samples.csv`` (rows naming missing or ambiguous images, bad pixel sizes, an image
            listed twice with different values, one sample name in two deposits, a pixel size that differs by more
            than 1 % from the one the image's TIFF/OME metadata declares), non-square pixels declared by a TIFF
            (without a ``samples.csv`` value), or a bad ``pixel_size_um``.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: folder of sections not found; give a folder of JPEG/PNG/TIFF images")
    files = find_images(folder)
    if not files:
        raise DatasetNotFoundError(f"{folder}: holds no images ({', '.join(SECTION_SUFFIXES)}); put the sections' "
                                   "images there (any depth)")
    default = _positive(pixel_size_um, "pixel size parameter") if pixel_size_um is not None else None
    names = {p: p.relative_to(folder).with_suffix("").as_posix() for p in files}
    csv = Path(samples_csv) if samples_csv is not None else folder / SAMPLES_CSV
    if samples_csv is not None and not csv.is_file():
        raise ConfigError(f"{csv}: samples table not found; give an existing CSV or leave it out")
    rows = _match_rows(read_samples_csv(csv), files, names, folder, csv) if csv.is_file() else {}
    out = []
    for p in files:
        row = rows.get(p, {})
        size, source = _positive(row.get("pixel_size_um"), f"{csv} ({names[p]})"), "samples.csv"
        if size is None:
            size, source = metadata_pixel_size_um(p)
        else:
            _check_agrees(p, size, csv)
        if size is None and default is not None:
            size, source = default, "parameter"
        extra = {k: v for k, v in row.items() if k not in ("image", "sample", "deposit", "pixel_size_um")}
        out.append(Section(p, names[p], str(row.get("sample") or names[p]), str(row.get("deposit") or ""),
                           size, source if size is not None else None, extra))
    deposits_of: dict[str, set[str]] = {}
    for s in out:
        deposits_of.setdefault(s.sample, set()).add(s.deposit)
    shared = {k: sorted(v) for k, v in deposits_of.items() if len(v) > 1}
    if shared:
        name, deps = next(iter(shared.items()))
        raise ConfigError(f"{csv}: sample {name!r} is in deposits {deps}; a sample belongs to one deposit: give the "
                          f"samples of different deposits different names (e.g. {deps[0]}-{name})")
    return out


PIXEL_SIZE_TOLERANCE = 0.01
"""Largest relative difference between the pixel size of ``samples.csv`` and the file's own metadata (1 %)."""


def _check_agrees(path: Path, size_um: float, csv: Path) -> None:
    """Check that the pixel size ``samples.csv`` gives an image agrees with the one its file declares, if any.

    Args:
        path: the image file.
        size_um: its pixel side in µm from ``samples.csv``.
        csv: the ``samples.csv`` (named in the message).

    Raises:
        ConfigError: the file declares a pixel size (OME-XML or TIFF tags) more than
            :data:`PIXEL_SIZE_TOLERANCE` (relative to the file's) away from ``size_um``; one line naming the image,
            both values and their sources, and the fix.
    """
    try:
        declared, source = metadata_pixel_size_um(path)
    except ConfigError:  # non-square pixels in the file: the samples.csv value is the fix that message asks for
        return
    if declared is not None and abs(size_um - declared) > PIXEL_SIZE_TOLERANCE * declared:
        raise ConfigError(f"{path}: pixel size {size_um:g} µm in {csv} differs from {declared:g} µm in the file's "
                          f"{source}; correct one of them, or leave its pixel_size_um empty in {csv.name} to use the "
                          "file's")


def _match_rows(
    df: pd.DataFrame, files: Sequence[Path], names: dict[Path, str], folder: Path, csv: Path
) -> dict[Path, dict[str, Any]]:
    """Each image's row of ``samples.csv`` (by relative path with or without suffix, or by a unique stem)."""
    by_key: dict[str, list[Path]] = {}
    for p in files:
        rel = p.relative_to(folder).as_posix()
        for key in {rel, names[p], p.name, p.stem}:
            by_key.setdefault(key, []).append(p)
    out: dict[Path, dict[str, Any]] = {}
    missing, ambiguous = [], []
    for rec in df.to_dict(orient="records"):
        hits = sorted(set(by_key.get(rec["image"], [])))
        if not hits:
            missing.append(rec["image"])
        elif len(hits) > 1:
            ambiguous.append(rec["image"])
        elif hits[0] in out:
            raise ConfigError(f"{csv}: two rows describe {names[hits[0]]} ({rec['image']!r}); keep one row per image")
        else:
            out[hits[0]] = rec
    if missing:
        raise ConfigError(f"{csv}: names images not in {folder}: {missing[:5]}; fix the names (paths relative to the "
                          "folder, or file stems) or remove those rows")
    if ambiguous:
        raise ConfigError(f"{csv}: names {ambiguous[:5]} match several images; write their paths relative to "
                          f"{folder} instead")
    return out


def sections_table(sections: Sequence[Section]) -> pd.DataFrame:
    """The sections as a table (``sections.csv``): one row per image with its pixel size and where it came from."""
    return pd.DataFrame([s.to_row() for s in sections])


def require_pixel_sizes(sections: Sequence[Section]) -> None:
    """Check every section has a pixel size (before asking for µm).

    Raises:
        ConfigError: names the first image without one and the three ways to give it.
    """
    for s in sections:
        if s.pixel_size_um is None:
            raise ConfigError(f"{s.path}: no pixel size known; add its pixel_size_um to samples.csv, save it as a "
                              "TIFF with its resolution, or pass --pixel-size UM for all images")


__all__ = ["SAMPLES_CSV", "SECTION_SUFFIXES", "Section", "find_images", "metadata_pixel_size_um",
           "read_samples_csv", "read_sections", "require_pixel_sizes", "sections_table"]
