"""The sections report: a mineralogist's unlabelled sections, identified once, reported overall, per deposit and sample.

Notebook 06 calls :func:`ensure_analysis` (the ``lumenkit analyse`` chain into ``RUN/analysis/``, skipped when the
same model has already analysed the same sections) and then :func:`sections_view` for the page it renders: all
sections, one deposit, or one sample. Each page measures the predicted masks of its own images again
(:func:`lumenkit.mineralogy.survey.survey_masks`), so its intervals are over its own images; with a folder of true
masks it also measures those, for predicted against true.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import CATALOGUE, GANGUE_DENSITY
from lumenkit.data.imageio import read_image, read_mask, write_text
from lumenkit.data.sections import Section, read_sections
from lumenkit.errors import ConfigError
from lumenkit.mineralogy.survey import Survey, survey_masks

ANALYSIS = "analysis"
"""Subfolder of the report folder holding the predicted masks and the tables of the whole set of sections."""

INPUTS = "inputs.json"
"""What an analysis was made from (model, images, pixel sizes, options); a different record means analyse again."""


def _fingerprint_file(path: Path) -> list[Any]:
    """A file by its resolved path, size and modification time (the reference frame may be missing: then its name)."""
    if not path.is_file():
        return [str(path)]
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _fingerprint(model: Path, sections: Sequence[Section], options: dict[str, Any]) -> dict[str, Any]:
    """The record of what an analysis depends on: the model file and each image file, by size and time."""
    images = [[s.name, *_fingerprint_file(s.path), s.pixel_size_um] for s in sections]
    return {"model": _fingerprint_file(model), "images": hashlib.sha256(json.dumps(images).encode()).hexdigest(),
            "options": options}


def ensure_analysis(
    sections: str | Path,
    model: str | Path,
    run_dir: str | Path,
    samples_csv: str | Path | None = None,
    pixel_size_um: float | None = None,
    gangue_density: float = GANGUE_DENSITY,
    flat_field: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Identify and measure the sections with ``model`` into ``RUN/analysis/``, unless that is already done.

    The analysis (predicted masks, overlays, every table of ``lumenkit analyse``) is redone only when the model
    file, an image file, a pixel size or an option differs from the recorded ``RUN/analysis/inputs.json``; the
    record is written last, so an interrupted analysis is redone whole.

    Args:
        sections: folder of section images (any depth) with an optional ``samples.csv``.
        model: checkpoint or ONNX export.
        run_dir: the report folder.
        samples_csv: the samples table (default ``SECTIONS/samples.csv`` when present).
        pixel_size_um: µm per pixel of images that neither ``samples.csv`` nor their metadata describe.
        gangue_density: density of background for weight %, g/cm³.
        flat_field: image file of a reference frame (a blank, evenly reflecting standard under the same lamp and
            camera settings): every image is flat-field and white-balance corrected before identification.
        progress: show a progress bar while predicting.

    Returns:
        The analysis folder.

    Raises:
        DatasetNotFoundError, ConfigError: see :func:`lumenkit.mineralogy.survey.analyse_sections`; also a
            missing model file (the message says how to get one).
    """
    from lumenkit.mineralogy.survey import analyse_sections

    model = Path(model)
    if not model.is_file():
        raise ConfigError(f"{model}: model not found; give a checkpoint (model.pt) or train one first "
                          "(notebook 03, or lumenkit train)")
    found = read_sections(sections, samples_csv, pixel_size_um)
    out = Path(run_dir) / ANALYSIS
    options = {"gangue_density": gangue_density,
               "flat_field": _fingerprint_file(Path(flat_field)) if flat_field else None}
    record = _fingerprint(model, found, options)
    done = out / INPUTS
    if done.is_file() and (out / "summary.json").is_file():
        try:
            if json.loads(done.read_text()) == json.loads(json.dumps(record)):
                return out
        except json.JSONDecodeError:
            pass
    done.unlink(missing_ok=True)
    analyse_sections(model, sections, out, samples_csv=samples_csv, pixel_size_um=pixel_size_um,
                     gangue_density=gangue_density, flatfield=flat_field or None, progress=progress)
    write_text(done, json.dumps(record, indent=1) + "\n")
    return out


