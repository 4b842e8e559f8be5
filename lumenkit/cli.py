"""Command-line interface: ``lumenkit synth | info | report | ...`` (bad input → one line, exit code 2)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
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


def _size_type(least: int, example: str) -> Callable[[str], tuple[int, int]]:
    """An argparse type reading ``WxH`` (each side at least ``least`` px; the message shows ``example``)."""

    def size(text: str) -> tuple[int, int]:
        try:
            w, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size must look like {example}, got {text!r}") from None
        if w < least or h < least:
            raise argparse.ArgumentTypeError(f"size must be at least {least}x{least}, got {text!r}")
        return w, h

    return size


_size = _size_type(64, "1024x768")
_mask_size = _size_type(1, "3396x2547")


# -- synth ----------------------------------------------------------------------------------------
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic polished-section dataset in LumenStone layout")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--images", type=int, default=None,
                   help="training images (default 48); with --sections, images per sample (default 3)")
    p.add_argument("--test", type=int, default=None, help="test images (default: a third of --images)")
    p.add_argument("--size", type=_size, default=(1024, 768), help="image size WxH in px (default 1024x768)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed → same bytes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--sections", action="store_true",
                   help="write unlabelled sections instead, as a mineralogist brings them: OUT/DEPOSIT/*.jpg with "
                        "OUT/samples.csv, the true masks withheld in OUT_masks/ (--images: images per sample)")
    p.set_defaults(func=_run_synth)


def _run_synth(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import check_writable
    from lumenkit.synth.writer import write_dataset, write_sections

    check_writable(a.out, folder=True, beside=True)  # built beside --out and renamed into place
    if a.sections and a.test is not None:
        raise ConfigError("--test has no meaning with --sections (sections have no splits); leave it out")
    if a.sections:
        per_sample = 3 if a.images is None else a.images
        out, truth = write_sections(a.out, images_per_sample=per_sample, size=a.size, seed=a.seed,
                                    overwrite=a.overwrite)
        print(f"wrote synthetic sections to {out} (samples.csv beside them) and their withheld masks to {truth}")
        return 0
    a.images = 48 if a.images is None else a.images
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
    from lumenkit.data.imageio import check_writable
    from lumenkit.workbook.pipeline import run_report

    if a.out is not None:
        check_writable(a.out, folder=True)
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


ENSEMBLE_HELP = ("; given more than once, the models' probabilities are averaged (an ensemble: same classes and "
                 "scale; the networks' times add up, decoding and writing are shared)")
"""End of ``--model``'s help where several models can be given (``evaluate``, ``predict``, ``analyse``)."""


