"""Generate the docs' result tables (``docs/results/NAME.json``) from run outputs, never typed by hand.

    python scripts/results_tables.py published
        docs/results/published.json: the published reference figures and the protocol of each
        (lumenkit.evaluation.reference).
    python scripts/results_tables.py evaluations NAME --title TITLE \\
            --row LABEL EVAL.json "COMMAND" [--row ...]
        docs/results/NAME.json: one row per ``lumenkit evaluate`` JSON: per-class IoU, mean IoU (95 % interval over
        images), pixel accuracy, and the same mean and accuracy with lumenkit's symmetric 2-px void band and, when
        every evaluation has them, under petroscope's protocol (all protocols of the one run); COMMAND is what
        reproduces the row.
    python scripts/results_tables.py benchmark NAME --title TITLE --row LABEL BENCH.json KEY "COMMAND" [--row ...]
            [--replace]
        docs/results/NAME.json: one row per benchmark JSON (its last line), the figure under KEY. With --replace,
        only the rows of the existing table whose COMMAND is one of the new rows' are replaced (in place, the new
        rows of that command in their order); rows of other benchmarks stay as their own runs wrote them.
    python scripts/results_tables.py csv NAME --title TITLE --csv TABLE.csv --command "COMMAND" [--digits 3]
        docs/results/NAME.json: the rows of a CSV a command wrote (e.g. lumenkit-lab refine --out), numbers rounded.
    python scripts/results_tables.py keep VARIANT --runs RUN [RUN ...] --into DIR [--fold-dirs F ...] [--as NAME]
        Copy each fold run's evaluations of VARIANT (val*.json, history.csv: metrics, never weights) into
        DIR/<run folder name>/VARIANT, the dataset's path cut to its name, so the cv tables regenerate anywhere;
        --fold-dirs and --as file them under other fold folders and another variant name (the same variant trained
        on a corrected copy of the dataset, kept beside the original's folds).
    python scripts/results_tables.py cv NAME --title TITLE --folds DIR [DIR ...] \
            --row LABEL VARIANT[:SCORE_LABEL][@PROTOCOL] "COMMAND" [--row ...]
        docs/results/NAME.json: one row per variant pooled over the folds (lumenkit-lab ablation cv, the paper's
        dataset-wide IoU over every validated image), per class, with each fold's mean IoU, how far the best
        epoch (model.pt) leads the last in the folds' history.csv, and the paper's row; @PROTOCOL pools the scores
        under another protocol of the evaluations (petroscope, void_border_2px; petroscope's published row then
        joins the paper's).
    python scripts/results_tables.py again NAME [NAME ...]
        docs/results/NAME.json, a cv, modal or goals table, rebuilt from its kept folds with its own rows (labels,
        sources, commands): after a fold's evaluations or this script changed.
    python scripts/results_tables.py epochs NAME
        Print, for each variant a cv table's rows train, the mean over its folds of the per-epoch validation mean IoU
        at the best epoch and at the last (history.csv) and of the kept evaluation (val.json): what the pick and the
        evaluation's windows each add.
    python scripts/results_tables.py modal NAME --title TITLE --folds DIR [DIR ...] \
            --row LABEL VARIANT[:SCORE_LABEL] "COMMAND" [--row ...]
        docs/results/NAME.json: what each variant does to modal mineralogy over the folds' validation images: per
        class the mean absolute error of its area % per image (percentage points,
        lumenkit.evaluation.evaluate.modal_errors), their mean, and the largest single error (image, class).
    python scripts/results_tables.py goals NAME --title TITLE \
            --goal LABEL FOLD,FOLD,... VARIANT[:SCORE_LABEL] MEASURE TARGET "COMMAND" [--goal ...]
        docs/results/NAME.json: each goal against the pooled cross-validation of the folds' kept evaluations:
        MEASURE is mean_iou, pixel_accuracy, a class code (its IoU) or paper (every class at or above the paper's
        test figure; TARGET is then ignored, write -); a variant the folds do not hold yet is "not measured yet",
        so `again NAME` fills it in once its evaluations are kept.
    python scripts/results_tables.py label-efficiency NAME --title TITLE --csv TABLE.csv
        docs/results/NAME.json: the table `lumenkit-lab label-efficiency --out TABLE.csv` wrote, each row with the
        command (train && evaluate) that reproduces it.

The MkDocs hook (docs/hooks/lumenkit_docs.py) renders each table where a page says ``<!-- table: NAME -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _f(v: float | None, digits: int = 2) -> str:
    return "–" if v is None or v != v else f"{v:.{digits}f}"


def published() -> dict:
    from lumenkit.evaluation.reference import reference_table

    table = reference_table(protocols=True)
    classes = [c for c in table.columns if c not in ("mean_iou", "pixel_accuracy", "protocol")]
    rows = []
    for name, r in table.iterrows():
        rows.append({"command": 'python -c "import lumenkit.evaluation as e; print(e.reference_table(protocols=True))"'
                                "  # published, not recomputed",
                     "cells": [name, *(_f(r[c]) for c in classes), _f(r["mean_iou"], 3), _f(r["pixel_accuracy"], 3),
                               f"`{r['protocol']}`"]})
    return {"title": "Published figures and the protocol each was scored under", "columns": [
        "", *classes, "mean IoU", "pixel acc.", "protocol"], "rows": rows}


def evaluations(title: str, specs: list[list[str]]) -> dict:
    """One row per ``lumenkit evaluate`` JSON, with its scores under the symmetric 2-px void band and, when every
    evaluation has them, under petroscope's protocol (evaluations written before it existed do not)."""
    docs, classes = [], None
    for label, path, command in specs:
        ev = json.loads(Path(path).read_text())
        iou = ev["per_class_iou"]
        classes = classes or list(iou)
        if list(iou) != classes:
            raise SystemExit(f"{path}: classes {list(iou)} differ from the first row's {classes}")
        docs.append((label, command, ev))
    with_petroscope = bool(docs) and all("petroscope" in ev.get("protocols", {}) for _, _, ev in docs)
    rows = []
    for label, command, ev in docs:
        lo, hi = ev.get("mean_iou_ci95", [None, None])
        protocols = ev.get("protocols", {})
        void, petro = protocols.get("void_border_2px", {}), protocols.get("petroscope", {})
        rows.append({"command": command, "cells": [
            label, *(_f(ev["per_class_iou"][c]) for c in classes), f"{_f(ev['mean_iou'], 3)} ({_f(lo)}–{_f(hi)})",
            _f(ev["pixel_accuracy"], 3), _f(void.get("mean_iou"), 3), _f(void.get("pixel_accuracy"), 3),
            *([_f(petro.get("mean_iou"), 3), _f(petro.get("pixel_accuracy"), 3)] if with_petroscope else [])]})
    return {"title": title, "columns": ["", *(classes or []), "mean IoU (95 % interval)", "pixel acc.",
                                        "mean IoU, 2-px void border", "pixel acc., 2-px void border",
                                        *(["mean IoU, petroscope's protocol", "pixel acc., petroscope's protocol"]
                                          if with_petroscope else [])], "rows": rows}