@dataclass
class SectionsView:
    """One page of the sections report: the sections of a group and their survey.

    Attributes:
        title: what the page covers (``"all sections"``, ``"deposit X"``, ``"sample Y"``).
        sections: the group's sections, in file order.
        survey: the survey of their predicted masks.
        truth: the survey of their true masks, when a folder of them was given (else ``None``).
        masks: section name → predicted mask file.
        all_sections: every section of the analysis (for the links to the other pages).
    """

    title: str
    sections: list[Section]
    survey: Survey
    truth: Survey | None
    masks: dict[str, Path]
    all_sections: list[Section]

    @property
    def unit(self) -> str:
        """``"µm"`` when every image of the group has a pixel size, else ``"px"``."""
        return self.survey.unit

    def images(self, limit: int | None = None) -> list[tuple[Section, np.ndarray, np.ndarray]]:
        """``(section, image, predicted mask)`` of the group's first ``limit`` sections (all by default)."""
        out = []
        for s in self.sections[:limit]:
            mask = read_mask(self.masks[s.name])
            out.append((s, read_image(s.path), mask))  # predicted masks are at the file's own resolution
        return out


def _predicted_masks(analysis: Path) -> dict[str, Path]:
    """Image file (resolved) → predicted mask, from the analysis's ``masks/composition.csv``."""
    comp = analysis / "masks" / "composition.csv"
    if not comp.is_file():
        raise ConfigError(f"{comp}: not found; run the analysis first (ensure_analysis or lumenkit analyse)")
    table = pd.read_csv(comp)
    return {str(Path(p).resolve()): analysis / "masks" / f"{n}.png"
            for p, n in zip(table["path"], table["image"], strict=True)}


def sections_view(
    sections: str | Path,
    run_dir: str | Path,
    deposit: str = "all",
    sample: str = "all",
    truth: str | Path | None = None,
    samples_csv: str | Path | None = None,
    pixel_size_um: float | None = None,
    gangue_density: float = GANGUE_DENSITY,
    n_boot: int = 1000,
) -> SectionsView:
    """The page of one group of analysed sections: all of them, one deposit, or one sample.

    Args:
        sections: the folder of sections (as given to :func:`ensure_analysis`).
        run_dir: the report folder holding ``analysis/``.
        deposit: a deposit of ``samples.csv``, or ``"all"``.
        sample: a sample of ``samples.csv``, or ``"all"``.
        truth: optional folder of true masks ``NAME.png`` (LumenStone codes) at the images' relative paths.
        samples_csv: the samples table, as given to :func:`ensure_analysis`.
        pixel_size_um: µm per pixel of undescribed images, as given to :func:`ensure_analysis`.
        gangue_density: density of background for weight %, g/cm³.
        n_boot: bootstrap resamples over images.

    Raises:
        ConfigError: no section of that deposit or sample (the message lists them), the analysis is missing, or
            a true mask is missing or of another size.
    """
    everything = read_sections(sections, samples_csv, pixel_size_um)
    group = [s for s in everything if deposit in ("all", s.deposit) and sample in ("all", s.sample)]
    if not group:
        deposits, samples = sorted({s.deposit for s in everything}), sorted({s.sample for s in everything})
        raise ConfigError(f"no section of deposit {deposit!r} and sample {sample!r}; deposits: {deposits}, "
                          f"samples: {samples}")
    predicted = _predicted_masks(Path(run_dir) / ANALYSIS)
    masks = {}
    for s in group:
        key = str(s.path.resolve())
        if key not in predicted:
            raise ConfigError(f"{s.path}: not in the analysis (it could not be predicted, or the analysis is of other "
                              "images); rerun the report")
        masks[s.name] = predicted[key]
    title = "all sections" if deposit == sample == "all" else (f"sample {sample}" if sample != "all"
                                                                 else f"deposit {deposit}")
    pred = survey_masks({n: read_mask(p) for n, p in masks.items()}, group, gangue_density=gangue_density,
                        n_boot=n_boot)
    true = None
    if truth:
        true_masks = {}
        for s in group:
            path = Path(truth) / f"{s.name}.png"
            if not path.is_file():
                raise ConfigError(f"{path}: true mask of {s.path} not found; give the folder of true masks at the "
                                  "images' relative paths, or leave truth empty")
            true_masks[s.name] = read_mask(path)
            shape = read_mask(masks[s.name]).shape
            if true_masks[s.name].shape != shape:
                raise ConfigError(f"{path}: mask is {true_masks[s.name].shape[::-1]} px, its image "
                                  f"{shape[::-1]} px; give the mask at the image's size")
        true = survey_masks(true_masks, group, gangue_density=gangue_density, n_boot=n_boot)
    return SectionsView(title, group, pred, true, masks, everything)