def _model_arg(models: list[str]) -> str | list[str]:
    """``--model`` as the library takes it: one path, or several (an ensemble)."""
    return models[0] if len(models) == 1 else list(models)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="dataset-wide per-class IoU of a model (and baselines) → JSON")
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout")
    p.add_argument("--split", default="test", help="test, train, val or fit (default test)")
    p.add_argument("--model", required=True, action="append",
                   help="checkpoint (RUN/model.pt), or an export RUN/model.onnx (not split val/fit)" + ENSEMBLE_HELP)
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--scale", type=float, default=None, help="scale to run the model at (default: its training scale)")
    p.add_argument("--void-border", type=int, default=0,
                   help="headline scores ignore pixels within W px of a class boundary, on either side (every run "
                        "also reports the all_pixels, void_border_2px and petroscope protocols)")
    p.add_argument("--tta", action="store_true", help="flip/rot90 test-time augmentation (8 passes)")
    p.add_argument("--refine", action="store_true", help=REFINE_HELP)
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
    from lumenkit.data.imageio import check_writable
    from lumenkit.evaluation.evaluate import evaluate, modal_errors, summarise_modal_errors, write_evaluation
    from lumenkit.evaluation.robustness import image_transform, parse_perturb
    from lumenkit.inference.loading import load_model
    from lumenkit.inference.tiling import Tiling
    from lumenkit.runtime.devices import resolve_device

    check_writable(a.out, folder=False)
    if a.save_masks:
        check_writable(a.save_masks, folder=True, option="--save-masks")
    transform, magnification = None, 1.0
    if a.perturb:
        try:
            name, strength = parse_perturb(a.perturb)
        except ValueError as e:
            raise ConfigError(f"--perturb: {e}") from None
        transform, magnification = image_transform(name, strength)
    ckpt = load_model(a.model)  # one path: that model; several: their ensemble
    ev = evaluate(a.data, ckpt, split=a.split, scale=a.scale,
                  validation=ValidationSplit.of_model(ckpt, n_val=a.n_val, seed=a.seed, fold=a.val_fold),
                  tiling=Tiling(tta=a.tta), void_border_px=a.void_border, baselines=not a.no_baselines,
                  save_masks=a.save_masks, transform=transform, magnification=magnification,
                  predict_kwargs={"device": resolve_device(a.device), "refine": _refine(a)}, progress=not a.quiet)
    if a.perturb:
        ev.info["perturbation"] = a.perturb
    write_evaluation(ev, a.out)
    print(f"{a.split}: {ev.scores.summary()}")
    for name, s in ev.protocols.items():
        print(f"  protocol {name}: mean IoU {s.mean_iou:.3f}, pixel accuracy {s.pixel_accuracy:.3f}")
    for name, b in ev.baselines.items():
        print(f"  baseline {name}: mean IoU {b.mean_iou:.3f}")
    modal = summarise_modal_errors(modal_errors(ev))
    if (worst := modal["worst"]) is not None:
        print(f"  modal mineralogy: area % off by {modal['mean_abs_pp']:.2f} points per mineral and image "
              f"on average (largest {worst['error_pp']:+.1f}, {worst['mineral']} in {worst['image']})")
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
    "str | None": _optional(str),
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
    it are refused, and ``--preset`` must name the one it was trained with, budget included (``--preset long`` does
    not continue a 45-minute run for 180 minutes, nor ``--preset s1`` a 180-minute run for 45; ``--minutes`` does).

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
    if a.preset:  # a preset names its budget too (s1's 45 minutes as much as long's 180)
        diffs += [f"{k}: saved {getattr(saved, k)!r}, preset {a.preset!r} {getattr(cfg, k)!r} (--{k} changes a budget)"
                  for k in ("minutes", "epochs") if k not in given and getattr(saved, k) != getattr(cfg, k)]
    if diffs:
        raise ConfigError(f"{last}: cannot resume with a different recipe ({'; '.join(diffs)}); drop those options "
                          "(and --preset) to continue the saved run, or start afresh with --overwrite or another --out")
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in RUN_CONTROL_FIELDS})


def _run_train(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import check_writable
    from lumenkit.training.config import KEPT_ON_RESUME
    from lumenkit.training.loop import train

    cfg = train_config(a)
    check_writable(cfg.out, folder=True)
    # a budget or validation window typed on the command line is stated, so --resume --minutes 45 ends a longer run
    # at 45 minutes and --val-tile 768 validates a run begun at 512 in 768-px windows, defaults or not
    typed = set(KEPT_ON_RESUME) & set(vars(a))
    result = train(cfg, **{k: getattr(cfg, k) for k in (typed | {"minutes"} if "epochs" in typed else typed)})
    if result.rank == 0:
        state = "interrupted" if result.interrupted else "done"
        print(f"{state}: best val mIoU {result.best_miou:.3f}; {result.model_path} (resume from {result.last_path})")
    return 130 if result.interrupted else 0


# -- predict --------------------------------------------------------------------------------------
FLAT_FIELD_HELP = ("reference frame: an image of a blank, evenly reflecting standard (or a mirror) taken with the "
                   "same objective, lamp, exposure and camera settings; each image is corrected for vignetting and "
                   "white balance by it before prediction, and the overlays show the corrected image. A reference "
                   "of another size but the same aspect ratio is resampled; an image of another aspect ratio is "
                   "skipped. composition.csv names the reference (column flat_field)")
"""Help of ``--flat-field`` (``predict``, ``analyse``): what the reference frame is and what it does."""


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict masks, overlays, confidence and composition for images (also under "
                                       "torchrun --nproc-per-node N)")
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--model", required=True, action="append",
                   help="checkpoint RUN/model.pt, or an export RUN/model.onnx" + ENSEMBLE_HELP)
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
    p.add_argument("--refine", action="store_true", help=REFINE_HELP)
    _add_stream_flag(p)
    p.add_argument("--runtime", choices=["torch", "onnx"], default=None,
                   help="inference back end (default: torch for .pt, ONNX Runtime for .onnx)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if present; the local rank's GPU under torchrun), cpu, cuda or cuda:N")
    p.add_argument("--flat-field", default=None, metavar="REF", help=FLAT_FIELD_HELP)
    _add_heap_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_predict)


