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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import CATALOGUE, GANGUE_DENSITY, IGNORE
from lumenkit.data.imageio import read_image, read_mask, write_text
from lumenkit.data.sections import Section, read_sections
from lumenkit.errors import ConfigError
from lumenkit.mineralogy.survey import Survey, survey_masks

ANALYSIS = "analysis"
"""Subfolder of the report folder holding the predicted masks and the tables of the whole set of sections."""

INPUTS = "inputs.json"
"""What an analysis was made from (model, images, pixel sizes, options); a different record means analyse again."""

OVERVIEW_SIDE = 2048
"""Longest side in px of a mosaic's overview in the gallery (:meth:`SectionsView.images`)."""


def _mask(path: Path) -> np.ndarray | Path:
    """A predicted mask: a PNG read whole, a mosaic's tiled TIFF left on disk (measured band by band)."""
    return path if path.suffix.lower() == ".tif" else read_mask(path)


def _fingerprint_file(path: Path) -> list[Any]:
    """A file by its resolved path, size and modification time (a missing file: its name)."""
    if not path.is_file():
        return [str(path)]
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _records(models: Sequence[Path], found: Sequence[Section], flat_field: str | Path | None,
             gangue_density: float) -> dict[str, Any]:
    """What the predictions depend on (model(s), image files, pixel sizes, flat field) and what the tables add."""
    prints = [_fingerprint_file(m) for m in models]
    return {
        "prediction": {"model": prints[0] if len(prints) == 1 else prints,
                       "images": _digest([[s.name, *_fingerprint_file(s.path), s.pixel_size_um] for s in found]),
                       "flat_field": _fingerprint_file(Path(flat_field)) if flat_field else None},
        "tables": {"groups": _digest([[s.name, s.sample, s.deposit, s.pixel_size_source, s.extra] for s in found]),
                   "gangue_density": gangue_density},
    }


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, OSError):
        return {}


def ensure_analysis(
    sections: str | Path,
    model: str | Path | Sequence[str | Path],
    run_dir: str | Path,
    samples_csv: str | Path | None = None,
    pixel_size_um: float | None = None,
    gangue_density: float = GANGUE_DENSITY,
    flat_field: str | Path | None = None,
    progress: bool = False,
    mosaic_pixels: int | None = None,
) -> Path:
    """Identify and measure the sections with ``model`` into ``RUN/analysis/``, unless that is already done.

    ``RUN/analysis/inputs.json`` records what the predictions depend on (each model file, each image file and pixel
    size, the flat-field reference) and what the tables add (samples, deposits, gangue density), which mask belongs
    to which section, and the images that could not be predicted. The images are predicted again only when the
    first part changes; when only the second does, the tables are recomputed from the masks. The record is written
    last, so an interrupted analysis is redone whole.

    Args:
        sections: folder of section images (any depth) with an optional ``samples.csv``.
        model: checkpoint or ONNX export; or a list of them, an ensemble whose probabilities are averaged
            (:class:`lumenkit.inference.Ensemble`; any member's file changing means a new analysis).
        run_dir: the report folder.
        samples_csv: the samples table (default ``SECTIONS/samples.csv`` when present).
        pixel_size_um: µm per pixel of images that neither ``samples.csv`` nor their metadata describe.
        gangue_density: density of background for weight %, g/cm³.
        flat_field: image file of a reference frame (a blank, evenly reflecting standard under the same lamp and
            camera settings): every image is flat-field and white-balance corrected before identification.
        progress: show a progress bar while predicting.
        mosaic_pixels: TIFFs of at least this many pixels are whole-section mosaics, predicted and measured
            streamed (default :data:`lumenkit.data.mosaic.MOSAIC_PIXELS`); their masks stay on disk as tiled TIFF.

    Returns:
        The analysis folder.

    Raises:
        DatasetNotFoundError, ConfigError: see :func:`lumenkit.mineralogy.survey.analyse_sections` (also when no
            image could be predicted); a missing model file (the message says how to get one).
        CheckpointError: members that cannot be averaged (other classes, scale or pixel size).
    """
    from lumenkit.data.mosaic import is_mosaic
    from lumenkit.mineralogy.survey import analyse_sections, write_survey

    models = [Path(m) for m in ([model] if isinstance(model, (str, Path)) else model)]
    if not models:
        raise ConfigError("no model given; give a checkpoint (model.pt) or train one first (notebook 03, or "
                          "lumenkit train)")
    for m in models:
        if not m.is_file():
            raise ConfigError(f"{m}: model not found; give a checkpoint (model.pt) or train one first "
                              "(notebook 03, or lumenkit train)")
    found = read_sections(sections, samples_csv, pixel_size_um)
    out = Path(run_dir) / ANALYSIS
    record = json.loads(json.dumps(_records(models, found, flat_field, gangue_density), default=str))
    done = out / INPUTS
    old = _read_record(done)
    if old.get("prediction") == record["prediction"] and (out / "summary.json").is_file():
        if old.get("tables") == record["tables"]:
            return out
        masks = {s.name: _mask(out / old["masks"][s.name]) for s in found if s.name in old.get("masks", {})}
        codes = json.loads((out / "summary.json").read_text()).get("codes")  # the model's classes, as before
        write_survey(survey_masks(masks, [s for s in found if s.name in masks], codes=codes,
                                  gangue_density=gangue_density), out)
        write_text(done, json.dumps({**old, "tables": record["tables"]}, indent=1) + "\n")
        return out
    done.unlink(missing_ok=True)
    failed: dict[str, str] = {}
    by_path = {str(s.path): s.name for s in found}

    def note(path: str, message: str) -> None:
        failed[by_path.get(path, path)] = message

    analyse_sections(models[0] if len(models) == 1 else models, sections, out, samples_csv=samples_csv,
                     pixel_size_um=pixel_size_um, gangue_density=gangue_density, flatfield=flat_field or None,
                     progress=progress, on_error=note, mosaic_pixels=mosaic_pixels)
    comp = pd.read_csv(out / "masks" / "composition.csv")
    names = {str(s.path.resolve()): s.name for s in found}
    masks = {names[str(Path(p).resolve())]: f"masks/{n}.{'tif' if is_mosaic(p, mosaic_pixels) else 'png'}"
             for p, n in zip(comp["path"], comp["image"], strict=True) if str(Path(p).resolve()) in names}
    write_text(done, json.dumps({**record, "masks": masks, "failed": failed}, indent=1) + "\n")
    return out


