"""Identify and measure a mineralogist's sections: masks to tables per image, per sample and per deposit, in µm.

:func:`survey_masks` turns masks (true or predicted) and what is known about their sections (sample, deposit,
pixel size; :class:`lumenkit.data.sections.Section`) into the tables automated mineralogy systems report: modal
mineralogy in area % and weight %, a calculated assay, grains in µm and their size distribution, and mineral
associations; pooled per sample and per deposit with bootstrap intervals over images. :func:`write_survey` writes
every table as a tidy CSV and a ``summary.json``; :func:`analyse_sections` runs the whole chain from a folder of
images and a model (``lumenkit analyse``).

Areas are pooled in µm² when every image's pixel size is known (sections imaged at different magnifications then
count by their real area), in pixels otherwise.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import CATALOGUE, GANGUE_DENSITY, IGNORE
from lumenkit.data.sections import Section
from lumenkit.mineralogy.analysis import (
    contact_matrix,
    free_boundary_by_size,
    grains,
    locking,
    modal_composition,
    pooled_shares,
    size_distribution,
)
from lumenkit.mineralogy.assay import assay_table, element_deportment, weight_percent
from lumenkit.mineralogy.stream import pixel_counts, stream_mineralogy

if TYPE_CHECKING:
    from lumenkit.data.flatfield import FlatField
    from lumenkit.inference.ensemble import Ensemble
    from lumenkit.inference.onnx import OnnxModel
    from lumenkit.inference.refine import Refine
    from lumenkit.inference.tiling import Tiling
    from lumenkit.models.checkpoint import Checkpoint


@dataclass
class Survey:
    """The tables of a survey of sections (each written as ``NAME.csv`` by :func:`write_survey`).

    Attributes:
        sections: one row per image: sample, deposit, pixel size and its source, size, free columns.
        modal: one row per image × mineral: pixels, area (µm² or px²), area %, weight %.
        assay: one row per image × element: grade in weight %.
        grains: one row per grain: image, sample, deposit, mineral and its measurements (µm where known).
        by_sample, by_deposit: pooled modal mineralogy per group × mineral with bootstrap intervals over images
            (area % and weight %), and the number of images.
        overall: the same pooled over every image (group column ``set`` = ``"all"``).
        size_by_sample: grain size distribution per sample × mineral × size class (µm where known), with
            cumulative passing % by number and by area.
        free_boundary_by_size: per deposit × mineral × size class, each mineral's free (against background)
            boundary fraction.
        assay_by_sample, assay_by_deposit: the calculated assay of each group's pooled weight % (group × element:
            ``images``, ``grade_pct`` and its bootstrap interval over images ``grade_pct_low``/``grade_pct_high``,
            from the same resamples as the modal mineralogy's intervals).
        contacts: shared boundary length between minerals per deposit (long form: deposit, mineral, other,
            ``boundary_um`` when every pixel size is known, else ``boundary_px``).
        locking: per deposit × mineral: its boundary length (``boundary_um``, else ``boundary_px``), the share
            of it free (against BG, ``free_fraction``) and against other minerals (``locked_fraction``).
        unit: ``"µm"`` when every pixel size is known, else ``"px"``.
    """

    sections: pd.DataFrame
    modal: pd.DataFrame
    assay: pd.DataFrame
    grains: pd.DataFrame
    by_sample: pd.DataFrame
    by_deposit: pd.DataFrame
    contacts: pd.DataFrame
    locking: pd.DataFrame
    overall: pd.DataFrame = field(default_factory=pd.DataFrame)
    assay_by_sample: pd.DataFrame = field(default_factory=pd.DataFrame)
    assay_by_deposit: pd.DataFrame = field(default_factory=pd.DataFrame)
    size_by_sample: pd.DataFrame = field(default_factory=pd.DataFrame)
    free_boundary_by_size: pd.DataFrame = field(default_factory=pd.DataFrame)
    unit: str = "px"
    info: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table by its file stem."""
        return {"sections": self.sections, "modal": self.modal, "assay": self.assay, "grains": self.grains,
                "modal_by_sample": self.by_sample, "modal_by_deposit": self.by_deposit, "modal_overall": self.overall,
                "assay_by_sample": self.assay_by_sample, "assay_by_deposit": self.assay_by_deposit,
                "contacts": self.contacts, "locking": self.locking, "size_by_sample": self.size_by_sample,
                "free_boundary_by_size": self.free_boundary_by_size}