def _run_predict(a: argparse.Namespace) -> int:
    from lumenkit.inference.predict import predict_files
    from lumenkit.inference.tiling import Tiling

    def report(path: str, message: str) -> None:
        print(f"lumenkit: skipped {message}" if message.startswith(path) else f"lumenkit: skipped {path}: {message}",
              file=sys.stderr)

    rep = predict_files(_model_arg(a.model), a.paths, a.out, scale=a.scale,
                        tiling=Tiling(tile=a.tile, margin=a.margin, tta=a.tta), progress=not a.quiet,
                        on_error=report, runtime=a.runtime, device=a.device,
                        pixel_size_um=a.pixel_size, flatfield=a.flat_field,
                        mosaic_pixels=int(a.stream_from * 1e6), refine=_refine(a))
    if rep.rank == 0:
        by = f" by {rep.world_size} processes" if rep.world_size > 1 else ""
        print(f"predicted {len(rep.composition)} image(s) into {rep.out}{by}; {len(rep.failures)} failed")
    return 0 if rep.ok else 1


REFINE_HELP = ("upsample the class probabilities guided by the image's edges (fast guided filter, "
               "lumenkit.inference.refine) instead of bilinearly: boundaries at full resolution follow the image")


def _refine(a: argparse.Namespace) -> Any:
    from lumenkit.inference.refine import Refine

    return Refine() if a.refine else None


def _add_stream_flag(p: argparse.ArgumentParser, measured: bool = False) -> None:
    p.add_argument("--stream-from", type=float, default=64, metavar="MP",
                   help="TIFFs of at least this many megapixels are whole-section mosaics: read, predicted and written "
                        "(tiled pyramidal BigTIFF, resumable) region by region in bounded memory"
                        + (", and measured band by band" if measured else "") + " (default 64)")


# -- analyse --------------------------------------------------------------------------------------
SCALE_HELP = ("fallback when pixel sizes are unknown: how large the section looks in the images compared with "
              "LumenStone's native 3396x2547 px at x100 (0.5 = half that many pixels per mm); given, it wins; "
              "default: from dataset.yaml, else 1.0")
"""Help of ``analyse --scale``: word for word ``predict --scale``'s (a test holds them equal)."""


