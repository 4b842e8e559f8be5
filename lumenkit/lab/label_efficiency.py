"""Label efficiency: what a model reaches from a share of labelled pixels, a starting point and a CPU budget.

The study behind the docs' label-efficiency table and figure (issue: adapt a model from a few strokes). Each cell
is one ordinary training run (``lumenkit train``, on a dataset whose training masks are strokes made by
:func:`lumenkit.lab.strokes.sparse_dataset` or on whole masks) scored by ``lumenkit evaluate --split val`` on whole
validation masks. :func:`label_efficiency` reads those run folders — ``config.yaml``, ``history.csv``,
``val.json`` — into one table, measuring the labelled share of the training pixels from the masks themselves and
printing beside each row the command that reproduces it (:func:`lumenkit.training.train_command`);
:func:`plot_label_efficiency` draws it. Nothing is typed by hand.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lumenkit.errors import ConfigError, DatasetNotFoundError


def labelled_share(data: str | Path, names: Sequence[str]) -> float:
    """Share of the pixels of images ``names`` (training split of dataset ``data``) that carry a label (not 255).

    Raises:
        DatasetNotFoundError: the dataset or a mask is missing.
    """
    from lumenkit.data.datasets import LumenStoneDataset

    counts = LumenStoneDataset(data, "train").class_counts()  # cached per mask file
    missing = sorted(set(names) - set(counts.index))
    if missing:
        raise DatasetNotFoundError(f"{data}: no training image {missing[0]!r}; the run was trained on another dataset")
    rows = counts.loc[list(names)]
    total = int(rows.to_numpy().sum())
    return (total - int(rows["ignore"].sum())) / max(total, 1)


def run_row(run: str | Path, paths: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One run folder as a row: start, labels, labelled share, budget, epochs, validation scores, command.

    Args:
        run: a folder written by ``lumenkit train`` with ``val.json`` from ``lumenkit evaluate --split val``.
        paths: path prefixes replaced in the printed command (e.g. ``{"/work/runs": "runs"}``).

    Returns:
        ``run``, ``start`` (``S1 model``-style name of the ``init`` run, or ``scratch``), ``labels`` (``strokes`` or
        ``whole masks``), ``labelled_pct`` (of the training images' pixels, measured), ``scale`` (the model's, of
        native), ``freeze`` (what stayed frozen), ``budget_min`` (the time
        budget, or ``None`` for a fixed number of epochs), ``epochs``, ``train_min`` (wall-clock minutes of the
        epochs, from ``history.csv``), ``mean_iou``, ``ci_lo``, ``ci_hi`` (of ``model.pt``, the epoch of best
        validation mean IoU, as ``val.json`` scored it), ``best_epoch``, ``last_epoch_miou`` (the last epoch's
        validation mean IoU from ``history.csv``: what the run gives without choosing its epoch on the images that
        score it), ``pixel_accuracy``, the IoU of each class, ``command``.

    Raises:
        DatasetNotFoundError: no ``config.yaml``, ``history.csv`` or ``val.json`` in ``run`` (the message says
            which command writes it), or its training data is not where ``config.yaml`` says.
        ConfigError: ``val.json`` scores another split than ``val``, or the run records no training images.
    """
    import yaml

    from lumenkit.training import TrainConfig, read_history, train_command

    run = Path(run)
    paths = dict(paths or {})
    for name, how in (("config.yaml", f"lumenkit train --out {run}"),
                      ("val.json", f"lumenkit evaluate --split val --model {run}/model.pt --out {run}/val.json")):
        if not (run / name).is_file():
            raise DatasetNotFoundError(f"{run / name}: missing; write it with `{how}`")
    raw = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    resolved = raw.pop("resolved", {}) or {}
    raw.pop("versions", None)  # the run's record beside its fields (lumenkit.training.loop writes both)
    cfg = TrainConfig.from_dict(raw, source=str(run / "config.yaml"), saved=True)
    ev = json.loads((run / "val.json").read_text(encoding="utf-8"))
    history = read_history(run)
    if not Path(cfg.data).is_dir():
        raise DatasetNotFoundError(f"{cfg.data}: the training data of {run} is not there (paths in config.yaml are "
                                   "relative to where the run was started); run from that folder")
    meta_path = Path(cfg.data) / "dataset.yaml"
    meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    sparse = (meta or {}).get("labels") == "sparse"
    fit = [str(n) for n in resolved.get("fit_names", [])]
    if not fit:
        raise ConfigError(f"{run / 'config.yaml'}: records no training images (resolved.fit_names); a run of an "
                          "older lumenkit: train it again")
    if ev.get("split") != "val":
        raise ConfigError(f"{run / 'val.json'}: scores split {ev.get('split')!r}, not the validation images; "
                          f"write it with `lumenkit evaluate --split val --model {run}/model.pt --out {run}/val.json`")
    share = labelled_share(cfg.data, fit)

    def show(text: str) -> str:  # a path prefix replaced (before quoting, so replacements may hold spaces)
        for old, new in paths.items():
            if text == old or text.startswith(old.rstrip("/") + "/"):
                return new + text[len(old):]
        return text

    shown = dataclasses.replace(cfg, data=show(str(cfg.data)), out=show(str(cfg.out)),
                                init=show(cfg.init) if cfg.init else cfg.init)
    evaluate = ["lumenkit", "evaluate", "--data", shown.data, "--split", "val", "--model", show(f"{run}/model.pt"),
                "--out", show(f"{run}/val.json")]
    evaluate += ["--tta"] * bool(ev.get("tta")) + ["--refine"] * bool(ev.get("refine"))
    if ev.get("void_border"):
        evaluate += ["--void-border", str(ev["void_border"])]
    lo, hi = ev.get("mean_iou_ci95", [None, None])
    return {
        "run": run.name,
        "start": Path(cfg.init).parent.name if cfg.init else "scratch",
        "labels": "strokes" if sparse else "whole masks",
        "labelled_pct": 100.0 * share,
        "scale": float(resolved.get("scale") or cfg.scale or 0.0),
        "freeze": cfg.freeze,
        "budget_min": cfg.minutes,
        "epochs": len(history),
        "train_min": float(history["seconds"].sum() / 60.0) if "seconds" in history else None,
        "mean_iou": float(ev["mean_iou"]), "ci_lo": lo, "ci_hi": hi,
        "best_epoch": int(history["val_miou"].idxmax()) + 1 if "val_miou" in history else None,
        "last_epoch_miou": float(history["val_miou"].iloc[-1]) if "val_miou" in history else None,
        "pixel_accuracy": float(ev["pixel_accuracy"]),
        **{f"iou_{k}": None if v is None else float(v) for k, v in ev["per_class_iou"].items()},
        "val_names": tuple(str(n) for n in resolved.get("val_names", [])),
        # an environment variable a replacement put in front of a path stays expandable ('$X/a' → $X/a)
        "command": re.sub(r"'(\$[A-Za-z_]\w*(?:/[\w./-]*)?)'", r"\1",
                          f"{train_command(shown)} && {shlex.join(evaluate)}"),
    }