def _resampled_groups(
    modal: pd.DataFrame, by: str, n_boot: int, seed: int
) -> Iterator[tuple[Any, pd.DataFrame, pd.DataFrame, np.ndarray]]:
    """Each group's ``(name, area, mass, pick)``: image × mineral tables and ``(n_boot, images)`` resampled indices.

    The resamples of images come from one generator seeded with ``seed`` and drawn group by group in sorted order,
    so every table pooled from this helper (modal mineralogy, assay) uses the same resamples for the same group.
    """
    rng = np.random.default_rng(seed)
    for group, g in modal.groupby(by, sort=True):
        area = g.pivot_table(index="image", columns="mineral", values="area", aggfunc="sum", sort=False)
        mass = g.pivot_table(index="image", columns="mineral", values="mass", aggfunc="sum", sort=False)
        mass = mass.reindex(index=area.index, columns=area.columns)
        yield group, area, mass, rng.integers(0, len(area), size=(n_boot, len(area)))


def _pooled(modal: pd.DataFrame, by: str, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """Area and weight % pooled over each group's images, with percentile bootstrap intervals over images."""
    rows = []
    for group, area, mass, pick in _resampled_groups(modal, by, n_boot, seed):
        a, m = area.to_numpy(np.float64), mass.to_numpy(np.float64)
        stats = {"area_pct": pooled_shares(a, pick, ci), "weight_pct": pooled_shares(m, pick, ci)}
        for j, mineral in enumerate(area.columns):
            rows.append({by: group, "mineral": mineral, "images": len(a),
                         "area_pct": stats["area_pct"][0][j], "area_pct_low": stats["area_pct"][1][j],
                         "area_pct_high": stats["area_pct"][2][j], "weight_pct": stats["weight_pct"][0][j],
                         "weight_pct_low": stats["weight_pct"][1][j], "weight_pct_high": stats["weight_pct"][2][j]})
    return pd.DataFrame(rows)


ASSAY_COLUMNS = ("images", "grade_pct", "grade_pct_low", "grade_pct_high")
"""Columns of the pooled assay tables after the group and ``element`` columns."""


def _group_assay(modal: pd.DataFrame, by: str, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """The calculated assay of each group's pooled weight %, with percentile bootstrap intervals over images.

    Tidy: one row per group × element with ``images``, ``grade_pct`` (weight % of the element in the pooled
    section) and ``grade_pct_low``/``grade_pct_high``: the interval of the grade of the same resamples of images
    (same ``seed`` and ``n_boot``) as the pooled modal mineralogy of :func:`_pooled`.
    """
    frames = []
    for group, _, mass, pick in _resampled_groups(modal, by, n_boot, seed):
        m = mass.to_numpy(np.float64)
        boot = m[pick].sum(1)
        boot_w = 100 * boot / np.maximum(boot.sum(1, keepdims=True), 1e-300)  # (n_boot, minerals) weight %
        pooled_w = 100 * m.sum(0) / max(m.sum(), 1e-300)
        # grade is linear in weight %: grade_e = Σ_i w_i · f_ie, with f the minerals' element mass fractions
        fractions = element_deportment({mineral: 1.0 for mineral in mass.columns}).reindex(index=mass.columns)
        f = fractions.to_numpy(np.float64)
        grades, boot_grades = pooled_w @ f, boot_w @ f
        lo, hi = np.percentile(boot_grades, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
        frames.append(pd.DataFrame({by: group, "element": fractions.columns, "images": len(m), "grade_pct": grades,
                                    "grade_pct_low": lo, "grade_pct_high": hi}))
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=[by, "element", *ASSAY_COLUMNS]))


def survey_masks(
    masks: Mapping[str, np.ndarray],
    sections: Sequence[Section],
    codes: Sequence[int] | None = None,
    gangue_density: float = GANGUE_DENSITY,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> Survey:
    """The survey of ``masks`` (image name → LumenStone codes) of ``sections`` (matched by name).

    Args:
        masks: image name → ``(H, W)`` mask of LumenStone codes (255 = unlabelled, excluded), or the path of a
            mosaic's mask TIFF (or a :class:`lumenkit.data.mosaic.MosaicMask`), measured band by band with the same
            figures (:func:`lumenkit.mineralogy.stream.stream_mineralogy`).
        sections: what is known of each image (sample, deposit, pixel size); one per mask.
        codes: minerals to report (default: every code present in any mask).
        gangue_density: density of background (gangue, resin) in g/cm³ for weight %.
        n_boot: bootstrap resamples of images per sample and deposit (for modal mineralogy and assay alike).
        ci: interval coverage as a fraction, e.g. 0.95 (the 2.5th to 97.5th percentile of the resamples).
        seed: bootstrap seed.

    Raises:
        ConfigError: a mask without its section, or a bad density.
    """
    from lumenkit.errors import ConfigError

    by_name = {s.name: s for s in sections}
    missing = sorted(set(masks) - set(by_name))
    if missing:
        raise ConfigError(f"no section describes the masks {missing[:5]}; give one Section per mask")
    if codes is None:
        present = np.zeros(256, dtype=bool)
        for m in masks.values():
            present |= pixel_counts(m) > 0
        codes = [int(c) for c in np.flatnonzero(present) if c != IGNORE and c in CATALOGUE]
    codes = list(codes)
    physical = all(by_name[n].pixel_size_um for n in masks)
    unit = "µm" if physical else "px"
    modal_rows, grain_tabs, contact_tabs, shapes = [], [], {}, {}
    for name, mask in masks.items():
        s = by_name[name]
        px_area = (s.pixel_size_um**2) if physical else 1.0
        px = s.pixel_size_um if physical else None  # one unit for every grain
        if isinstance(mask, np.ndarray):
            mc = modal_composition(mask, codes).reset_index()
            g, cm, shapes[name] = grains(mask, px, codes), contact_matrix(mask, codes), mask.shape
        else:  # a mosaic's mask on disk: measured band by band
            st = stream_mineralogy(mask, codes, px)
            mc, g, cm, shapes[name] = st.modal().reset_index(), st.grains, st.contacts, st.shape
        w = weight_percent({int(c): float(n) for c, n in zip(mc["code"], mc["pixels"], strict=True)},
                           gangue_density=gangue_density)
        dens = dict(zip(w["code"], w["density"], strict=True))
        for _, r in mc.iterrows():
            area = float(r["pixels"]) * px_area
            modal_rows.append({"image": name, "sample": s.sample, "deposit": s.deposit, "mineral": r["mineral"],
                               "code": int(r["code"]), "pixels": int(r["pixels"]), "area": area,
                               "mass": area * dens.get(int(r["code"]), np.nan), "area_pct": float(r["area_pct"])})
        g.insert(0, "image", name)
        g.insert(1, "sample", s.sample)
        g.insert(2, "deposit", s.deposit)
        grain_tabs.append(g)
        # boundary lengths in µm when known: images at different magnifications then weigh by real length
        contact_tabs.setdefault(s.deposit, []).append(cm.astype(np.float64) * (s.pixel_size_um if physical else 1.0))
    modal = pd.DataFrame(modal_rows)
    totals = modal.groupby("image")["mass"].transform("sum")
    modal["weight_pct"] = 100 * modal["mass"] / totals
    assay = assay_table(
        {n: dict(zip(g["code"], g["pixels"], strict=True)) for n, g in modal.groupby("image", sort=False)},
        gangue_density=gangue_density,
    )
    dep = {d: functools.reduce(lambda a, b: a.add(b, fill_value=0), ms).fillna(0) for d, ms in contact_tabs.items()}
    contacts = pd.concat({d: c.stack().rename(f"boundary_{'um' if physical else 'px'}") for d, c in dep.items()},
                         names=["deposit", "mineral", "other"]).reset_index()
    lock = pd.concat({d: locking(c, unit="um" if physical else "px") for d, c in dep.items()},
                     names=["deposit", "mineral"]).reset_index()
    table = pd.DataFrame([s.to_row() for s in sections if s.name in masks])
    table["width"] = [shapes[n][1] for n in table["image"]]
    table["height"] = [shapes[n][0] for n in table["image"]]
    grain_table = pd.concat(grain_tabs, ignore_index=True) if grain_tabs else pd.DataFrame()
    by_sample, by_deposit = _pooled(modal, "sample", n_boot, ci, seed), _pooled(modal, "deposit", n_boot, ci, seed)
    overall = _pooled(modal.assign(set="all"), "set", n_boot, ci, seed)
    return Survey(
        sections=table, modal=modal.drop(columns=["mass"]).rename(columns={"area": f"area_{unit}2"}),
        assay=assay, grains=grain_table, by_sample=by_sample, by_deposit=by_deposit, overall=overall,
        contacts=contacts,
        locking=lock, assay_by_sample=_group_assay(modal, "sample", n_boot, ci, seed),
        assay_by_deposit=_group_assay(modal, "deposit", n_boot, ci, seed), unit=unit,
        size_by_sample=size_distribution(grain_table, by=("sample", "mineral")) if len(grain_table) else pd.DataFrame(),
        free_boundary_by_size=(free_boundary_by_size(grain_table, by=("deposit", "mineral")) if len(grain_table)
                               else pd.DataFrame()),
        info={"images": len(masks), "samples": int(table["sample"].nunique()),
              "deposits": int(table["deposit"].nunique()), "unit": unit, "gangue_density": gangue_density,
              "bootstrap": {"resamples": n_boot, "coverage": ci, "seed": seed}, "codes": codes},
    )


def write_survey(survey: Survey, out: str | Path) -> list[Path]:
    """Write every table as ``OUT/NAME.csv`` and ``OUT/summary.json`` (atomically, each); returns the paths.

    ``summary.json`` holds the counts, the unit, and per deposit and sample the pooled area % and weight % with
    their intervals, and the assay pooled over images (mean of the images' grades, weighted by their mass) with
    its intervals.

    Raises:
        OutputPathError: ``out`` exists and is not a folder, or cannot be written (the message names it).
    """
    from lumenkit.data.imageio import check_writable, write_text
    from lumenkit.errors import OutputPathError

    out = check_writable(out, folder=True)
    paths = []
    try:
        for name, df in survey.tables().items():
            paths.append(out / f"{name}.csv")
            write_text(paths[-1], df.to_csv(index=False, float_format="%.6g"))
        summary = {**survey.info,
                   "by_deposit": _records(survey.by_deposit), "by_sample": _records(survey.by_sample),
                   "assay_by_deposit": _records(survey.assay_by_deposit),
                   "assay_by_sample": _records(survey.assay_by_sample)}
        paths.append(out / "summary.json")
        write_text(paths[-1], json.dumps(summary, indent=1, ensure_ascii=False, default=_plain) + "\n")
    except PermissionError as e:
        raise OutputPathError(f"{out}: cannot write there ({e.strerror}); choose a writable --out",
                              reason=e.strerror or str(e)) from None
    return paths


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records", double_precision=6)) if len(df) else []


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def analyse_sections(
    model: Checkpoint | OnnxModel | Ensemble | str | Path | Sequence[str | Path],
    folder: str | Path,
    out: str | Path,
    samples_csv: str | Path | None = None,
    pixel_size_um: float | None = None,
    require_um: bool = False,
    scale: float | None = None,
    gangue_density: float = GANGUE_DENSITY,
    tiling: Tiling | None = None,
    device: str | None = None,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
    flatfield: FlatField | str | Path | None = None,
    mosaic_pixels: int | None = None,
    refine: Refine | None = None,
) -> Survey:
    """Identify the minerals of a folder of sections with ``model`` and measure them (``lumenkit analyse``).

    Writes ``OUT/masks/`` (predicted masks, overlays with legend and scale bar, confidence maps, composition.csv;
    see :func:`lumenkit.inference.predict_files`), each image resampled to the model's magnification when both
    pixel sizes are known, then every table of :func:`survey_masks` as CSV and ``OUT/summary.json``.

    Args:
        model: a checkpoint or ONNX model, or its path; an ensemble, or a list of paths (their probabilities
            averaged, :mod:`lumenkit.inference.ensemble`).
        folder: the sections (any depth), with an optional ``samples.csv`` (see :mod:`lumenkit.data.sections`).
        out: output folder.
        samples_csv: the samples table (default ``FOLDER/samples.csv`` when present).
        pixel_size_um: µm per pixel of images that neither ``samples.csv`` nor their metadata describe.
        require_um: refuse to start unless every image's pixel size is known (sizes in µm guaranteed).
        scale: scale of the images relative to LumenStone's native ones (1.0 = 3396×2547 px at ×100), the fallback
            when pixel sizes are unknown; given, it wins for every image (see
            :func:`lumenkit.inference.predict_files`, ``scale``); recorded per image in ``masks/composition.csv``.
        gangue_density: density of the background for weight %, g/cm³.
        tiling: windows and test-time augmentation (:class:`lumenkit.inference.Tiling`).
        device: where the model runs (``"auto"``, ``"cpu"``, ``"cuda"``).
        progress: show a progress bar.
        on_error: called with ``(path, message)`` for each image that could not be predicted (it is left out).
        flatfield: a :class:`lumenkit.data.FlatField` or the image file of a reference frame (a blank, evenly
            reflecting standard imaged with the same microscope settings): each image is corrected before
            prediction (see :func:`lumenkit.inference.predict_files`); ``summary.json`` names the reference
            (``flat_field``, ``null`` without one).
        mosaic_pixels: TIFFs of at least this many pixels are whole-section mosaics: predicted streamed into
            ``OUT/masks/NAME.tif`` and measured band by band (:mod:`lumenkit.mineralogy.stream`); default
            :data:`lumenkit.data.mosaic.MOSAIC_PIXELS`.
        refine: a :class:`lumenkit.inference.refine.Refine`: masks upsampled guided by each image's edges.

    Raises:
        DatasetNotFoundError, ConfigError: the folder, ``samples.csv`` or a pixel size (see
            :func:`lumenkit.data.sections.read_sections`), a ``scale`` that is not a positive number, or no image
            predicted at all.
        OutputPathError: an output path that cannot be written (checked before any prediction).
        BadImageError: an unusable flat-field reference (missing, unreadable, dark).
        CheckpointError: the model cannot be loaded.
    """
    from lumenkit.data.flatfield import as_flatfield
    from lumenkit.data.imageio import check_writable, read_mask
    from lumenkit.data.mosaic import is_mosaic
    from lumenkit.data.sections import read_sections, require_pixel_sizes
    from lumenkit.errors import ConfigError
    from lumenkit.inference.predict import load_model, predict_files

    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"{folder}: scale {scale!r} is not a positive relative scale; give e.g. 0.5 for images "
                          "with half as many pixels per mm as LumenStone's native ×100, or leave it out")
    sections = read_sections(folder, samples_csv, pixel_size_um)
    if require_um:
        require_pixel_sizes(sections)
    out = check_writable(out, folder=True)
    model = load_model(model) if isinstance(model, (str, Path, list, tuple)) else model
    ff = as_flatfield(flatfield) if flatfield is not None else None
    by_path = {str(s.path.resolve()): s for s in sections}
    rep = predict_files(model, [s.path for s in sections], out / "masks", scale=scale, tiling=tiling,
                        progress=progress, on_error=on_error, device=device,
                        pixel_size_um={s.path: (s.pixel_size_um, s.pixel_size_source) for s in sections}, flatfield=ff,
                        mosaic_pixels=mosaic_pixels, refine=refine)
    if not len(rep.composition):
        raise ConfigError(f"{folder}: no image could be predicted (see the messages above); fix or remove them")
    masks, known = {}, []
    for row in rep.composition.itertuples():
        s = by_path[str(Path(row.path).resolve())]
        png, tif = out / "masks" / f"{row.image}.png", out / "masks" / f"{row.image}.tif"
        masks[s.name] = tif if is_mosaic(s.path, mosaic_pixels) else read_mask(png)  # a mosaic's: streamed
        known.append(s)
    survey = survey_masks(masks, known, codes=list(model.class_map.codes), gangue_density=gangue_density)
    survey.info["flat_field"] = (ff.source or "(in memory)") if ff is not None else None
    paths = [p or "(in memory)" for p in getattr(model, "paths", None) or [str(getattr(model, "path", None) or "")]]
    survey.info["model"] = paths if len(paths) > 1 else paths[0]  # which model(s) identified the minerals
    write_survey(survey, out)
    return survey