def _add_analyse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyse", help="identify the minerals of your sections and measure them: modal mineralogy "
                                       "(area %% and weight %%), calculated assay, grains in µm, associations, per "
                                       "image, sample and deposit")
    p.add_argument("sections", help="folder of section images (JPEG/PNG/TIFF, any depth), optionally with a "
                                    "samples.csv (image,sample,deposit,pixel_size_um,...)")
    p.add_argument("--model", required=True, action="append",
                   help="checkpoint RUN/model.pt, or an export RUN/model.onnx" + ENSEMBLE_HELP)
    p.add_argument("--out", required=True, help="output folder: masks/, one CSV per table, summary.json")
    p.add_argument("--samples", default=None, help="the samples table (default SECTIONS/samples.csv if present)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="µm per pixel of images that neither samples.csv nor their TIFF metadata describe")
    p.add_argument("--um", action="store_true", help="refuse to start unless every image's pixel size is known")
    p.add_argument("--scale", type=float, default=None, help=SCALE_HELP)
    p.add_argument("--gangue-density", type=float, default=2.7,
                   help="density of background (gangue, resin) in g/cm³ for weight %% (default 2.7)")
    p.add_argument("--tile", type=int, default=768, help="window side in px at model scale (default 768)")
    p.add_argument("--tta", action="store_true", help="average over flips and rotations (8× slower)")
    p.add_argument("--refine", action="store_true", help=REFINE_HELP)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    _add_stream_flag(p, measured=True)
    p.add_argument("--flat-field", default=None, metavar="REF",
                   help=FLAT_FIELD_HELP.replace("composition.csv names the reference (column flat_field)",
                                                "summary.json and masks/composition.csv name the reference "
                                                "(key and column flat_field)"))
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

    s = analyse_sections(_model_arg(a.model), a.sections, a.out, samples_csv=a.samples, pixel_size_um=a.pixel_size,
                         require_um=a.um, scale=a.scale, gangue_density=a.gangue_density,
                         tiling=Tiling(tile=a.tile, tta=a.tta),
                         device=a.device, progress=not a.quiet, on_error=report, flatfield=a.flat_field,
                         mosaic_pixels=int(a.stream_from * 1e6), refine=_refine(a))
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
    from lumenkit.data.imageio import check_writable, write_json, write_text
    from lumenkit.evaluation.robustness import PERTURBATIONS, check_perturbations, remedy_table

    check_writable(a.out, folder=False)  # and its .csv beside it
    names = list(PERTURBATIONS) if a.names == "all" else [n.strip() for n in a.names.split(",") if n.strip()]
    try:
        check_perturbations(names)
    except ConfigError as e:
        raise ConfigError(f"--names: {e}") from None
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
    from lumenkit.data.imageio import check_writable

    check_writable(a.out, folder=True, beside=True)  # built beside --out and renamed into place
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
    from lumenkit.data.imageio import check_writable
    from lumenkit.inference.onnx import export_onnx, load_onnx

    check_writable(a.out if a.out is not None else Path(a.onnx).with_suffix(".onnx"), folder=False)
    path = export_onnx(a.onnx, a.out)
    m = load_onnx(path) if _has_onnxruntime() else None
    print(f"wrote {path}" + (f" ({len(m.class_map or [])} classes, scale {m.scale}, checked with ONNX Runtime)"
                             if m is not None else " (onnxruntime not installed: not checked)"))
    return 0


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


# -- convert, import-labels: exchange with QuPath, ImageJ/Fiji and napari ----------------------------------------
IMAGE_NAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
"""Suffixes of the images annotations belong to (``s12.jpg.geojson`` and ``s12.geojson`` both name ``s12``)."""


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="write LumenStone masks as QuPath GeoJSON grains or colour palette PNGs, and "
                                       "an ImageJ/Fiji lookup table",
                       description="Write LumenStone masks for QuPath (--to geojson), as colour PNGs any viewer shows "
                                   "(--to palette), and the ImageJ/Fiji lookup table (--lut). Nothing is written "
                                   "unless every mask converts.")
    p.add_argument("masks", nargs="*", metavar="MASK",
                   help="LumenStone masks (8-bit PNG of class codes): files, or folders whose .png files are taken "
                        "(not their subfolders, so a predict --out folder gives its masks, not its confidence maps)")
    p.add_argument("--to", choices=["geojson", "palette"], default=None,
                   help="geojson: OUT/NAME.geojson, one classified QuPath object per grain (8-connected) with its "
                        "area and perimeter, in full-image pixel coordinates (drop the file onto the image in "
                        "QuPath); palette: OUT/NAME.png, the same codes with the minerals' colours in the PNG palette")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--lut", action="store_true",
                   help="also write OUT/lumenstone.lut, the minerals' colours as an ImageJ/Fiji lookup table for bare "
                        "masks (Image > Lookup Tables > Open LUT...); with no masks, only the lookup table")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="geojson: µm per pixel, to add each grain's area in µm² and perimeter in µm")
    p.add_argument("--annotations", action="store_true",
                   help="geojson: editable QuPath annotations instead of detections (to correct the grains in QuPath "
                        "and bring them back with import-labels)")
    p.add_argument("--full-names", action="store_true",
                   help="geojson: QuPath class names such as chalcopyrite instead of Ccp")
    p.add_argument("--min-area", type=int, default=1, metavar="PX",
                   help="geojson: leave out grains smaller than PX pixels (default 1: every grain)")
    p.set_defaults(func=_run_convert)