@dataclass
class SectionsView:
    """One page of the sections report: the sections of a group and their survey.

    Attributes:
        title: what the page covers (``"all sections"``, ``"deposit X"``, ``"sample Y"``).
        sections: the group's sections that were predicted, in file order.
        survey: the survey of their predicted masks.
        truth: the survey of their true masks, when a folder of them was given (else ``None``).
        truth_pred: the survey of the predicted masks over the true masks' labelled pixels only (what
            :func:`modal_pred_vs_true` compares), when true masks were given.
        masks: section name → predicted mask file.
        all_sections: every section of the analysis (for the links to the other pages).
        failed: section name → why it could not be predicted (left out of every table).
        flat_field: the reference frame the images were corrected with, if any.
    """

    title: str
    sections: list[Section]
    survey: Survey
    truth: Survey | None
    masks: dict[str, Path]
    all_sections: list[Section]
    failed: dict[str, str] = field(default_factory=dict)
    truth_pred: Survey | None = None
    flat_field: str | Path | None = None

    @property
    def unit(self) -> str:
        """``"µm"`` when every image of the group has a pixel size, else ``"px"``."""
        return self.survey.unit

    def images(self, limit: int | None = None) -> list[tuple[Section, np.ndarray, np.ndarray]]:
        """``(section, image as the model saw it, predicted mask)`` of the group's first ``limit`` sections.

        The image is flat-field corrected when the analysis was. A mosaic comes as its overview (at most
        :data:`OVERVIEW_SIDE` px a side, read from the files' pyramids) with its section's pixel size scaled to
        match, so scale bars stay true; :meth:`mosaics` and :class:`lumenkit.workbook.widgets.MosaicViewer`
        show it at full resolution.
        """
        from dataclasses import replace

        from lumenkit.data.flatfield import as_flatfield
        from lumenkit.data.mosaic import mosaic_overview

        ff = as_flatfield(self.flat_field) if self.flat_field else None
        out = []
        for s in self.sections[:limit]:
            if self.masks[s.name].suffix.lower() == ".tif":
                picture, codes, step = mosaic_overview(s.path, self.masks[s.name], OVERVIEW_SIDE)
                px = s.pixel_size_um * step if s.pixel_size_um else None
                out.append((replace(s, pixel_size_um=px), picture, codes))
                continue
            mask = read_mask(self.masks[s.name])
            image = read_image(s.path)  # predicted masks are at the file's own resolution
            out.append((s, ff(image) if ff is not None else image, mask))
        return out

    def mosaics(self) -> list[tuple[Section, Path]]:
        """``(section, mask file)`` of the group's whole-section mosaics (predicted streamed, masks as tiled TIFF)."""
        return [(s, self.masks[s.name]) for s in self.sections if self.masks[s.name].suffix.lower() == ".tif"]


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
    flat_field: str | Path | None = None,
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
        flat_field: the reference frame given to :func:`ensure_analysis` (the gallery shows corrected images).

    Raises:
        ConfigError: no predicted section of that deposit or sample (the message lists them), no analysis in
            ``run_dir`` (run :func:`ensure_analysis` first), or a true mask missing or of another size.
    """
    everything = read_sections(sections, samples_csv, pixel_size_um)
    group = [s for s in everything if deposit in ("all", s.deposit) and sample in ("all", s.sample)]
    if not group:
        deposits, samples = sorted({s.deposit for s in everything}), sorted({s.sample for s in everything})
        raise ConfigError(f"no section of deposit {deposit!r} and sample {sample!r}; deposits: {deposits}, "
                          f"samples: {samples}")
    analysis = Path(run_dir) / ANALYSIS
    record = _read_record(analysis / INPUTS)
    if "masks" not in record:
        raise ConfigError(f"{analysis}: no finished analysis there; run ensure_analysis (or the report) first")
    failed = {s.name: record.get("failed", {}).get(s.name, "not predicted") for s in group
              if s.name not in record["masks"]}
    group = [s for s in group if s.name in record["masks"]]
    if not group:
        raise ConfigError(f"no image of deposit {deposit!r} and sample {sample!r} could be predicted: "
                          f"{next(iter(failed.values()))}")
    masks = {s.name: analysis / record["masks"][s.name] for s in group}
    title = "all sections" if deposit == sample == "all" else (f"sample {sample}" if sample != "all"
                                                                 else f"deposit {deposit}")
    predicted = {n: _mask(p) for n, p in masks.items()}
    pred = survey_masks(predicted, group, gangue_density=gangue_density, n_boot=n_boot)
    true = on_truth = None
    if truth:
        true_masks = {}
        streamed = [n for n, m in predicted.items() if not isinstance(m, np.ndarray)]
        if streamed:
            raise ConfigError(f"{streamed[0]}: true masks of whole-section mosaics are not compared yet; leave truth "
                              "empty, or compare the sections that are ordinary images")
        for s in group:
            path = Path(truth) / f"{s.name}.png"
            if not path.is_file():
                raise ConfigError(f"{path}: true mask of {s.path} not found; give the folder of true masks at the "
                                  "images' relative paths, or leave truth empty")
            true_masks[s.name] = read_mask(path)
            if true_masks[s.name].shape != predicted[s.name].shape:
                raise ConfigError(f"{path}: mask is {true_masks[s.name].shape[::-1]} px, its image "
                                  f"{predicted[s.name].shape[::-1]} px; give the mask at the image's size")
        true = survey_masks(true_masks, group, gangue_density=gangue_density, n_boot=n_boot)
        # the prediction over the pixels the truth labels (255 = unlabelled in the truth is left out of both)
        masked = {n: np.where(true_masks[n] == IGNORE, np.uint8(IGNORE), m) for n, m in predicted.items()}
        on_truth = survey_masks(masked, group, gangue_density=gangue_density, n_boot=n_boot)
    return SectionsView(title, group, pred, true, masks, everything, failed, on_truth, flat_field)


def modal_pred_vs_true(view: SectionsView, by: str = "sample") -> pd.DataFrame:
    """Predicted against true pooled modal mineralogy per ``by`` (``"sample"`` or ``"deposit"``) × mineral.

    Both are measured over the pixels the true masks label (unlabelled, 255, left out of both). Columns:
    ``true_area_pct``, ``pred_area_pct``, ``area_error_pp`` (predicted − true, percentage points), the same for
    weight %, and ``true_in_image_interval``: whether the true value lies in the predicted 95 % bootstrap interval
    over images (the spread between images, not the model's uncertainty).

    Raises:
        ValueError: the view has no true masks.
    """
    if view.truth is None or view.truth_pred is None:
        raise ValueError("no true masks in this view; give a truth folder")
    table = view.truth_pred.by_sample if by == "sample" else view.truth_pred.by_deposit
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
        "true_in_image_interval": (tt["area_pct"] >= t["area_pct_low"]) & (tt["area_pct"] <= t["area_pct_high"]),
    })
    return out


def contact_matrices(survey: Survey) -> dict[str, pd.DataFrame]:
    """Deposit → square matrix of shared boundary (px) between minerals, from the survey's long ``contacts``."""
    out = {}
    for dep, g in survey.contacts.groupby("deposit", sort=True):
        column = "boundary_um" if "boundary_um" in g else "boundary_px"
        m = g.pivot_table(index="mineral", columns="other", values=column, aggfunc="sum", sort=False)
        order = list(dict.fromkeys(g["mineral"]))
        out[str(dep)] = m.reindex(index=order, columns=order).fillna(0)
    return out


def interval_table(table: pd.DataFrame, by: str, value: str = "area_pct", columns: str = "mineral") -> pd.DataFrame:
    """A pooled table (``Survey.by_sample``/``by_deposit``/``assay_by_*``) as cells ``"12.30 (10.10–14.60)"``.

    Args:
        table: pooled table with ``VALUE``, ``VALUE_low`` and ``VALUE_high`` (the 95 % bootstrap interval).
        by: the group column.
        value: ``"area_pct"``, ``"weight_pct"`` or, for the assay tables, ``"grade_pct"``.
        columns: what the table's columns are: ``"mineral"``, or ``"element"`` for the assay tables.
    """
    cells = table.assign(cell=[f"{v:.2f} ({lo:.2f}–{hi:.2f})" for v, lo, hi in
                               zip(table[value], table[f"{value}_low"], table[f"{value}_high"], strict=True)])
    order = list(dict.fromkeys(table[columns]))
    return cells.pivot(index=by, columns=columns, values="cell").reindex(columns=order).fillna("")


def write_view(view: SectionsView, folder: str | Path) -> list[Path]:
    """Write the page's tables as CSV into ``folder``, replacing what an earlier run wrote there as a whole.

    The predicted tables of :func:`~lumenkit.mineralogy.survey.write_survey`; with true masks also ``truth_*.csv``
    and ``modal_pred_vs_true.csv`` (per sample).

    Raises:
        OutputPathError: ``folder`` cannot be written (the message names it), checked before anything is written;
            or a write failed on the way (a full disk), when the tables an earlier run wrote there are kept.
    """
    import shutil

    from lumenkit.data.imageio import check_writable
    from lumenkit.errors import OutputPathError
    from lumenkit.mineralogy.survey import write_survey

    folder = check_writable(folder, folder=True, beside=True, option="folder")
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    existed = folder.is_dir()
    try:
        write_survey(view.survey, tmp)
        if view.truth is not None:
            for name, df in view.truth.tables().items():
                write_text(tmp / f"truth_{name}.csv", df.to_csv(index=False, float_format="%.6g"))
            write_text(tmp / "modal_pred_vs_true.csv", modal_pred_vs_true(view, "sample").to_csv())
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
        # e.g. the disk filled up: say the user's folder (not the temporary one) and this function's own fix
        reason = (e.reason if isinstance(e, OutputPathError) else e.strerror) or "a write failed"
        kept = f"; the tables {folder} held are kept" if existed else ""
        raise OutputPathError(f"{folder}: cannot write there ({reason}); free space on its disk or choose a folder "
                              f"you can write to{kept}") from None
    old = folder.parent / f".{folder.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)  # the page's files of an earlier run go as a whole (no stale truth_* beside new ones)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(folder.iterdir())