def benchmark(title: str, specs: list[list[str]]) -> dict:
    rows = []
    for label, path, key, command in specs:
        last = Path(path).read_text().strip().splitlines()[-1]
        value = json.loads(last)
        for part in key.split("."):
            value = value[part]
        rows.append({"command": command, "cells": [label, str(value)]})
    return {"title": title, "columns": ["", "value"], "rows": rows}


def replace_rows(old: dict, new: dict) -> dict:
    """``old`` with its rows of the commands ``new`` ran replaced by ``new``'s rows of each command, in place."""
    fresh: dict[str, list[dict]] = {}
    for row in new["rows"]:
        fresh.setdefault(row["command"], []).append(row)
    rows, done = [], set()
    for row in old["rows"]:
        cmd = row["command"]
        if cmd not in fresh:
            rows.append(row)
        elif cmd not in done:
            rows.extend(fresh[cmd])
            done.add(cmd)
    rows.extend(r for cmd, rs in fresh.items() if cmd not in done for r in rs)
    return {**old, "title": new["title"], "rows": rows}


def from_csv(title: str, path: str, command: str, digits: int) -> dict:
    import pandas as pd

    df = pd.read_csv(path)
    rows = [{"command": command, "cells": [_f(v, digits) if isinstance(v, float) else str(v) for v in r.values()]}
            for r in df.to_dict("records")]
    return {"title": title, "columns": list(df.columns), "rows": rows}