def modal_pred_vs_true(view: SectionsView, by: str = "sample") -> pd.DataFrame:
    """Predicted against true pooled modal mineralogy per ``by`` (``"sample"`` or ``"deposit"``) × mineral.

    Columns: ``true_area_pct``, ``pred_area_pct``, ``error_pp`` (predicted − true, percentage points), the same for
    weight %, and whether the true value lies in the predicted 95 % interval over images.

    Raises:
        ValueError: the view has no true masks.
    """
    if view.truth is None:
        raise ValueError("no true masks in this view; give a truth folder")
    table = view.survey.by_sample if by == "sample" else view.survey.by_deposit
    truth = view.truth.by_sample if by == "sample" else view.truth.by_deposit
    keys = [by, "mineral"]
    t, tt = table.set_index(keys), truth.set_index(keys)
    both = t.index.union(tt.index, sort=False)  # a mineral only one of them found counts 0 % in the other
    t, tt = t.reindex(both), tt.reindex(both)
    for frame in (t, tt):
        frame[["area_pct", "weight_pct", "area_pct_low", "area_pct_high"]] = frame[
            ["area_pct", "weight_pct", "area_pct_low", "area_pct_high"]].fillna(0.0)
    order = {info.label: i for i, info in enumerate(CATALOGUE.values())}
    groups = list(dict.fromkeys(both.get_level_values(by)))
    both = pd.MultiIndex.from_tuples(sorted(both, key=lambda k: (groups.index(k[0]), order.get(k[1], len(order)))),
                                     names=keys)
    t, tt = t.reindex(both), tt.reindex(both)
    out = pd.DataFrame({
        "true_area_pct": tt["area_pct"], "pred_area_pct": t["area_pct"],
        "area_error_pp": t["area_pct"] - tt["area_pct"],
        "true_weight_pct": tt["weight_pct"], "pred_weight_pct": t["weight_pct"],
        "weight_error_pp": t["weight_pct"] - tt["weight_pct"],
        "true_in_interval": (tt["area_pct"] >= t["area_pct_low"]) & (tt["area_pct"] <= t["area_pct_high"]),
    })
    return out


def contact_matrices(survey: Survey) -> dict[str, pd.DataFrame]:
    """Deposit → square matrix of shared boundary (px) between minerals, from the survey's long ``contacts``."""
    out = {}
    for dep, g in survey.contacts.groupby("deposit", sort=True):
        m = g.pivot_table(index="mineral", columns="other", values="boundary_px", aggfunc="sum", sort=False)
        order = list(dict.fromkeys(g["mineral"]))
        out[str(dep)] = m.reindex(index=order, columns=order).fillna(0)
    return out


def interval_table(table: pd.DataFrame, by: str, value: str = "area_pct") -> pd.DataFrame:
    """A pooled table (``Survey.by_sample``/``by_deposit``) as group × mineral cells ``"12.30 (10.10–14.60)"``.

    Args:
        table: pooled modal table with ``VALUE``, ``VALUE_low`` and ``VALUE_high``.
        by: the group column.
        value: ``"area_pct"`` or ``"weight_pct"``.
    """
    cells = table.assign(cell=[f"{v:.2f} ({lo:.2f}–{hi:.2f})" for v, lo, hi in
                               zip(table[value], table[f"{value}_low"], table[f"{value}_high"], strict=True)])
    order = list(dict.fromkeys(table["mineral"]))
    return cells.pivot(index=by, columns="mineral", values="cell").reindex(columns=order).fillna("")


def write_view(view: SectionsView, folder: str | Path) -> list[Path]:
    """Write the page's tables (predicted, and ``truth_*`` when true masks were given) as CSV into ``folder``.

    Raises:
        ConfigError: ``folder`` cannot be written (the message names it).
    """
    from lumenkit.mineralogy.survey import write_survey

    paths = write_survey(view.survey, folder)
    if view.truth is not None:
        for name, df in view.truth.tables().items():
            path = Path(folder) / f"truth_{name}.csv"
            write_text(path, df.to_csv(index=False, float_format="%.6g"))
            paths.append(path)
    return paths
