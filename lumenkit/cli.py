"""Command-line interface: ``lumenkit synth | info | report | ...`` (bad input → one line, exit code 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lumenkit.errors import ConfigError, LumenkitError

if TYPE_CHECKING:
    from lumenkit.training.config import TrainConfig

Handler = Callable[[argparse.Namespace], int]

FOLD_HELP = ("which block of --n-val images of the seed's shuffled order is the validation split: fold F holds "
             "images F*n_val to (F+1)*n_val-1 of that order, the last fold may be smaller; the folds of one seed "
             "partition the training images (0 = the usual split)")
"""Help text shared by every ``--val-fold`` option: what a validation fold is."""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1024x768, got {text!r}") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"size must be at least 64x64, got {text!r}")
    return w, h


# -- synth ----------------------------------------------------------------------------------------
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic polished-section dataset in LumenStone layout")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--images", type=int, default=48, help="training images (default 48)")
    p.add_argument("--test", type=int, default=None, help="test images (default: a third of --images)")
    p.add_argument("--size", type=_size, default=(1024, 768), help="image size WxH in px (default 1024x768)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed → same bytes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=_run_synth)


def _run_synth(a: argparse.Namespace) -> int:
    from lumenkit.synth.writer import write_dataset

    n_test = a.images // 3 if a.test is None else a.test
    root = write_dataset(a.out, n_train=a.images, n_test=n_test, size=a.size, seed=a.seed, overwrite=a.overwrite)
    print(f"wrote {a.images} train + {n_test} test images to {root}")
    return 0


# -- info -----------------------------------------------------------------------------------------
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise a dataset folder: splits, images, class shares; --check decodes all")
    p.add_argument("data", help="dataset folder in LumenStone layout")
    p.add_argument("--check", action="store_true", help="decode every image/mask pair and report problems")
    p.set_defaults(func=_run_info)


def _run_info(a: argparse.Namespace) -> int:
    from lumenkit.data.datasets import LumenStoneDataset, list_splits, pixel_shares

    status = 0
    for split in list_splits(a.data) or ["train"]:
        ds = LumenStoneDataset(a.data, split)
        shares = pixel_shares(ds.class_counts())
        print(f"{split}: {len(ds)} images at scale {ds.stored_scale}; "
              + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
        if a.check:
            problems = ds.validate()
            for msg in problems:
                print(f"  bad: {msg}", file=sys.stderr)
            status = status or (2 if problems else 0)
    return status


# -- report ---------------------------------------------------------------------------------------
def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="run the notebooks with papermill and render the HTML report")
    p.add_argument("--params", default="params/synthetic.yaml", help="parameter YAML (default params/synthetic.yaml)")
    p.add_argument("--out", default=None, help="report folder (default reports/<run name>)")
    p.set_defaults(func=_run_report)


def _run_report(a: argparse.Namespace) -> int:
    from lumenkit.workbook.pipeline import run_report

    result = run_report(a.params, out=a.out)
    print(f"report: {result.index}")
    return 0 if result.ok else 1


# -- evaluate -------------------------------------------------------------------------------------
HEAP_HELP = ("let glibc return freed tensor memory to the system at every step of training and prediction (slower: "
             "page faults; by default the process keeps its peak heap until the command ends, see "
             "lumenkit.runtime.heap; also LUMENKIT_RETAIN_HEAP=0)")
"""Help of ``--no-retain-heap``: one process-level setting, accepted before or after the subcommand."""


def _add_heap_flag(p: argparse.ArgumentParser) -> None:
    """``--no-retain-heap`` after a subcommand (the same setting as before it; see :mod:`lumenkit.runtime.heap`)."""
    p.add_argument("--no-retain-heap", action="store_true", default=argparse.SUPPRESS, help=HEAP_HELP)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="dataset-wide per-class IoU of a model (and baselines) → JSON")
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout")
    p.add_argument("--split", default="test", help="test, train, val or fit (default test)")
    p.add_argument("--model", required=True, help="checkpoint (RUN/model.pt)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--scale", type=float, default=None, help="scale to run the model at (default: its training scale)")
    p.add_argument("--void-border", type=int, default=0, help="ignore pixels within W px of a class boundary")
    p.add_argument("--tta", action="store_true", help="flip/rot90 test-time augmentation (8 passes)")
    p.add_argument("--no-baselines", action="store_true", help="skip the majority and colour-centroid baselines")
    p.add_argument("--save-masks", default=None, help="also write predicted masks NAME.png here")
    p.add_argument("--n-val", type=int, default=None,
                   help="validation images carved from train (split val/fit; default: as the model was trained)")
    p.add_argument("--seed", type=int, default=None, help="seed of the validation split (default: the model's)")
    p.add_argument("--val-fold", type=int, default=None,
                   help="fold of the validation split (split val/fit; default: the one the model was trained on, so "
                        "a model trained on fold F is scored on fold F): " + FOLD_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--perturb", default=None, metavar="NAME=STRENGTH",
                   help="evaluate under a changed imaging condition, e.g. white_balance=0.1 (see `robustness`)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    _add_heap_flag(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(a: argparse.Namespace) -> int:
    from lumenkit.data.datasets import ValidationSplit
    from lumenkit.evaluation.evaluate import evaluate, write_evaluation
    from lumenkit.evaluation.robustness import image_transform, parse_perturb
    from lumenkit.inference.tiling import Tiling
    from lumenkit.models.checkpoint import load_checkpoint
    from lumenkit.runtime.devices import resolve_device

    transform, magnification = None, 1.0
    if a.perturb:
        try:
            name, strength = parse_perturb(a.perturb)
        except ValueError as e:
            raise ConfigError(f"--perturb: {e}") from None
        transform, magnification = image_transform(name, strength)
    ckpt = load_checkpoint(a.model)
    ev = evaluate(a.data, ckpt, split=a.split, scale=a.scale,
                  validation=ValidationSplit.of_model(ckpt, n_val=a.n_val, seed=a.seed, fold=a.val_fold),
                  tiling=Tiling(tta=a.tta), void_border_px=a.void_border, baselines=not a.no_baselines,
                  save_masks=a.save_masks, transform=transform, magnification=magnification,
                  predict_kwargs={"device": resolve_device(a.device)}, progress=not a.quiet)
    if a.perturb:
        ev.info["perturbation"] = a.perturb
    write_evaluation(ev, a.out)
    print(f"{a.split}: {ev.scores.summary()}")
    for name, b in ev.baselines.items():
        print(f"  baseline {name}: mean IoU {b.mean_iou:.3f}")
    if len(ev.matrices) > 2:
        from lumenkit.evaluation.evaluate import error_sources_of, summarise_error_sources

        for line in summarise_error_sources(error_sources_of(ev)):
            print(f"  {line}")
    print(f"wrote {a.out}")
    return 0


# -- train ----------------------------------------------------------------------------------------
def _class_set(text: str) -> str | list[int]:
    if "," in text or text.isdigit():
        try:
            return [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"class set must be a name (S1) or codes (0,1,2), got {text!r}") from None
    return text


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A value of ``kind``, or ``None`` for the text ``none``."""

    def parse(text: str) -> Any:
        if text.strip().lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} or 'none', got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _class_weights(text: str) -> str | list[float] | None:
    if text.strip().lower() == "none" or text == "inverse_sqrt":
        return None if text.strip().lower() == "none" else text
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"class weights must be none, inverse_sqrt or numbers 1,2,0.5, got {text!r}") from None