def _run_convert(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import check_writable, read_mask, save_palette_mask
    from lumenkit.interop.geojson import write_grains_geojson
    from lumenkit.interop.imagej import write_imagej_lut

    if a.masks and a.to is None:
        raise ConfigError("convert: say what to write the masks as: --to geojson (QuPath) or --to palette (colour PNG)")
    if not a.masks and (a.to is not None or not a.lut):
        raise ConfigError("convert: no masks given; name mask files or folders (or give only --lut for the lookup "
                          "table)")
    if a.pixel_size is not None and not a.pixel_size > 0:
        raise ConfigError(f"--pixel-size must be a positive number of µm per pixel, got {a.pixel_size}")
    out = check_writable(a.out, folder=True)
    files = _input_files(a.masks, (".png",), "LumenStone masks (.png)")
    targets = _output_names(files, out, ".geojson" if a.to == "geojson" else ".png")
    with _all_or_nothing(out, [name for _, name in targets] + (["lumenstone.lut"] if a.lut else [])) as stage:
        for src, name in targets:
            mask = read_mask(src)
            if a.to == "geojson":
                write_grains_geojson(mask, stage / name, object_type="annotation" if a.annotations else "detection",
                                     pixel_size_um=a.pixel_size, name_style="name" if a.full_names else "label",
                                     min_area_px=a.min_area)
            else:
                save_palette_mask(mask, stage / name)
        if a.lut:
            write_imagej_lut(stage / "lumenstone.lut")
    parts = [f"{len(targets)} " + ("GeoJSON file(s)" if a.to == "geojson" else "palette mask(s)")] if targets else []
    parts += ["the ImageJ lookup table lumenstone.lut"] if a.lut else []
    print(f"wrote {' and '.join(parts)} to {out}")
    return 0


def _add_import_labels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-labels", help="turn QuPath GeoJSON annotations or napari labels images into LumenStone "
                                             "masks (unannotated pixels 255)",
                       description="Turn annotations drawn in QuPath (exported as GeoJSON) or napari (a labels layer "
                                   "saved as TIFF/PNG) into LumenStone masks: a pixel whose centre lies inside a "
                                   "classified polygon gets its class code, later objects over earlier ones; "
                                   "unannotated pixels are 255 (ignored in training and scoring). Nothing is written "
                                   "unless every file converts.")
    p.add_argument("annotations", nargs="+", metavar="ANNOTATION",
                   help="QuPath GeoJSON exports (.geojson, .json) and/or napari labels layers saved as .tif or .png: "
                        "files, or folders whose such files are taken (not their subfolders)")
    p.add_argument("--out", required=True,
                   help="output folder: OUT/NAME.png, 8-bit LumenStone codes (the mask of NAME.geojson or NAME.tif)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--image", default=None,
                      help="GeoJSON: the image the annotations were drawn on, for the mask size; or a folder of the "
                           "images, each found by name (s12.jpg/.png/.tif for s12.geojson or s12.jpg.geojson)")
    size.add_argument("--size", type=_mask_size, default=None, metavar="WxH",
                      help="GeoJSON: the mask size in px (the full-resolution image's), instead of --image")
    p.add_argument("--map", default=None, metavar="ID=CLASS,...",
                   help="napari: the class of each label value, e.g. 1=Ccp,2=Py,3=galena (codes, labels or names); "
                        "label 0 becomes 255 (unannotated). Without it, label values must be LumenStone codes "
                        "(0 = background, 255 = unannotated)")
    p.add_argument("--repair", action="store_true",
                   help="GeoJSON: repair invalid (e.g. self-intersecting) polygons with shapely.make_valid instead of "
                        "refusing them")
    p.set_defaults(func=_run_import_labels)