def label_efficiency(title: str, path: str) -> dict:
    import pandas as pd

    df = pd.read_csv(path)
    classes = [c for c in df.columns if c.startswith("iou_")]
    rows = []
    for r in df.to_dict("records"):  # not itertuples: it renames columns such as iou_Py/Mrc
        start = "from scratch" if r["start"] == "scratch" else f"fine-tuned from `{r['start']}`"
        start += f", {r['freeze']} frozen" if r.get("freeze", "none") != "none" else ""
        labels = "whole masks" if r["labels"] == "whole masks" else f"strokes, {r['labelled_pct']:.2g} % of pixels"
        budget = f"{r['budget_min']:g} min" if r["budget_min"] == r["budget_min"] else "fixed epochs"
        rows.append({"command": r["command"], "cells": [
            f"{labels}, {start}", f"{r['scale']:g}", budget, f"{r['epochs']} ({int(r['best_epoch'])})",
            *(_f(r[c]) for c in classes),
            f"{_f(r['mean_iou'], 3)} ({_f(r['ci_lo'])}–{_f(r['ci_hi'])})", _f(r["last_epoch_miou"], 3),
            _f(r["pixel_accuracy"], 3),
            f"{100 * r['of_reference']:.0f} %" if "of_reference" in r else "–"]})
    return {"title": title, "columns": ["", "scale", "budget", "epochs (best)", *(c[4:] for c in classes),
                                        "mean IoU (95 % interval)", "last epoch's mean IoU", "pixel acc.",
                                        "of the reference"], "rows": rows}


def keep(runs: list[str], variant: str, into: str, name: str | None = None,
         fold_dirs: list[str] | None = None) -> list[Path]:
    """Copy each fold's evaluations of ``variant`` (``val*.json``, ``history.csv``) into ``INTO/<run folder name>``.

    ``name`` files them under another variant name (a variant trained on another dataset, e.g. a corrected copy,
    kept beside the original's runs of the same fold), ``fold_dirs`` the fold folders under ``into`` (default each
    run's folder name). Metrics only (confusion matrices, per-image scores, the training curve), never weights or
    predictions; the dataset's absolute path is cut to its folder name, so the copies name no machine.
    """
    if fold_dirs is not None and len(fold_dirs) != len(runs):
        raise SystemExit(f"--fold-dirs names {len(fold_dirs)} folders for {len(runs)} runs")
    kept = []
    for k, run in enumerate(runs):
        src = Path(run) / variant
        files = sorted(src.glob("val*.json"))
        if not files:
            raise SystemExit(f"{src}: no val*.json; run `lumenkit-lab ablation run {variant} ...` there first")
        dst = Path(into) / (fold_dirs[k] if fold_dirs else Path(run).name) / (name or variant)
        dst.mkdir(parents=True, exist_ok=True)
        for f in files:
            doc = json.loads(f.read_text())
            if doc.get("data"):
                doc["data"] = Path(doc["data"]).name
            if name and doc.get("variant") == variant:  # kept under another name: say which variant was trained
                doc["variant"], doc["trained_as"] = name, variant
            (dst / f.name).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            kept.append(dst / f.name)
        if (src / "history.csv").exists():
            (dst / "history.csv").write_bytes((src / "history.csv").read_bytes())
            kept.append(dst / "history.csv")
    return kept


