"""Command-line interface: ``lumenkit synth | info | report | ...`` (bad input → one line, exit code 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .errors import LumenkitError

Handler = Callable[[argparse.Namespace], int]


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
    from .synth import write_dataset

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
    from .data import LumenStoneDataset, list_splits, pixel_shares

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
    from .pipeline import run_report

    result = run_report(a.params, out=a.out)
    print(f"report: {result.index}")
    return 0 if result.ok else 1


# -- evaluate -------------------------------------------------------------------------------------
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
    p.add_argument("--n-val", type=int, default=10, help="validation images carved from train (split val/fit)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(a: argparse.Namespace) -> int:
    from .evaluate import evaluate, write_evaluation

    ev = evaluate(a.data, a.model, split=a.split, scale=a.scale, void_border_px=a.void_border, tta=a.tta,
                  baselines=not a.no_baselines, n_val=a.n_val, seed=a.seed, save_masks=a.save_masks)
    write_evaluation(ev, a.out)
    s = ev.scores
    print(f"{a.split}: mean IoU {s.mean_iou:.3f}, pixel accuracy {s.pixel_accuracy:.3f} "
          + " ".join(f"{lab} {v:.2f}" for lab, v in zip(s.labels, s.iou)))
    for name, b in ev.baselines.items():
        print(f"  baseline {name}: mean IoU {b.mean_iou:.3f}")
    print(f"wrote {a.out}")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_synth, _add_info, _add_evaluate, _add_report]


def build_parser() -> argparse.ArgumentParser:
    """The ``lumenkit`` argument parser with every subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="lumenkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lumenkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a subcommand; bad input prints ``lumenkit: error: …`` and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LumenkitError as e:
        print(f"lumenkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lumenkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