def _run_import_labels(a: argparse.Namespace) -> int:
    from lumenkit.data.imageio import check_writable, image_size, save_image
    from lumenkit.errors import MaskSizeError
    from lumenkit.interop.geojson import read_geojson_mask
    from lumenkit.interop.napari import mask_from_labels_image

    mapping = _label_map(a.map)
    out = check_writable(a.out, folder=True)
    files = _input_files(a.annotations, (".geojson", ".json", ".tif", ".tiff", ".png"),
                         "QuPath GeoJSON (.geojson, .json) or napari labels images (.tif, .png)")
    targets = _output_names(files, out, ".png")
    annotated = total = 0
    with _all_or_nothing(out, [name for _, name in targets]) as stage:
        for src, name in targets:
            try:
                if src.suffix.lower() in (".geojson", ".json"):
                    mask = read_geojson_mask(src, a.size or image_size(_image_of(src, a.image)), repair=a.repair)
                else:
                    mask = mask_from_labels_image(src, mapping)
                    want = a.size or (image_size(_image_of(src, a.image)) if a.image else None)
                    if want is not None and (mask.shape[1], mask.shape[0]) != tuple(want):
                        raise MaskSizeError(f"{src}: labels image is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                            f"{want[0]}x{want[1]}; save the labels layer at the image's size")
            except LumenkitError as e:
                raise _in_cli_words(e) from None
            save_image(mask, stage / name)
            annotated += int((mask != 255).sum())
            total += mask.size
    print(f"wrote {len(targets)} mask(s) to {out}; {annotated / max(total, 1):.1%} of their pixels annotated")
    return 0


def _label_map(text: str | None) -> dict[int, int | str] | None:
    """``--map 1=Ccp,2=4`` as ``{1: "Ccp", 2: 4}`` (a class given by digits is a code)."""
    if text is None:
        return None
    mapping: dict[int, int | str] = {}
    for pair in (t.strip() for t in text.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isdigit() or not value.strip():
            raise ConfigError(f"--map: expected label=class pairs separated by commas, e.g. 1=Ccp,2=Py, got {pair!r}")
        value = value.strip()
        mapping[int(key)] = int(value) if value.isdigit() else value
    return mapping


def _image_of(annotation: Path, image: str | None) -> Path:
    """The image ``annotation`` was drawn on: ``image`` itself, or the file of its name in the folder ``image``."""
    if image is None:
        raise ConfigError(f"{annotation}: a GeoJSON file does not say the image size; give --image (the image, or a "
                          "folder of the images) or --size WxH")
    folder = Path(image)
    if folder.is_file():
        return folder
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such file or folder; give --image the image the annotations were drawn on "
                          "or the folder holding it")
    stem = annotation.name[: -len(annotation.suffix)] if annotation.suffix else annotation.name
    if Path(stem).suffix.lower() in IMAGE_NAME_SUFFIXES and (folder / stem).is_file():
        return folder / stem
    name = _base_name(annotation)
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_NAME_SUFFIXES and f.stem == name:
            return f
    raise ConfigError(f"{annotation}: no image named {name}.jpg, .png or .tif in {folder}; put its image there, or "
                      "give --image FILE or --size WxH")


def _in_cli_words(e: LumenkitError) -> LumenkitError:
    """The library's error with its fix in command-line terms (``--repair``, ``--map``)."""
    text = str(e)
    for lib, cli in (("pass repair=True", "pass --repair"), ("pass mapping={label_id: class}", "pass --map ID=CLASS"),
                     ("add them to mapping", "add them to --map"), (": mapping gives label", ": --map gives label"),
                     (": mapping of label", ": --map of label")):
        text = text.replace(lib, cli)
    return type(e)(text)


def _base_name(path: Path) -> str:
    """The output name of an input: its file name without suffix, nor an image suffix before it (s12.jpg.geojson)."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem[: -len(Path(stem).suffix)] if Path(stem).suffix.lower() in IMAGE_NAME_SUFFIXES else stem


def _input_files(paths: Sequence[str], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Files named directly (any suffix) or found in folders (``suffixes``, not in subfolders, not hidden), once each.

    Raises:
        ConfigError: a path that does not exist, or a folder holding no such file (the message names it).
    """
    files: dict[Path, Path] = {}
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and f.suffix.lower() in suffixes and not f.name.startswith("."))
            if not found:
                raise ConfigError(f"{p}: holds no {what}; give the files, or the folder that holds them")
        elif p.is_file():
            found = [p]
        else:
            raise ConfigError(f"{p}: no such file or folder")
        for f in found:
            files.setdefault(f.resolve(), f)
    return list(files.values())