def _in_repo(path: str) -> str:
    """``path`` relative to the repository where it lies inside it, so a table names no machine."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def _val_miou(path: Path) -> pd.Series:
    """The per-epoch validation mean IoU of one ``history.csv``, its last epoch validated.

    Raises:
        SystemExit: the history has no epochs, or its last epoch has no validation score (the best epoch's lead
            over it is unknown).
    """
    import pandas as pd

    miou = pd.read_csv(path)["val_miou"]
    if miou.empty or miou.isna().all():
        raise SystemExit(f"{path}: no validated epoch; keep the fold's history.csv of a finished run")
    if pd.isna(miou.iloc[-1]):
        raise SystemExit(f"{path}: the last epoch has no validation score, so the best epoch's lead over it is "
                         "unknown; rerun the table from a history whose every epoch was validated")
    return miou


def _table_path(name: str) -> Path:
    """``docs/results/NAME.json`` for ``NAME``, ``NAME.json`` or its path; SystemExit when there is no such table."""
    path = RESULTS / f"{Path(name).name.removesuffix('.json')}.json"
    if not path.exists():
        raise SystemExit(f"{path}: no such table; name one of docs/results/*.json")
    return path


def _best_epoch_lead(folds: list[str], variant: str) -> str:
    """How much choosing ``model.pt`` by validation flatters: the best epoch's validation mean IoU minus the last
    epoch's, from each fold's kept ``history.csv``, averaged over folds.

    The figure is the training's own per-epoch validation, which scores the same images as the evaluation; the
    model scored in the row is the best epoch's, chosen on those images, so the row sits about this much above what
    a fixed number of epochs, chosen in advance, would score. A row scoring a variant otherwise (``VARIANT:LABEL``:
    refined, with TTA) shows its training's lead; an ensemble's row shows each member's (``+a / +b``), as each
    member is its own best epoch; ``–`` when no fold kept a history.
    """
    from lumenkit.lab.ablation import VARIANTS

    spec = VARIANTS.get(variant)
    if spec is not None and spec.uses:  # scores another variant's model (or an ensemble of several)
        return " / ".join(_best_epoch_lead(folds, member) for member in (spec.uses, *spec.also))
    paths = [Path(fold) / variant / "history.csv" for fold in folds]
    if not any(p.exists() for p in paths):
        return "–"
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"{missing[0]}: missing while other folds keep theirs; keep every fold's history.csv "
                         "(results_tables.py keep)")
    leads = [float(m.max() - m.iloc[-1]) for m in map(_val_miou, paths)]
    return f"+{sum(leads) / len(leads):.3f}"


def _classes(df: pd.DataFrame) -> list[str]:
    """The per-class IoU columns of :func:`lumenkit.lab.ablation.crossval`'s table, in its order."""
    return [c for c in df.columns if c not in (
        "row", "fold", "run", "images", "mean_iou", "ci_low", "ci_high", "pixel_accuracy")]


def _source(which: str, protocols: bool = False) -> tuple[str, str, str]:
    """``VARIANT[:SCORE_LABEL][@PROTOCOL]`` as ``(variant, score_label, protocol)`` ("" where not given).

    Raises:
        SystemExit: ``@PROTOCOL`` where the table does not support it (``protocols`` false).
    """
    named, at, protocol = which.partition("@")
    if at and not protocols:
        raise SystemExit(f"{which!r}: only cv tables pool a variant under another protocol (@PROTOCOL)")
    variant, _, scored = named.partition(":")
    return variant, scored, protocol


