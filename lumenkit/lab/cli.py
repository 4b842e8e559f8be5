"""Research commands: ``lumenkit-lab ablation | prior`` (also ``python -m lumenkit.lab``).

The ablation table behind the docs' results (train, score, gather and cross-validate named variants of the recipe)
and the class-prior correction study. Bad input prints one line and exits with code 2, as ``lumenkit`` does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lumenkit.cli import FOLD_HELP, command_parser, run_command
from lumenkit.data.datasets import ValidationSplit
from lumenkit.errors import ConfigError
from lumenkit.evaluation.metrics import Scores


def _add_ablation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablation", help="train/evaluate one named variant of the recipe, or print the ablation table")
    p.add_argument("action", choices=["list", "run", "score", "table", "cv"],
                   help="list variants, run one, score a trained one on another dataset's validation split "
                        "(RUNS/NAME/val_LABEL.json), gather the table, or cross-validate a variant: pool its "
                        "val.json confusion matrices over run folders, one per validation fold")
    p.add_argument("name", nargs="?", default=None,
                   help="variant to run, score or cv (see `lumenkit-lab ablation list`)")
    p.add_argument("--data", default=None, help="dataset folder in LumenStone layout (for run and score)")
    p.add_argument("--label", default=None,
                   help="score: short name of --data, e.g. S1 (file val_LABEL.json); cv: pool val_LABEL.json")
    p.add_argument("--runs", nargs="+", default=None, metavar="DIR",
                   help="folder holding one run folder per variant (default runs/ablation); cv: one such folder per "
                        "fold, e.g. runs/s1_fold0 runs/s1_fold1 ...")
    p.add_argument("--n-val", type=int, default=None, help="validation images carved from train (default 10)")
    p.add_argument("--val-seed", type=int, default=None,
                   help="run, score: seed of the validation split (default 0; use another --runs folder per seed)")
    p.add_argument("--val-fold", type=int, default=None,
                   help="run, score: fold of the validation split (default 0; use another --runs folder per fold): "
                        + FOLD_HELP)
    p.add_argument("--minutes", type=float, default=None, help="override the variant's time budget")
    p.add_argument("--epochs", type=int, default=None,
                   help="run: train this many epochs instead of a time budget (cosine over them): an equal-CPU-time "
                        "comparison that other work on the machine cannot bend (benchmarks/bench_variants.py gives "
                        "each variant's epochs for a budget)")
    p.add_argument("--threads", type=int, default=None,
                   help="run: torch threads of the training process (a setting of the process: the result is the "
                        "same); 1 runs two folds side by side on 2 cores")
    p.add_argument("--bar", default="",
                   help="score: classes the model may not predict, comma-separated labels (e.g. Mag,Po,Pn: a joint "
                        "S1+S2 model on S1 without S2's own minerals); use with its own --label")
    p.add_argument("--refine", action="store_true",
                   help="score: upsample guided by the image (as `lumenkit evaluate --refine`), e.g. on the variant's "
                        "own --data with --label refine, then `cv NAME --label refine`")
    p.add_argument("--protocol", default=None,
                   help="cv: pool the scores under this protocol of the evaluations (all_pixels, void_border_2px, "
                        "petroscope: see `lumenkit evaluate`) instead of the headline one")
    p.add_argument("--out", default=None, help="table, cv: also write it as CSV here")
    p.add_argument("--only-run", action="store_true", help="table: leave out variants not run yet")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_ablation)


def _run_ablation(a: argparse.Namespace) -> int:
    from lumenkit.lab.ablation import (
        VariantInterrupted,
        ablation_table,
        describe,
        run_variant,
        score_variant,
        to_markdown,
    )

    if a.action == "list":
        print(describe().to_string(index=False))
        return 0
    if a.action == "cv":
        return _run_crossval(a)
    runs = a.runs or ["runs/ablation"]
    if len(runs) > 1:
        raise ConfigError(f"ablation {a.action} takes one --runs folder, got {len(runs)} (several are for `cv`)")
    a.runs = runs[0]
    if a.action == "table":
        df = ablation_table(a.runs)
        if a.out:
            from lumenkit.data.imageio import write_text

            write_text(a.out, df.to_csv(index=False, float_format="%.4f"))
        print(to_markdown(df, only_run=a.only_run), end="")
        return 0
    if a.action == "score":
        if not a.name or not a.data or not a.label:
            raise ConfigError("ablation score needs a variant name, --data and --label, e.g. "
                              "`lumenkit-lab ablation score no_photometric --runs runs/joint --data S1_v1_x05 "
                              "--label S1 --n-val 10`")
        given = (a.n_val, a.val_seed, a.val_fold) != (None, None, None)  # else the run's own split on its own data
        validation = (ValidationSplit(10 if a.n_val is None else a.n_val, a.val_seed or 0, a.val_fold or 0)
                      if given else None)
        from lumenkit.inference.refine import Refine

        d = score_variant(a.name, a.data, a.runs, a.label, validation=validation, quiet=a.quiet,
                          refine=Refine() if a.refine else None,
                          bar=tuple(x.strip() for x in a.bar.split(",") if x.strip()))
        print(f"{a.name} on {a.label}: validation {_scores_of(d).summary()}")
        return 0
    if not a.name or not a.data:
        raise ConfigError("ablation run needs a variant name and --data, e.g. "
                          "`lumenkit-lab ablation run uniform --data DIR` (names: `lumenkit-lab ablation list`)")
    if a.epochs is not None and a.minutes is not None:
        raise ConfigError("ablation run takes --epochs or --minutes, not both")
    overrides = {k: v for k, v in (("n_val", a.n_val), ("val_seed", a.val_seed), ("val_fold", a.val_fold),
                                   ("minutes", a.minutes), ("epochs", a.epochs), ("threads", a.threads))
                 if v is not None}
    if a.epochs is not None:
        overrides["minutes"] = None  # the epochs decide, not a variant's time budget
    try:
        d = run_variant(a.name, a.data, a.runs, quiet=a.quiet, **overrides)
    except VariantInterrupted as e:
        print(f"lumenkit-lab: {e}", file=sys.stderr)
        return 130
    print(f"{a.name}: validation {_scores_of(d).summary()}")
    return 0


def _scores_of(d: dict[str, Any]) -> Scores:
    """The scores of an evaluation document (its dataset-wide confusion matrix)."""
    import numpy as np

    from lumenkit.evaluation.metrics import Scores

    return Scores(np.asarray(d["confusion"], dtype=np.int64), list(d["class_order"]))


def _run_crossval(a: argparse.Namespace) -> int:
    """``lumenkit-lab ablation cv NAME --runs DIR [DIR ...]``: print the pooled table (and write it as CSV)."""
    import warnings

    from lumenkit.lab.ablation import crossval, crossval_markdown

    if not a.name or not a.runs:
        raise ConfigError("ablation cv needs a variant name and the run folders of its folds, e.g. `lumenkit-lab "
                          "ablation cv no_photometric --runs runs/s1_fold0 runs/s1_fold1 runs/s1_fold2`")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = crossval(a.runs, a.name, label=a.label, protocol=a.protocol)
    if a.out:
        from lumenkit.data.imageio import write_text

        write_text(a.out, df.to_csv(index=False, float_format="%.4f"))
    print(crossval_markdown(df), end="")
    for w in caught:
        if issubclass(w.category, UserWarning):  # crossval's coverage warnings
            print(f"lumenkit-lab: warning: {w.message}", file=sys.stderr)
    return 0


def _add_prior(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prior", help="correct a balanced-sampler model for the class prior of real sections "
                                     "(logit adjustment fitted on the training images)")
    p.add_argument("--model", required=True, help="RUN/model.pt (its last.pt holds the served pixel counts)")
    p.add_argument("--out", default=None, help="corrected checkpoint (default RUN/model_prior.pt)")
    p.add_argument("--data", default=None, help="dataset folder (default: the one the model was trained on)")
    p.add_argument("--split", default="fit", choices=["fit", "val", "train"],
                   help="images the strength is fitted on (default fit: the training images, validation untouched)")
    p.add_argument("--tau", type=float, default=None,
                   help="use this strength instead of fitting one (0 = none, 1 = the full Bayes shift)")
    p.add_argument("--em", action="store_true",
                   help="estimate the natural prior from the model's own posteriors on the training images (EM, "
                        "no masks read) instead of counting their masks: for models trained on strokes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_prior)


def _run_prior(a: argparse.Namespace) -> int:
    from lumenkit.lab.prior import correct_model

    out = Path(a.out) if a.out else Path(a.model).with_name("model_prior.pt")
    path, fit, info = correct_model(a.model, out, data=a.data, split=a.split, tau=a.tau, progress=not a.quiet,
                                    em=a.em)
    labels = info["labels"]
    shift = " ".join(f"{lbl} {v:+.2f}" for lbl, v in zip(labels, info["shift"], strict=True))
    for name in ("served", "natural"):
        n = sum(info[name])
        print(f"{name} shares: " + " ".join(f"{lbl} {c / n:.1%}" for lbl, c in zip(labels, info[name], strict=True)))
    if fit is not None:
        print(fit.curve.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"tau {fit.tau:g} (best mean IoU on {fit.images} {fit.split} images)")
    print(f"full shift log(natural/served): {shift}")
    print(f"wrote {path} (tau {info['tau']:g})")
    return 0


def _add_refine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refine", help="score bilinear against guided upsampling (--refine) at several settings, the "
                                      "network run once per image (choose the setting on the training images)")
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout")
    p.add_argument("--model", required=True, help="checkpoint RUN/model.pt")
    p.add_argument("--split", default="fit", choices=["fit", "val", "train"],
                   help="images scored (default fit: the model's training images, its validation split untouched)")
    p.add_argument("--settings", default="1:1e-3,2:1e-4,2:1e-3,2:1e-2,4:1e-3",
                   help="radius:eps pairs, comma-separated (radius in px at the model's scale)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images of the split")
    p.add_argument("--out", required=True, help="CSV of the table")
    p.set_defaults(func=_run_refine)


def _run_refine(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import check_writable, write_text
    from lumenkit.lab.studies import refine_sweep

    try:
        settings = [(int(r), float(e)) for r, e in (pair.split(":") for pair in a.settings.split(","))]
    except ValueError:
        raise ConfigError(f"--settings {a.settings!r}: give radius:eps pairs, e.g. 1:1e-3,2:1e-3") from None
    check_writable(a.out, folder=False)
    table = refine_sweep(a.data, a.model, settings, split=a.split, limit=a.limit)
    write_text(a.out, table.to_csv(index=False))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _add_strokes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("strokes", help="copy a dataset with simulated strokes for training masks (validation masks "
                                       "whole): sparse labels for label-efficiency studies")
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout (fully labelled)")
    p.add_argument("--out", required=True, help="new folder for the sparse copy")
    p.add_argument("--fraction", type=float, required=True, help="share of each image's pixels labelled (0.01 = 1 %%)")
    p.add_argument("--seed", type=int, default=0, help="seed of the strokes")
    p.add_argument("--n-val", type=int, default=10, help="validation images kept whole (default 10)")
    p.add_argument("--val-seed", type=int, default=0, help="seed of the validation split")
    p.add_argument("--val-fold", type=int, default=0, help="fold of the validation split")
    p.add_argument("--width", type=int, default=3, help="stroke width in px at the stored resolution (default 3)")
    p.add_argument("--length", type=int, default=40, help="stroke length in px (default 40)")
    p.set_defaults(func=_run_strokes)


def _run_strokes(a: argparse.Namespace) -> int:
    from lumenkit.data.datasets import ValidationSplit
    from lumenkit.lab.strokes import sparse_dataset

    if not 0 < a.fraction <= 1:
        raise ConfigError(f"--fraction must be in (0, 1] (0.01 = 1 % of the pixels), got {a.fraction}")
    got = sparse_dataset(a.data, a.out, a.fraction, a.seed, ValidationSplit(a.n_val, a.val_seed, a.val_fold),
                         a.width, a.length)
    print(f"wrote {a.out}: {got['images']} training images with strokes on {100 * got['labelled_fraction']:.3g} % "
          f"of their pixels (asked {100 * a.fraction:g} %); validation masks whole")
    return 0


def _add_label_efficiency(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label-efficiency", help="gather training runs (strokes or whole masks, fine-tuned or "
                                                "from scratch, each with val.json) into the label-efficiency table "
                                                "and figure")
    p.add_argument("runs", nargs="+", help="run folders, each with config.yaml, history.csv and val.json")
    p.add_argument("--reference", default=None, help="run folder of the full-mask model the cells are compared with")
    p.add_argument("--out", required=True, help="CSV of the table (one row per run, with its command)")
    p.add_argument("--figure", default=None, help="PNG of mean IoU against the labelled share")
    p.add_argument("--title", default=None, help="title of the figure")
    p.add_argument("--path", action="append", default=[], metavar="OLD=NEW",
                   help="replace OLD by NEW in the printed commands (e.g. /work/runs=runs); repeatable")
    p.set_defaults(func=_run_label_efficiency)


def _run_label_efficiency(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import check_writable, write_text
    from lumenkit.lab.label_efficiency import label_efficiency, plot_label_efficiency

    paths = {}
    for pair in a.path:
        old, sep, new = pair.partition("=")
        if not sep or not old:
            raise ConfigError(f"--path {pair!r}: give OLD=NEW, e.g. /work/runs=runs")
        paths[old] = new
    check_writable(a.out, folder=False)
    if a.figure:
        check_writable(a.figure, folder=False)
    table = label_efficiency(a.runs, a.reference, paths)
    write_text(a.out, table.to_csv(index=False))
    if a.figure:
        plot_label_efficiency(table, a.figure, a.title)
    print(table.drop(columns="command").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _add_separability(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("separability", help="what tells two minerals apart at each scale (colour, texture, "
                                            "context), measured on labelled pixels, with each class's resolution "
                                            "ceiling")
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout (its train split)")
    p.add_argument("--minerals", nargs=2, default=["Pn", "Po"], metavar=("A", "B"),
                   help="the two minerals, LumenStone labels (default Pn Po)")
    p.add_argument("--scales", type=float, nargs="+",
                   help="model scales relative to native x100 (default 0.5 0.25 0.125; with --levels one scale, "
                        "default 0.25)")
    p.add_argument("--per-image", type=int, default=2000, help="pixels drawn per class and image (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw and the classifier")
    p.add_argument("--levels", action="store_true",
                   help="instead: brightness within each image against across images, and after dividing each "
                        "image by its bright phase, at one scale (also writes OUT's stem + _images.csv and "
                        "_spread.csv)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=_run_separability)


def _run_separability(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import check_writable, write_text
    from lumenkit.lab.separability import pair_study

    if a.scales is None:
        a.scales = [0.25] if a.levels else [0.5, 0.25, 0.125]
    if a.levels and len(a.scales) != 1:
        raise ConfigError("--levels studies one scale: give one value to --scales")
    if any(not 0 < s <= 1 for s in a.scales) or a.per_image < 1:
        raise ConfigError("--scales must lie in (0, 1] and --per-image be at least 1")
    check_writable(a.out, folder=False)
    if a.levels:
        from lumenkit.lab.separability import levels_study

        images, table, spread = levels_study(a.data, *a.minerals, scale=a.scales[0], per_image=a.per_image,
                                             seed=a.seed)
        out = Path(a.out)
        for part, rows in (("images", images), ("spread", spread)):
            write_text(out.with_name(f"{out.stem}_{part}.csv"), rows.to_csv(index=False))
            print(rows.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    else:
        table = pair_study(a.data, *a.minerals, scales=a.scales, per_image=a.per_image, seed=a.seed)
    write_text(a.out, table.to_csv(index=False))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _add_levels_copy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("levels-copy", help="copy a dataset with each image divided by its bright phase's level "
                                           "(per-image colour correction), to train and score a recipe on it")
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout (its train split)")
    p.add_argument("--out", required=True, help="new folder for the corrected copy")
    p.add_argument("--target", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="grey levels of the bright phase after correction (default: the dataset's mean)")
    p.set_defaults(func=_run_levels_copy)


def _run_levels_copy(a: argparse.Namespace) -> int:
    from lumenkit.lab.separability import levels_dataset

    if a.target is not None and any(not 0 < v <= 255 for v in a.target):
        raise ConfigError("--target grey levels must lie in (0, 255]")
    done = levels_dataset(a.data, a.out, a.target)
    print(f"{a.out}: {done['images']} images, bright phase to "
          f"{', '.join(f'{v:.1f}' for v in done['target'])} (R, G, B)")
    return 0


def _add_lookalikes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lookalikes", help="per image, which mineral a mineral's pixels look like by colour alone, "
                                          "learnt from the other images (an image whose tint differs stands out)")
    p.add_argument("target", help="the mineral whose pixels are called (LumenStone label, e.g. Pn)")
    p.add_argument("--among", nargs="+", default=["Ccp", "Po"], metavar="LABEL",
                   help="the other minerals the colour classifier knows (default Ccp Po)")
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout (its train split)")
    p.add_argument("--scale", type=float, default=0.25, help="model scale relative to native x100 (default 0.25)")
    p.add_argument("--per-image", type=int, default=2000, help="pixels drawn per mineral and image (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw and the classifier")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=_run_lookalikes)


def _run_lookalikes(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import check_writable, write_text
    from lumenkit.lab.separability import colour_lookalikes

    if not 0 < a.scale <= 1 or a.per_image < 1:
        raise ConfigError("--scale must lie in (0, 1] and --per-image be at least 1")
    check_writable(a.out, folder=False)
    table = colour_lookalikes(a.data, a.target, a.among, scale=a.scale, per_image=a.per_image, seed=a.seed)
    write_text(a.out, table.to_csv(index=False))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_ablation, _add_prior, _add_refine, _add_strokes, _add_label_efficiency, _add_separability,
    _add_levels_copy, _add_lookalikes]


def build_parser() -> argparse.ArgumentParser:
    """The ``lumenkit-lab`` argument parser with every research subcommand."""
    return command_parser("lumenkit-lab", __doc__, COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a research subcommand; bad input prints ``lumenkit-lab: error: …`` and returns 2."""
    return run_command(build_parser(), argv)