FIELD_TYPES: dict[str, Callable[[str], Any]] = {
    "str": str, "int": int, "float": float, "float | None": _optional(float), "int | None": _optional(int),
    "str | list[int] | None": _class_set, "str | list[float] | None": _class_weights,
}
"""How ``lumenkit train`` parses a :class:`~lumenkit.training.TrainConfig` field, by its annotation."""


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per :class:`~lumenkit.training.TrainConfig` field, its help from the field's documentation.

    Options left out keep the preset's value (``default=SUPPRESS``), so ``--preset`` and the options compose:
    ``lumenkit train --data D`` is ``TrainConfig(data=D)``, the ``s1`` preset.
    """
    import dataclasses

    from lumenkit.training.config import CHOICES, DEFAULT_PRESET, PRESETS, TrainConfig, field_docs

    docs = field_docs()
    preset = TrainConfig.from_preset(DEFAULT_PRESET)
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help=f"named recipe the options below change (default {DEFAULT_PRESET}; with --resume, the saved "
                        "run's; see lumenkit.training.PRESETS). --epochs without --minutes means no time budget; "
                        "--no-flips also turns rot90 off unless --rot90 is given")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(preset, f.name)
        text = docs[f.name].replace("%", "%%")
        if f.name == "data":
            p.add_argument(flag, required=True, help=text)
        elif f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{text} (preset {DEFAULT_PRESET}: {'on' if value else 'off'})")
        else:
            kind = FIELD_TYPES[str(f.type)]
            p.add_argument(flag, type=kind, choices=CHOICES.get(f.name), default=argparse.SUPPRESS,
                           metavar=None if f.name in CHOICES else f.name.upper(),
                           help=f"{text} (preset {DEFAULT_PRESET}: {value})")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the residual U-Net (also under torchrun --nproc-per-node N)",
                       description="Train a model: a named preset (the recipe) with any field changed by an option. "
                                   "Every option is a field of lumenkit.training.TrainConfig.")
    add_config_options(p)
    _add_heap_flag(p)
    p.set_defaults(func=_run_train)


def train_config(a: argparse.Namespace) -> TrainConfig:
    """The :class:`~lumenkit.training.TrainConfig` of parsed ``lumenkit train`` arguments: a preset and the options.

    Two conveniences of the command line: ``--epochs`` without ``--minutes`` trains that many epochs with no time
    budget, and ``--no-flips`` also turns rot90 off unless ``--rot90`` is given (as before the options were
    generated). With ``--resume`` and a run in ``--out``, the recipe is the saved run's: options that contradict
    it are refused, and ``--preset`` must name the one it was trained with.

    Raises:
        ConfigError: unknown preset, or options contradicting the run being resumed (the message names them).
    """
    import dataclasses

    from lumenkit.training.config import DEFAULT_PRESET, RUN_CONTROL_FIELDS, TrainConfig, config_differences

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(a).items() if k in names}
    if "epochs" in given and "minutes" not in given:
        given["minutes"] = None
    if given.get("flips") is False and "rot90" not in given:
        given["rot90"] = False
    cfg = TrainConfig.from_preset(a.preset or DEFAULT_PRESET, **given)
    last = Path(cfg.out) / "last.pt"
    if not (cfg.resume and last.exists()):
        return cfg
    from lumenkit.models.checkpoint import load_checkpoint

    saved = TrainConfig.from_dict(load_checkpoint(last).config.get("train", {}), source=str(last), saved=True)
    asked = cfg if a.preset else dataclasses.replace(saved, **given)
    diffs = config_differences(saved, asked, strict=True)
    if diffs:
        raise ConfigError(f"{last}: cannot resume with a different recipe ({'; '.join(diffs)}); drop those options "
                          "(and --preset) to continue the saved run, or start afresh with --overwrite or another --out")
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in RUN_CONTROL_FIELDS})


def _run_train(a: argparse.Namespace) -> int:
    from lumenkit.training.loop import train

    result = train(train_config(a))
    if result.rank == 0:
        state = "interrupted" if result.interrupted else "done"
        print(f"{state}: best val mIoU {result.best_miou:.3f}; {result.model_path} (resume from {result.last_path})")
    return 130 if result.interrupted else 0


# -- predict --------------------------------------------------------------------------------------
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict masks, overlays, confidence and composition for images (also under "
                                       "torchrun --nproc-per-node N)")
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--model", required=True, help="checkpoint RUN/model.pt, or an export RUN/model.onnx")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="µm per pixel of images whose files do not say (TIFF/OME metadata wins); with a model that "
                        "records its training pixel size, each image is resampled to the magnification the model "
                        "knows")
    p.add_argument("--scale", type=float, default=None,
                   help="fallback when pixel sizes are unknown: how large the section looks in the images compared "
                        "with LumenStone's native 3396x2547 px at x100 (0.5 = half that many pixels per mm); "
                        "given, it wins; default: from dataset.yaml, else 1.0")
    p.add_argument("--tile", type=int, default=768, help="window side in px at model scale (default 768)")
    p.add_argument("--margin", type=int, default=64, help="context cropped from each window side (default 64)")
    p.add_argument("--tta", action="store_true", help="average over flips and rotations (8× slower)")
    p.add_argument("--runtime", choices=["torch", "onnx"], default=None,
                   help="inference back end (default: torch for .pt, ONNX Runtime for .onnx)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if present; the local rank's GPU under torchrun), cpu, cuda or cuda:N")
    _add_heap_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_predict)


def _run_predict(a: argparse.Namespace) -> int:
    from lumenkit.inference.predict import predict_files
    from lumenkit.inference.tiling import Tiling

    def report(path: str, message: str) -> None:
        print(f"lumenkit: skipped {message}" if message.startswith(path) else f"lumenkit: skipped {path}: {message}",
              file=sys.stderr)

    rep = predict_files(a.model, a.paths, a.out, scale=a.scale, tiling=Tiling(tile=a.tile, margin=a.margin, tta=a.tta),
                        progress=not a.quiet, on_error=report, runtime=a.runtime, device=a.device,
                        pixel_size_um=a.pixel_size)
    if rep.rank == 0:
        by = f" by {rep.world_size} processes" if rep.world_size > 1 else ""
        print(f"predicted {len(rep.composition)} image(s) into {rep.out}{by}; {len(rep.failures)} failed")
    return 0 if rep.ok else 1


# -- analyse --------------------------------------------------------------------------------------
def _add_analyse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyse", help="identify the minerals of your sections and measure them: modal mineralogy "
                                       "(area %% and weight %%), calculated assay, grains in µm, associations, per "
                                       "image, sample and deposit")
    p.add_argument("sections", help="folder of section images (JPEG/PNG/TIFF, any depth), optionally with a "
                                    "samples.csv (image,sample,deposit,pixel_size_um,...)")
    p.add_argument("--model", required=True, help="checkpoint RUN/model.pt, or an export RUN/model.onnx")
    p.add_argument("--out", required=True, help="output folder: masks/, one CSV per table, summary.json")
    p.add_argument("--samples", default=None, help="the samples table (default SECTIONS/samples.csv if present)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="µm per pixel of images that neither samples.csv nor their TIFF metadata describe")
    p.add_argument("--um", action="store_true", help="refuse to start unless every image's pixel size is known")
    p.add_argument("--gangue-density", type=float, default=2.7,
                   help="density of background (gangue, resin) in g/cm³ for weight %% (default 2.7)")
    p.add_argument("--tile", type=int, default=768, help="window side in px at model scale (default 768)")
    p.add_argument("--tta", action="store_true", help="average over flips and rotations (8× slower)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_analyse)


def _run_analyse(a: argparse.Namespace) -> int:
    from lumenkit.inference.tiling import Tiling
    from lumenkit.mineralogy.survey import analyse_sections

    failed: list[str] = []

    def report(path: str, message: str) -> None:
        failed.append(path)
        print(f"lumenkit: skipped {message}" if message.startswith(path) else f"lumenkit: skipped {path}: {message}",
              file=sys.stderr)

    s = analyse_sections(a.model, a.sections, a.out, samples_csv=a.samples, pixel_size_um=a.pixel_size,
                         require_um=a.um, gangue_density=a.gangue_density, tiling=Tiling(tile=a.tile, tta=a.tta),
                         device=a.device, progress=not a.quiet, on_error=report)
    print(f"analysed {s.info['images']} image(s) of {s.info['samples']} sample(s) and {s.info['deposits']} "
          f"deposit(s), sizes in {s.unit}; tables and summary.json in {a.out}; {len(failed)} failed")
    return 0 if not failed else 1


# -- robustness -----------------------------------------------------------------------------------
def _add_robustness(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("robustness", help="evaluate a model under changed imaging conditions → JSON and CSV")
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout")
    p.add_argument("--model", required=True, help="checkpoint (RUN/model.pt)")
    p.add_argument("--out", required=True, help="output JSON (a CSV of the curves is written beside it)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--names", default="all",
                   help="comma-separated perturbations: brightness, gamma, white_balance, vignetting, defocus, "
                        "noise, jpeg, scale (default all)")
    p.add_argument("--augmented-model", default=None,
                   help="a checkpoint trained with augmentation (--photometric/--noise/--blur) on the same data and "
                        "budget: its curves too, and both models at the baseline's worst conditions")
    p.add_argument("--n-val", type=int, default=None,
                   help="validation images carved from train (split val/fit; default: as the model was trained)")
    p.set_defaults(func=_run_robustness)


def _run_robustness(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import write_json, write_text
    from lumenkit.evaluation.robustness import PERTURBATIONS, remedy_table

    names = list(PERTURBATIONS) if a.names == "all" else [n.strip() for n in a.names.split(",") if n.strip()]
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ConfigError(f"--names: unknown perturbations {unknown}; choose from {', '.join(PERTURBATIONS)}")
    res = remedy_table(a.data, a.model, augmented_model=a.augmented_model, split=a.split, names=names,
                       n_val=a.n_val)
    write_json(a.out, {"split": a.split, "model": a.model, "augmented_model": a.augmented_model,
                       **{k: v.to_dict(orient="records") for k, v in res.items()}})
    import pandas as pd

    curves = pd.concat([res["curves"].assign(model="baseline")]
                       + ([res["augmented_curves"].assign(model="augmented")] if "augmented_curves" in res else []))
    write_text(Path(a.out).with_suffix(".csv"), curves.to_csv(index=False))
    print(res["table"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {a.out}")
    return 0


# -- export ---------------------------------------------------------------------------------------
def _add_combine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("combine", help="link several LumenStone folders (e.g. S1 and S2) into one for a joint model")
    p.add_argument("sources", nargs="+", help="dataset folders, stored at the same scale")
    p.add_argument("--out", required=True, help="new combined folder")
    p.add_argument("--n-val", default="10",
                   help="validation images carved from each source's train: one number or one per source (10,5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sources' validation splits (default 0)")
    p.add_argument("--val-fold", type=int, default=0,
                   help="fold of every source's validation split (default 0; each source must have that fold): "
                        + FOLD_HELP)
    p.add_argument("--copy", action="store_true", help="copy files instead of symbolic links")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=_run_combine)


def _run_combine(a: argparse.Namespace) -> int:
    from lumenkit.data.datasets import LumenStoneDataset, combine_datasets

    try:
        n_val = [int(v) for v in a.n_val.split(",")]
    except ValueError:
        raise ConfigError(f"--n-val must be a number or numbers separated by commas, got {a.n_val!r}") from None
    out = combine_datasets(a.sources, a.out, n_val=n_val[0] if len(n_val) == 1 else n_val, seed=a.seed,
                           copy=a.copy, overwrite=a.overwrite, fold=a.val_fold)
    fit, val = LumenStoneDataset(out, "fit"), LumenStoneDataset(out, "val")
    print(f"wrote {out}: {len(fit)} training + {len(val)} fixed validation images, classes {fit.class_map}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (normalisation, softmax and metadata inside)")
    p.add_argument("--onnx", required=True, metavar="MODEL_PT", help="checkpoint to export, e.g. RUN/model.pt")
    p.add_argument("--out", default=None, help="output .onnx file (default: beside the checkpoint, RUN/model.onnx)")
    p.set_defaults(func=_run_export)


def _run_export(a: argparse.Namespace) -> int:
    from lumenkit.inference.onnx import export_onnx, load_onnx

    path = export_onnx(a.onnx, a.out)
    m = load_onnx(path) if _has_onnxruntime() else None
    print(f"wrote {path}" + (f" ({len(m.class_map or [])} classes, scale {m.scale}, checked with ONNX Runtime)"
                             if m is not None else " (onnxruntime not installed: not checked)"))
    return 0


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth, _add_info, _add_evaluate, _add_report, _add_train, _add_predict, _add_analyse, _add_robustness,
    _add_export,
    _add_combine,
]


def command_parser(prog: str, description: str | None,
                   commands: Sequence[Callable[[argparse._SubParsersAction], None]]) -> argparse.ArgumentParser:
    """An argument parser named ``prog`` with ``--version``, ``--no-retain-heap`` and one subcommand per adder."""
    from lumenkit._version import __version__

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"lumenkit {__version__}")
    parser.add_argument("--no-retain-heap", action="store_true", help=HEAP_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in commands:
        add(sub)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; bad input prints ``PROG: error: …`` and returns 2, Ctrl-C 130."""
    from lumenkit.runtime.heap import set_heap_retention

    args = parser.parse_args(argv)
    if args.no_retain_heap:
        set_heap_retention(False)
    try:
        return int(args.func(args) or 0)
    except LumenkitError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.no_retain_heap:
            set_heap_retention(None)  # in-process callers (tests, notebooks) get the default back


def build_parser() -> argparse.ArgumentParser:
    """The ``lumenkit`` argument parser with every subcommand."""
    return command_parser("lumenkit", __doc__, COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; bad input prints ``lumenkit: error: …`` and returns 2."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