def cv(title: str, folds: list[str], specs: list[list[str]]) -> dict:
    """Pooled cross-validation rows (``lumenkit-lab ablation cv`` over ``folds``), one per
    VARIANT[:LABEL][@PROTOCOL], and the paper's row when the classes are the paper's (S1's; no figure is published
    per class for S2's); with a row under petroscope's protocol, petroscope's published row under it too.

    A row with ``@PROTOCOL`` pools the folds' scores under that protocol of their evaluations (``lumenkit-lab
    ablation cv --protocol``); those keep no per-image matrices, so the row has no interval."""
    from lumenkit.evaluation.reference import PUBLISHED_PROTOCOLS, reference_table
    from lumenkit.lab.ablation import crossval

    rows, classes, protocols = [], None, set()
    for label, which, command in specs:
        variant, scored, protocol = _source(which, protocols=True)
        protocols.add(protocol or "all_pixels")
        with warnings.catch_warnings():  # kept copies name the dataset, not its path: coverage cannot be checked
            warnings.filterwarnings("ignore", message=".*cannot check that folds.*")
            df = crossval(folds, variant, label=scored or None, n_boot=1000, protocol=protocol or None)
        fold_rows = df[df["fold"].notna()]
        pooled = df[df["fold"].isna()].iloc[0]
        classes = classes or _classes(df)
        per_fold = " / ".join(_f(v, 3) for v in fold_rows["mean_iou"])
        interval = f" ({_f(pooled['ci_low'])}–{_f(pooled['ci_high'])})" if pooled["ci_low"] == pooled["ci_low"] else ""
        rows.append({"command": command, "source": which, "cells": [
            label, str(int(pooled["images"])), *(_f(pooled[c]) for c in classes),
            f"{_f(pooled['mean_iou'], 3)}{interval}", _f(pooled["pixel_accuracy"], 3), per_fold,
            _best_epoch_lead(folds, variant)]})
    published = reference_table()
    classes = classes or []
    if classes == [c for c in published.columns if c not in ("mean_iou", "pixel_accuracy")]:  # S2: none published
        shown = ({"paper (ResUNet, 50 epochs, GPU; S1 v1 test)": "paper (S1 v1 **test**)"}
                 if "all_pixels" in protocols else {})
        if "petroscope" in protocols:
            shown |= {name: f"{name} (its protocol: `petroscope`)" for name, p in PUBLISHED_PROTOCOLS.items()
                      if p == "petroscope"}
        for name, shown_as in shown.items():
            ref = published.loc[name]
            rows.append({"command": 'python -c "import lumenkit.evaluation as e; print(e.reference_table())"'
                                    "  # published, not recomputed",
                         "cells": [shown_as, "", *(_f(ref[c]) for c in classes),
                                   _f(ref["mean_iou"], 3), _f(ref["pixel_accuracy"], 3), "", ""]})
    return {"title": title, "folds": [_in_repo(f) for f in folds],
            "columns": ["", "images", *classes, "mean IoU (95 % interval)", "pixel acc.", "per-fold mean IoU",
                        "best epoch's lead"],
            "rows": rows}


def modal(title: str, folds: list[str], specs: list[list[str]]) -> dict:
    """Area-% errors per image (``modal_errors`` of each fold's evaluation), one row per VARIANT[:LABEL]."""
    import pandas as pd

    from lumenkit.evaluation.evaluate import modal_errors, summarise_modal_errors

    rows, classes = [], None
    for label, which, command in specs:
        variant, scored, _ = _source(which)
        file = f"val_{scored}.json" if scored else "val.json"
        df = pd.concat([modal_errors(Path(f) / variant / file) for f in folds], ignore_index=True)
        summary = summarise_modal_errors(df)
        classes = classes or list(summary["per_mineral"].index)
        worst = summary["worst"]
        rows.append({"command": command, "source": which, "cells": [
            label, str(df["image"].nunique()), *(_f(summary["per_mineral"][c]) for c in classes),
            _f(summary["mean_abs_pp"]),
            f"{worst['error_pp']:+.1f} ({worst['mineral']} in {worst['image']})"]})
    return {"title": title, "kind": "modal", "folds": [_in_repo(f) for f in folds],
            "columns": ["", "images", *(classes or []), "mean", "largest error (pp)"], "rows": rows}