def label_efficiency(
    runs: Sequence[str | Path], reference: str | Path | None = None, paths: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The label-efficiency table: one row per run (:func:`run_row`), sorted by start, budget and labelled share.

    Args:
        runs: run folders (each with ``config.yaml``, ``history.csv`` and ``val.json``).
        reference: the full-mask model the cells are compared with; it becomes the first row and every row gets
            ``of_reference`` = its mean IoU / the reference's.
        paths: replacements for the printed commands.

    Raises:
        ConfigError: no runs, or runs scored on different classes or validation images (not comparable); as
            :func:`run_row`.
        DatasetNotFoundError: as :func:`run_row`.
    """
    if not runs:
        raise ConfigError("no runs given; pass the run folders of the cells (each with val.json)")
    rows = [run_row(r, paths) for r in runs]
    rows.sort(key=lambda r: (r["start"] == "scratch", r["start"], r["budget_min"] or 1e9, r["labelled_pct"],
                             r["freeze"] != "none"))
    if reference is not None:
        ref = run_row(reference, paths)
        rows.insert(0, ref)
        for r in rows:
            r["of_reference"] = r["mean_iou"] / ref["mean_iou"]
    classes = {tuple(k for k in r if k.startswith("iou_")) for r in rows}
    if len(classes) > 1:
        raise ConfigError(f"runs scored on different classes {sorted(classes)}; compare runs of one class set")
    images = {r["val_names"] for r in rows}
    if len(images) > 1:
        raise ConfigError(f"runs scored on different validation images {sorted(images)}; give every run the same "
                          "validation split (--n-val, --val-seed, --val-fold, or the sparse copy's fixed list)")
    return pd.DataFrame([{k: v for k, v in r.items() if k != "val_names"} for r in rows])


def plot_label_efficiency(table: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> Any:
    """Validation mean IoU against the labelled share of training pixels (log scale), one line per start and budget.

    The reference row (the first, when :func:`label_efficiency` was given one) is drawn as a horizontal line with
    90 % of it dotted (the issue's goal). Returns the figure; writes it (PNG, 150 dpi) to ``path`` when given.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cells = table
    if "of_reference" in table:
        ref = table.iloc[0]
        cells = table.iloc[1:]
        ax.axhline(ref["mean_iou"], color="0.3", lw=1,
                   label=f"reference: {ref['labels']}, {ref['run']}, {ref['epochs']} epochs ({ref['mean_iou']:.3f})")
        ax.axhline(0.9 * ref["mean_iou"], color="0.3", lw=1, ls=":", label="90 % of it")
    colours = {"scratch": "tab:orange"}
    styles = {2.0: ":", 5.0: "--", 10.0: "-"}
    scales = cells["scale"].nunique() > 1
    for (start, budget, scale, freeze), group in cells.groupby(["start", "budget_min", "scale", "freeze"],
                                                               dropna=False, sort=True):
        group = group.sort_values("labelled_pct")
        colour = colours.get(start, "tab:blue") if scale == cells["scale"].mode()[0] else "tab:green"
        colour = "tab:purple" if freeze != "none" else colour
        name = "from scratch" if start == "scratch" else f"fine-tuned from {start}"
        name += f" at scale {scale:g}" if scales else ""
        name += f", {freeze} frozen" if freeze != "none" else ""
        ax.errorbar(group["labelled_pct"], group["mean_iou"],
                    yerr=[group["mean_iou"] - group["ci_lo"], group["ci_hi"] - group["mean_iou"]],
                    color=colour, ls=styles.get(float(budget), "-.") if budget == budget else "-.",
                    marker={2.0: "v", 5.0: "s"}.get(float(budget), "o"),
                    ms=4, capsize=2, lw=1.2,
                    label=f"{name}, {budget:g} min" if budget == budget else f"{name}, fixed epochs")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("labelled training pixels (%)")
    ax.set_ylabel("validation mean IoU (whole masks)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    if path is not None:
        from lumenkit.data.imageio import atomic_write

        with atomic_write(path) as fh:
            fig.savefig(fh, format="png", dpi=150)
    return fig


__all__ = ["label_efficiency", "labelled_share", "plot_label_efficiency", "run_row"]