def _output_names(files: list[Path], out: Path, suffix: str) -> list[tuple[Path, str]]:
    """``(input, output file name)`` per input; refuses two inputs of one name and outputs that would replace inputs.

    Raises:
        ConfigError: naming the files and the fix.
    """
    names: dict[str, Path] = {}
    inputs = {f.resolve() for f in files}
    for f in files:
        name = _base_name(f) + suffix
        if name in names:
            raise ConfigError(f"{f}: would be written to {out / name} like {names[name]}; rename one of them or "
                              "convert them in two runs with different --out")
        names[name] = f
        if (out / name).resolve() in inputs:
            raise ConfigError(f"{out / name}: is an input and would be replaced by an output; choose another --out")
    return [(f, name) for name, f in names.items()]


@contextlib.contextmanager
def _all_or_nothing(out: Path, names: list[str]) -> Iterator[Path]:
    """A hidden folder in ``out`` to write ``names`` into, moved into ``out`` only when every one is written.

    On an error (bad input, Ctrl-C) the hidden folder goes and ``out`` is as before (removed, with the parents made
    for it, if it was made), so a failed run leaves no half of its outputs; each file is moved in with an atomic
    rename.

    Raises:
        OutputPathError: an output name is taken by a folder in ``out`` (checked before any work).
    """
    from lumenkit.errors import OutputPathError

    for name in names:
        if (out / name).is_dir():
            raise OutputPathError(f"{out / name}: is a folder, not a file; move it away or choose another --out")
    import os
    import shutil
    import tempfile

    made = []  # the folders of out's path that do not exist yet, innermost first
    p = out
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".lumenkit-partial-", dir=out))
    except OSError as e:
        raise OutputPathError(f"{out}: cannot write there ({e.strerror or e}); choose another --out",
                              reason=e.strerror or str(e)) from None
    try:
        yield stage
        for name in names:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made:
            if any(folder.iterdir()):
                break
            folder.rmdir()


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_synth, _add_info, _add_evaluate, _add_report, _add_train, _add_predict, _add_analyse, _add_robustness,
    _add_export,
    _add_combine,
    _add_convert, _add_import_labels,
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
    """Parse ``argv`` and run the subcommand.

    Bad input prints ``PROG: error: …`` and returns 2; Ctrl-C returns 130; a reader that closed the output pipe
    (``| head``) returns 141 without a traceback.
    """
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
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): end quietly, as Unix tools do
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no more writes to the closed pipe at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
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