def _below(value: float, target: float) -> str:
    """``value`` (under ``target``) printed so that it reads under: three decimals, or, where those round up to
    the target, four cut (not rounded) ones: 0.8597 against 0.86 is "0.8597", not "0.860"."""
    if round(value, 3) < target:
        return f"{value:.3f}"
    return f"{math.floor(value * 1e4) / 1e4:.4f}"


GOAL_MEASURES = ("mean_iou", "pixel_accuracy", "paper")
"""What a goal row can measure besides one class's IoU (its code)."""


def goals(title: str, specs: list[list[str]]) -> dict:
    """One row per goal: the target, the pooled figure the kept folds give, how far short it falls, met or not.

    Each spec is ``[LABEL, FOLDS, VARIANT[:SCORE_LABEL], MEASURE, TARGET, COMMAND]``, FOLDS comma-separated kept fold
    folders. The figures are :func:`lumenkit.lab.ablation.crossval`'s pooled row, unrounded until printed (three
    decimals), so a goal missed by less than the table's rounding still reads as missed ("< 0.001"). A variant not
    kept in every fold reads "not measured yet" (with how many folds are kept, when some are).

    Raises:
        SystemExit: an unknown MEASURE (neither one of :data:`GOAL_MEASURES` nor a class code of the catalogue, or
            not a class of the folds once measured), a TARGET that is not a number where one is needed, or
            ``paper`` on folds whose classes the paper (S1's) does not cover.
    """
    import pandas as pd

    from lumenkit.data.catalogue import CLASS_SETS, labels_for
    from lumenkit.evaluation.reference import reference_table
    from lumenkit.lab.ablation import crossval

    paper = reference_table().loc["paper (ResUNet, 50 epochs, GPU; S1 v1 test)"]
    codes = sorted({c for s in CLASS_SETS.values() for c in labels_for(s)})
    named = {"mean_iou": "mean IoU", "pixel_accuracy": "pixel accuracy"}
    pooled_by: dict[tuple[tuple[str, ...], str], tuple[pd.Series, list[str]]] = {}
    rows = []
    for label, folds_text, which, measure, target_text, command in specs:
        folds = [_in_repo(f) for f in folds_text.split(",") if f]
        variant, scored, _ = _source(which)
        file = f"val_{scored}.json" if scored else "val.json"
        if measure not in GOAL_MEASURES and measure not in codes:
            raise SystemExit(f"goal {label!r}: unknown measure {measure!r}; choose from "
                             f"{', '.join(GOAL_MEASURES)} or a class code ({', '.join(codes)})")
        if measure != "paper":
            try:
                target = float(target_text)
            except ValueError:
                raise SystemExit(f"goal {label!r}: target {target_text!r} is not a number (e.g. 0.86)") from None
        goal = ("every class at or above the paper's test IoU" if measure == "paper"
                else f"{named.get(measure, f'{measure} IoU')} ≥ {target_text}")
        cells = [label, goal]
        kept = sum((ROOT / f / variant / file).exists() for f in folds)
        if kept < len(folds):
            state = f"not measured yet ({kept} of {len(folds)} folds kept)" if kept else "not measured yet"
            rows.append({"command": command, "source": which, "folds": folds, "measure": measure,
                         "target": target_text, "cells": [*cells, state, "", "–"]})
            continue
        key = (tuple(folds), which)
        if key not in pooled_by:  # several goals read one pooled row: pool it once
            with warnings.catch_warnings():  # kept copies name the dataset, not its path: coverage not checkable
                warnings.filterwarnings("ignore", message=".*cannot check that folds.*")
                df = crossval([str(ROOT / f) for f in folds], variant, label=scored or None, n_boot=0)
            pooled_by[key] = (df[df["fold"].isna()].iloc[0], _classes(df))
        pooled, classes = pooled_by[key]
        if measure == "paper":
            uncovered = [c for c in classes if c not in paper.index or pd.isna(paper[c])]
            if uncovered:
                raise SystemExit(f"goal {label!r}: the paper's figures are S1's; the folds' classes "
                                 f"{', '.join(uncovered)} have none")
            under = [c for c in classes if not pooled[c] >= paper[c]]  # a class absent from the folds: under
            measured = f"{len(classes) - len(under)} of {len(classes)} classes"
            short = ", ".join(f"{c} absent" if pooled[c] != pooled[c] else f"{c} {_below(pooled[c], paper[c])} < "
                              f"{paper[c]:.2f}" for c in under)
            met = not under
        else:
            if measure not in GOAL_MEASURES and measure not in classes:
                raise SystemExit(f"goal {label!r}: {measure!r} is not a class of these folds; choose from "
                                 f"{', '.join(GOAL_MEASURES)} or {', '.join(classes)}")
            value = float(pooled[measure])
            if value != value:  # a class the folds' ground truth does not hold
                measured, met, short = "not in the folds' ground truth", False, ""
            else:
                measured, met = f"{value:.3f}", value >= target
                short = "" if met else f"{target - value:.3f}" if target - value >= 0.0005 else "< 0.001"
        rows.append({"command": command, "source": which, "folds": folds, "measure": measure, "target": target_text,
                     "cells": [*cells, measured, short, "yes" if met else "no"]})
    return {"title": title, "kind": "goals",
            "columns": ["", "goal", "measured (pooled over the folds)", "short by", "met"], "rows": rows}


def epochs(table: dict) -> pd.DataFrame:
    """Per trained variant of a cv table: the fold-mean validation mean IoU at the best and the last epoch
    (``history.csv``) and the fold-mean of the kept evaluation (``val.json``), three decimals."""
    import pandas as pd

    rows = {}
    for r in table["rows"]:
        variant = _source(r.get("source", ""), protocols=True)[0]
        paths = [ROOT / f / variant for f in table.get("folds", [])]
        if not variant or variant in rows or not all((p / "history.csv").exists() for p in paths):
            continue
        hist = [_val_miou(p / "history.csv") for p in paths]
        ev = [json.loads((p / "val.json").read_text(encoding="utf-8"))["mean_iou"] if (p / "val.json").exists()
              else float("nan") for p in paths]  # not evaluated yet: NaN
        rows[variant] = {"best_epoch": sum(h.max() for h in hist) / len(hist),
                         "last_epoch": sum(h.iloc[-1] for h in hist) / len(hist),
                         "evaluation": sum(ev) / len(ev)}
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def again(table: dict) -> dict:
    """A cross-validation (``cv``), ``modal`` or ``goals`` table rebuilt from its kept fold evaluations with its own
    rows' labels, sources and commands (after the evaluations or this script changed); other tables are refused."""
    if table.get("kind") == "goals":
        return goals(table["title"], [[r["cells"][0], ",".join(r["folds"]), r["source"], r["measure"], r["target"],
                                       r["command"]] for r in table["rows"]])
    if "folds" not in table:
        raise SystemExit(f"table {table.get('title')!r} keeps no folds: rerun the command that made it")
    sourceless = [r["cells"][0] for r in table["rows"] if "source" not in r and "reference_table" not in r["command"]]
    if sourceless or not any("source" in r for r in table["rows"]):
        which = f"row {sourceless[0]!r} names" if sourceless else "no row names"
        raise SystemExit(f"table {table.get('title')!r}: {which} the variant it was made from (written before rows "
                         "kept their source): rerun the cv/modal command that made it")
    specs = [[r["cells"][0], r["source"], r["command"]] for r in table["rows"] if "source" in r]
    make = modal if table.get("kind") == "modal" else cv
    return make(table["title"], [str(ROOT / f) for f in table["folds"]], specs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", required=True)
    sub.add_parser("published")
    ev = sub.add_parser("evaluations")
    ev.add_argument("name")
    ev.add_argument("--title", required=True)
    ev.add_argument("--row", nargs=3, action="append", required=True, metavar=("LABEL", "EVAL_JSON", "COMMAND"))
    bench = sub.add_parser("benchmark")
    bench.add_argument("name")
    bench.add_argument("--title", required=True)
    bench.add_argument("--row", nargs=4, action="append", required=True, metavar=("LABEL", "JSON", "KEY", "COMMAND"))
    bench.add_argument("--replace", action="store_true",
                       help="replace only the existing table's rows of these rows' commands")
    csv = sub.add_parser("csv")
    csv.add_argument("name")
    csv.add_argument("--title", required=True)
    csv.add_argument("--csv", required=True)
    csv.add_argument("--command", required=True)
    csv.add_argument("--digits", type=int, default=3)
    le = sub.add_parser("label-efficiency")
    le.add_argument("name")
    le.add_argument("--title", required=True)
    le.add_argument("--csv", required=True)
    kp = sub.add_parser("keep")
    kp.add_argument("variant")
    kp.add_argument("--runs", nargs="+", required=True)
    kp.add_argument("--into", required=True)
    kp.add_argument("--fold-dirs", nargs="+", help="the fold folder names under INTO (default: each run's name)")
    kp.add_argument("--as", dest="name", help="the variant's name under INTO (default: VARIANT)")
    cvp = sub.add_parser("cv")
    cvp.add_argument("name")
    cvp.add_argument("--title", required=True)
    cvp.add_argument("--folds", nargs="+", required=True)
    cvp.add_argument("--row", nargs=3, action="append", required=True, metavar=("LABEL", "VARIANT[:LABEL]", "COMMAND"))
    mp = sub.add_parser("modal")
    mp.add_argument("name")
    mp.add_argument("--title", required=True)
    mp.add_argument("--folds", nargs="+", required=True)
    mp.add_argument("--row", nargs=3, action="append", required=True, metavar=("LABEL", "VARIANT[:LABEL]", "COMMAND"))
    gp = sub.add_parser("goals")
    gp.add_argument("name")
    gp.add_argument("--title", required=True)
    gp.add_argument("--goal", nargs=6, action="append", required=True,
                    metavar=("LABEL", "FOLDS", "VARIANT[:LABEL]", "MEASURE", "TARGET", "COMMAND"))
    ag = sub.add_parser("again")
    ag.add_argument("names", nargs="+")
    ep = sub.add_parser("epochs")
    ep.add_argument("name")
    a = p.parse_args(argv)
    if a.kind == "epochs":
        print(epochs(json.loads(_table_path(a.name).read_text(encoding="utf-8"))).to_string())
        return 0
    if a.kind == "again":
        from lumenkit.data.imageio import atomic_write

        for name in a.names:
            out = _table_path(name)
            table = again(json.loads(out.read_text(encoding="utf-8")))
            with atomic_write(out, "w") as f:
                f.write(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
            print(f"wrote {out.relative_to(ROOT)} again")
        return 0
    if a.kind == "keep":
        kept = keep(a.runs, a.variant, a.into, a.name, a.fold_dirs)
        print(f"kept {len(kept)} files under {a.into}")
        return 0
    if a.kind == "published":
        name, table = "published", published()
    elif a.kind == "evaluations":
        name, table = a.name, evaluations(a.title, a.row)
    elif a.kind == "label-efficiency":
        name, table = a.name, label_efficiency(a.title, a.csv)
    elif a.kind == "cv":
        name, table = a.name, cv(a.title, a.folds, a.row)
    elif a.kind == "goals":
        name, table = a.name, goals(a.title, a.goal)
    elif a.kind == "modal":
        name, table = a.name, modal(a.title, a.folds, a.row)
    elif a.kind == "csv":
        name, table = a.name, from_csv(a.title, a.csv, a.command, a.digits)
    else:
        name, table = a.name, benchmark(a.title, a.row)
    out = RESULTS / f"{name}.json"
    if getattr(a, "replace", False) and out.exists():
        table = replace_rows(json.loads(out.read_text(encoding="utf-8")), table)
    out.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)} ({len(table['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
