import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import write_fake_dataset

from lumenkit.data.datasets import LumenStoneDataset, ValidationSplit
from lumenkit.errors import ConfigError
from lumenkit.inference.refine import Refine
from lumenkit.lab.ablation import (
    BASE,
    VARIANTS,
    VariantInterrupted,
    ablation_table,
    crossval,
    crossval_markdown,
    run_variant,
    score_variant,
    to_markdown,
    variant_config,
)
from lumenkit.lab.cli import main

SMALL = dict(width=4, depth=2, patch_size=32, batch_size=4, patches_per_epoch=16, n_val=2, val_tile=64,
             val_margin=8, threads=1, epochs=1, minutes=None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("abl") / "fake", n_train=6, size=(96, 64))


def test_variants_change_only_what_they_say():
    base = variant_config("paper", "D", "R")
    got = (base.schedule, base.sampler, base.minutes, base.width, base.scale)
    assert got == ("plateau", "balanced", 45.0, 16, 0.25)
    for name, v in VARIANTS.items():
        if v.uses:
            continue
        cfg = variant_config(name, "D", "R")
        assert cfg.out.endswith(name)
        diff = {k for k in v.train if getattr(cfg, k) != getattr(base, k)}
        assert diff == set(v.train), name  # every declared change is real, nothing else moved
    with pytest.raises(ConfigError, match=r"unknown ablation variant 'huge'.*uniform"):
        variant_config("huge", "D", "R")
    with pytest.raises(ConfigError, match="trains nothing"):
        variant_config("tta", "D", "R")


def test_an_interrupted_variant_is_not_evaluated_and_resumes(data, tmp_path, monkeypatch):
    import os
    import signal

    import lumenkit.training.loop

    real, runs = lumenkit.training.loop.train, tmp_path / "runs"

    def interrupted_train(cfg, **kw):  # SIGINT in the middle of the second epoch, as Ctrl-C would
        def stop(info):
            if info["step"] == 6:
                os.kill(os.getpid(), signal.SIGINT)

        return real(cfg, on_step=stop, **kw)

    monkeypatch.setattr(lumenkit.training.loop, "train", interrupted_train)
    with pytest.raises(VariantInterrupted, match=r"uniform.*interrupted.*again to resume"):
        run_variant("uniform", data, runs, **{**SMALL, "epochs": 3})
    assert (runs / "uniform" / "last.pt").exists() and not (runs / "uniform" / "val.json").exists()
    monkeypatch.setattr(lumenkit.training.loop, "train", real)
    d = run_variant("uniform", data, runs, **{**SMALL, "epochs": 3})
    assert d["variant"] == "uniform"
    assert list(pd.read_csv(runs / "uniform" / "history.csv")["epoch"]) == [1, 2, 3]  # resumed, not restarted

    def raise_interrupted(*a, **kw):
        raise VariantInterrupted("R/uniform: interrupted")

    monkeypatch.setattr("lumenkit.lab.ablation.run_variant", raise_interrupted)
    assert main(["ablation", "run", "uniform", "--data", str(data), "--runs", str(runs), "--quiet"]) == 130


def test_run_table_and_resumption(data, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"no model\.pt.*ablation run paper"):
        run_variant("tta", data, runs, **SMALL)
    d = run_variant("uniform", data, runs, **SMALL)
    assert d["variant"] == "uniform" and 0 <= d["mean_iou"] <= 1
    assert "sampler: uniform" in (runs / "uniform" / "config.yaml").read_text()
    mtime = (runs / "uniform" / "last.pt").stat().st_mtime_ns
    run_variant("uniform", data, runs, **SMALL)  # finished: evaluated again, not retrained
    assert (runs / "uniform" / "last.pt").stat().st_mtime_ns == mtime
    run_variant("paper", data, runs, **SMALL)
    t = run_variant("tta", data, runs, **SMALL)
    assert t["tta"] and not json.loads((runs / "paper" / "val.json").read_text())["tta"]
    df = ablation_table(runs)
    assert list(df["variant"]) == list(VARIANTS)
    done = df.set_index("variant")
    assert done.loc["uniform", "mean_iou"] == pytest.approx(d["mean_iou"])
    assert done.loc["tta", "epochs"] == 1 and np.isnan(done.loc["width64", "mean_iou"])
    assert done.loc["uniform", "best_epoch"] == 1 and 0 <= done.loc["uniform", "last_miou"] <= 1
    assert np.isnan(done.loc["tta", "last_miou"])  # an evaluation-only row has no training curve of its own
    md = to_markdown(df)
    assert md.count("not run") == len(VARIANTS) - 3 and f"{d['mean_iou']:.3f}" in md
    assert "not run" not in to_markdown(df, only_run=True) and to_markdown(df, only_run=True).count("\n") == 2 + 3
    # a run that has trained but is not evaluated yet (still training, or stopped) says how far it got
    (runs / "width64").mkdir()
    (runs / "width64" / "history.csv").write_text("epoch,val_miou,seconds\n1,0.41,600\n2,0.52,630\n")
    (runs / "width64" / "config.yaml").write_text("epochs: 30\nminutes: null\n")
    assert "| unfinished: 2 of 30 epochs |" in to_markdown(ablation_table(runs))
    (runs / "width64" / "config.yaml").write_text("epochs: null\nminutes: 45\n")
    assert ablation_table(runs).set_index("variant").loc["width64", "status"] == "unfinished: 20 of 45 minutes"


def test_score_on_another_split_adds_a_row(data, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"no trained model.*ablation run uniform"):
        score_variant("uniform", data, runs, "S1")
    run_variant("uniform", data, runs, **SMALL)
    with pytest.raises(ConfigError, match="label"):
        score_variant("uniform", data, runs, "../x")
    # on its own dataset a run is scored on its own split only (any other holds images it trained on) ...
    with pytest.raises(ConfigError, match="would score images it trained on"):
        score_variant("uniform", data, runs, "wide", validation=ValidationSplit(4, 1))
    own = score_variant("uniform", data, runs, "own", refine=Refine())
    assert (own["images"], own["val_fold"], own["refine"]) == (2, 0, {"radius": 2, "eps": 1e-3})
    # ... and on another dataset on the split asked for (here a copy: another folder)
    other = shutil.copytree(data, tmp_path / "wide_copy")
    d = score_variant("uniform", other, runs, "wide", validation=ValidationSplit(4, 1))
    assert d["images"] == 4 and d["val_seed"] == 1 and d["scored_on"] == "wide" and d["refine"] is None
    assert (runs / "uniform" / "val_wide.json").exists()
    stray = {k: v for k, v in d.items() if k != "scored_on"}  # e.g. a TTA evaluation saved beside the run
    (runs / "uniform" / "val_tta.json").write_text(json.dumps(stray))
    df = ablation_table(runs).set_index("variant")
    names = list(df.index)
    assert names[names.index("uniform") + 1 :][:2] == ["uniform on own", "uniform on wide"]
    assert "uniform on tta" not in names
    row = df.loc["uniform on wide"]
    assert row["mean_iou"] == pytest.approx(d["mean_iou"]) and row["images"] == 4 and np.isnan(row["last_miou"])
    assert df.loc["uniform", "images"] == 2 and row["epochs"] == df.loc["uniform", "epochs"]
    doc = json.loads((runs / "uniform" / "val_wide.json").read_text())
    absent = doc["class_order"][-1]
    doc["confusion"] = [r if i < len(doc["class_order"]) - 1 else [0] * len(r) for i, r in enumerate(doc["confusion"])]
    (runs / "uniform" / "val_wide.json").write_text(json.dumps(doc))
    assert np.isnan(ablation_table(runs).set_index("variant").loc["uniform on wide", absent])


def test_cli(data, tmp_path, capsys):
    assert main(["ablation", "list"]) == 0
    assert "double_budget" in capsys.readouterr().out
    assert main(["ablation", "run", "uniform"]) == 2
    assert "needs a variant name and --data" in capsys.readouterr().err
    assert main(["ablation", "table", "--runs", str(tmp_path), "--out", str(tmp_path / "t.csv")]) == 0
    assert "| `paper` |" in capsys.readouterr().out and (tmp_path / "t.csv").exists()
    assert main(["ablation", "score", "uniform", "--data", str(data)]) == 2
    assert "needs a variant name, --data and --label" in capsys.readouterr().err


def test_prior_row_corrects_the_model_it_uses(data, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"no model\.pt.*ablation run no_photometric"):
        run_variant("prior", data, runs, **SMALL)
    base = run_variant("no_photometric", data, runs, **SMALL)
    d = run_variant("prior", data, runs, **SMALL)
    pc = d["prior_correction"]
    assert pc["fitted_on"] == "fit" and pc["images"] == 4 and len(pc["shift"]) == 3 and 0 <= pc["tau"] <= 1
    assert (runs / "prior" / "model_prior.pt").exists() and not (runs / "prior" / "last.pt").exists()
    if pc["tau"] == 0:  # no correction chosen: the same predictions as the model it uses
        assert d["mean_iou"] == pytest.approx(base["mean_iou"])
    row = ablation_table(runs).set_index("variant").loc["prior"]
    assert row["epochs"] == 1 and np.isnan(row["last_miou"]) and row["mean_iou"] == pytest.approx(d["mean_iou"])


def test_lumenkit_train_defaults_are_the_exposure_recipe(monkeypatch):
    import torch

    from lumenkit.cli import build_parser, train_config
    from lumenkit.training.loop import compile_decision

    a = build_parser().parse_args(["train", "--data", "D", "--minutes", "45", "--out", "R/exposure"])
    got, want = train_config(a), variant_config("exposure", "D", "R")
    fields = ("scale", "width", "depth", "patch_size", "batch_size", "patches_per_epoch", "minutes", "schedule",
              "photometric", "exposure", "sampler", "strength", "flips", "rot90", "noise", "blur", "n_val",
              "val_seed", "seed", "lr", "loss", "ema")
    assert {f: getattr(got, f) for f in fields} == {f: getattr(want, f) for f in fields}
    assert (got.scale, got.exposure) == (0.125, 0.25)
    # both compile the training step (the older rows such as no_photometric ran eagerly)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    cpu = torch.device("cpu")
    assert compile_decision(got, cpu)[0] is True and compile_decision(want, cpu)[0] is True
    assert compile_decision(variant_config("no_photometric", "D", "R"), cpu)[0] is False


# -- cross-validation over folds ------------------------------------------------------------------
FOLD_CM = {  # rows = truth BG, Ccp, Gl; Gl is absent from fold 0's truth, Ccp from fold 2's (but predicted there)
    0: [[50, 5, 0], [5, 20, 0], [0, 0, 0]],
    1: [[40, 0, 10], [0, 10, 5], [5, 0, 30]],
    2: [[30, 10, 0], [0, 0, 0], [0, 5, 45]],
}


def write_fold_doc(runs, data, fold, name="paper", change=None):
    """``RUNS/NAME/val.json`` as ``run_variant`` writes it, for fold ``fold`` of ``data`` (n_val 2, seed 0); ``change``
    replaces keys of the document."""
    from lumenkit.data.datasets import LumenStoneDataset
    from lumenkit.evaluation.metrics import Scores

    labels = ["BG", "Ccp", "Gl"]
    cm = np.array(FOLD_CM[fold])
    names = LumenStoneDataset(data, "val", validation=ValidationSplit(2, 0, fold)).names
    half = cm // 2
    doc = {**Scores(cm, labels).to_dict(), "mean_iou_ci95": [0.0, 1.0], "split": "val", "data": str(data),
           "images": len(names), "n_val": 2, "val_seed": 0, "val_fold": fold, "variant": name, "tta": False,
           "per_image": [{"image": n} for n in names],
           "per_image_confusion": {names[0]: half.tolist(), names[1]: (cm - half).tolist()}, **(change or {})}
    path = runs / name / "val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return runs


def test_crossval_pools_the_confusion_matrices_of_the_folds(data, tmp_path, recwarn):
    runs = [write_fold_doc(tmp_path / f"fold{f}", data, f) for f in (2, 0, 1)]  # any order
    df = crossval(runs, "paper", n_boot=200)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]  # every image validated once
    assert list(df["row"]) == ["fold 0", "fold 1", "fold 2", "pooled"] and list(df["fold"][:3]) == [0, 1, 2]
    pooled = df.iloc[-1]
    # summed matrix [[120, 15, 10], [5, 30, 5], [5, 5, 75]]: IoU = TP / (row + column - TP)
    iou = {"BG": 120 / (145 + 130 - 120), "Ccp": 30 / (40 + 50 - 30), "Gl": 75 / (85 + 90 - 75)}
    assert {k: pooled[k] for k in iou} == pytest.approx(iou)
    assert pooled["mean_iou"] == pytest.approx(sum(iou.values()) / 3)
    assert pooled["pixel_accuracy"] == pytest.approx((120 + 30 + 75) / 270) and pooled["images"] == 6
    assert pooled["ci_low"] <= pooled["mean_iou"] <= pooled["ci_high"]
    fold0, fold2 = df.iloc[0], df.iloc[2]
    assert np.isnan(fold0["Gl"]) and np.isnan(fold2["Ccp"])  # absent from that fold's truth
    assert fold0["mean_iou"] == pytest.approx((50 / 60 + 20 / 30) / 2) and fold0["run"] == str(runs[1])
    a = df.attrs
    assert a["complete"] is True and a["missing"] == [] and a["n_folds"] == 3 and a["total_images"] == 6
    assert a["folds"] == [0, 1, 2] and a["fold_miou_mean"] == pytest.approx(df["mean_iou"][:3].mean())
    md = crossval_markdown(df)
    assert f"| pooled | 6 | {iou['BG']:.2f} | 0.50 | 0.75 | {pooled['mean_iou']:.3f} (" in md
    assert "every one of the 6 training images validated once" in md


def test_crossval_marks_missing_folds_and_rejects_mismatched_runs(data, tmp_path):
    r0, r2 = write_fold_doc(tmp_path / "f0", data, 0), write_fold_doc(tmp_path / "f2", data, 2)
    with pytest.warns(UserWarning, match=r"folds \[0, 2\] validate 4 of 6 training images; folds \[1\] are missing"):
        df = crossval([r0, r2], "paper")
    assert df["row"].iloc[-1] == "pooled (incomplete: 4 of 6 images)" and df.attrs["complete"] is False
    assert df.attrs["missing"] == LumenStoneDataset(data, "val", validation=ValidationSplit(2, 0, 1)).names
    assert df["Ccp"].iloc[-1] == pytest.approx(20 / (25 + 40 - 20))  # fold 0 + fold 2: column 5 + 20 + 15
    cases = [
        ({"val_seed": 1}, r"val_seed 0 there, 1 here"),
        ({"n_val": 3}, r"n_val 2 there, 3 here"),
        ({"data": str(tmp_path / "other")}, r"data '.*' there, '.*other' here"),
        ({"class_order": ["BG", "Gl", "Ccp"]}, "class_order"),
        ({"val_fold": 0}, r"fold 0 given twice"),
        ({"refine": {"radius": 2, "eps": 0.001}}, r"refine None there, \{'radius': 2, 'eps': 0.001\} here"),
    ]
    for change, message in cases:
        bad = write_fold_doc(tmp_path / "bad", data, 1, change=change)
        with pytest.raises(ConfigError, match=message):
            crossval([r0, bad], "paper")
    shifted = write_fold_doc(tmp_path / "shifted", data, 1, change={"val_fold": 2})  # fold 1's images as fold 2
    with pytest.raises(ConfigError, match="not fold 2 of"):
        crossval([shifted], "paper")
    with pytest.raises(ConfigError, match="folds 0 to 2 only"):
        crossval([write_fold_doc(tmp_path / "f5", data, 1, change={"val_fold": 5, "per_image": []})], "paper")
    with pytest.raises(ConfigError, match=r"no evaluation of 'uniform'.*--val-fold F"):
        crossval([r0], "uniform")
    with pytest.raises(ConfigError, match="run folders"):
        crossval([], "paper")
    scored = json.loads((r0 / "paper" / "val.json").read_text())  # a score_variant document of another dataset
    perfect = [[55, 0, 0], [0, 25, 0], [0, 0, 0]]
    (r0 / "paper" / "val_S1.json").write_text(json.dumps({**scored, "scored_on": "S1", "confusion": perfect}))
    with pytest.warns(UserWarning, match="validate 2 of 6"):
        assert crossval([r0], "paper", label="S1")["mean_iou"].iloc[-1] == 1.0  # val_S1.json, not val.json
    with pytest.raises(ConfigError, match="label"):
        crossval([r0], "paper", label="../x")
    gone = write_fold_doc(tmp_path / "gone", data, 1, change={"data": str(tmp_path / "nowhere")})
    with pytest.warns(UserWarning, match="cannot check"):
        unknown = crossval([gone], "paper")
    assert unknown.attrs["complete"] is None and unknown["row"].iloc[-1] == "pooled (coverage unknown)"


def test_crossval_pools_the_folds_under_another_scoring_protocol(data, tmp_path, capsys):
    """``protocol``: each fold's confusion matrix under that protocol is pooled, not the headline one."""
    from lumenkit.evaluation.metrics import Scores

    labels = ["BG", "Ccp", "Gl"]
    runs, inner = [], {}
    for f in range(3):
        cm = np.array(FOLD_CM[f])
        inner[f] = (cm * 0.8).astype(int)  # fewer pixels counted: the boundaries left out,
        np.fill_diagonal(inner[f], np.diag(cm))  # and the errors were on them
        scored = {k: v for k, v in Scores(inner[f], labels).to_dict().items()
                  if k in ("per_class_iou", "mean_iou", "pixel_accuracy", "confusion")}
        runs.append(write_fold_doc(tmp_path / f"fold{f}", data, f, change={"protocols": {
            "petroscope": {"void_border": 2, "pad": 4, "band": "petroscope", **scored},
            "all_pixels": {"void_border": 0}}}))
    headline, petro = crossval(runs, "paper", n_boot=0), crossval(runs, "paper", protocol="petroscope")
    pooled = Scores(sum(inner.values()), labels)
    assert petro["mean_iou"].iloc[-1] == pytest.approx(pooled.mean_iou)
    assert pooled.mean_iou > headline["mean_iou"].iloc[-1]
    assert petro["pixel_accuracy"].iloc[-1] == pytest.approx(pooled.pixel_accuracy)
    assert np.isnan(petro["ci_low"].iloc[-1]) and petro.attrs["protocol"] == "petroscope"  # no per-image matrices
    assert main(["ablation", "cv", "paper", "--protocol", "petroscope", "--runs", *map(str, runs)]) == 0
    printed = capsys.readouterr().out
    assert f"{pooled.mean_iou:.3f}" in printed and "scored under protocol petroscope" in printed
    with pytest.raises(ConfigError, match="unknown scoring protocol 'petroscop'; choose from all_pixels"):
        crossval(runs, "paper", protocol="petroscop")
    with pytest.raises(ConfigError, match=r"no scores under protocol 'void_border_2px'.*it has: petroscope, "
                                          r"all_pixels.*evaluate the run again"):
        crossval(runs, "paper", protocol="void_border_2px")
    # folds scored with different void borders are not one cross-validation
    bordered = write_fold_doc(tmp_path / "bordered", data, 1, change={"void_border": 2})
    with pytest.raises(ConfigError, match="void_border 0 there, 2 here"):
        crossval([runs[0], bordered], "paper")


def test_cli_cv_prints_and_writes_the_pooled_table(data, tmp_path, capsys):
    runs = [str(write_fold_doc(tmp_path / f"fold{f}", data, f)) for f in range(3)]
    out = tmp_path / "cv.csv"
    assert main(["ablation", "cv", "paper", "--runs", *runs, "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "| pooled | 6 |" in text.out and "folds [0, 1, 2] of 3" in text.out and not text.err
    csv = pd.read_csv(out)
    assert list(csv["row"]) == ["fold 0", "fold 1", "fold 2", "pooled"]
    assert csv["mean_iou"].iloc[-1] == pytest.approx((120 / 155 + 30 / 60 + 75 / 100) / 3, abs=1e-4)
    assert main(["ablation", "cv", "paper", "--runs", *runs[:2]]) == 0
    text = capsys.readouterr()
    assert "pooled (incomplete: 4 of 6 images)" in text.out and "2 of 6 training images in no fold given" in text.out
    assert "lumenkit-lab: warning: crossval paper: folds [0, 1] validate 4 of 6" in text.err
    assert main(["ablation", "cv", "--runs", *runs]) == 2
    assert "needs a variant name" in capsys.readouterr().err
    assert main(["ablation", "table", "--runs", *runs]) == 2
    assert "one --runs folder" in capsys.readouterr().err


def test_cli_passes_the_fold_to_run_and_score(monkeypatch, capsys):
    import lumenkit.lab.ablation as ablation

    seen = {}
    # an evaluation document: Ccp predicted once but absent from the ground truth (IoU 0, not in the mean)
    doc = {"mean_iou": 0.5, "per_class_iou": {"BG": 0.5, "Ccp": 0.0}, "confusion": [[1, 1], [0, 0]],
           "class_order": ["BG", "Ccp"]}
    monkeypatch.setattr(ablation, "run_variant", lambda name, data, runs, quiet, **kw: seen.update(run=kw) or doc)
    monkeypatch.setattr(ablation, "score_variant", lambda *a, **kw: seen.update(score=kw) or doc)
    assert main(["ablation", "run", "paper", "--data", "D", "--runs", "R", "--val-fold", "4"]) == 0
    assert seen["run"] == {"val_fold": 4}
    assert "paper: validation mean IoU 0.500, pixel accuracy 0.500; BG 0.50 Ccp –" in capsys.readouterr().out
    assert main(["ablation", "run", "paper", "--data", "D"]) == 0 and seen["run"] == {}  # the preset: fold 0
    assert main(["ablation", "score", "paper", "--data", "D", "--label", "S1", "--val-fold", "3"]) == 0
    assert seen["score"]["validation"] == ValidationSplit(10, 0, 3)
    assert "val_fold" not in BASE and variant_config("paper", "D", "R").val_fold == 0
    # an epoch budget replaces the variant's time budget; threads pass through
    assert main(["ablation", "run", "aspp", "--data", "D", "--epochs", "46", "--threads", "1", "--val-fold", "2"]) == 0
    assert seen["run"] == {"val_fold": 2, "epochs": 46, "minutes": None, "threads": 1}
    cfg = variant_config("aspp", "D", "R", **seen["run"])
    assert (cfg.epochs, cfg.minutes, cfg.threads, cfg.context) == (46, None, 1, "aspp")
    assert main(["ablation", "run", "aspp", "--data", "D", "--epochs", "46", "--minutes", "45"]) == 2
    assert "--epochs or --minutes, not both" in capsys.readouterr().err


def test_run_variant_on_a_fold_records_it_and_refuses_another(data, tmp_path):
    runs = tmp_path / "runs_fold1"
    d = run_variant("uniform", data, runs, **SMALL, val_fold=1)
    assert d["val_fold"] == 1 and d["val_seed"] == 0 and d["n_val"] == 2
    fold1 = LumenStoneDataset(data, "val", validation=ValidationSplit(2, 0, 1)).names
    assert [r["image"] for r in d["per_image"]] == fold1
    assert "val_fold: 1" in (runs / "uniform" / "config.yaml").read_text()
    for other in ({}, {"val_fold": 2}):  # the finished fold-1 model is never scored on another fold
        with pytest.raises(ConfigError, match=r"trained with n_val=2, val_seed=0, val_fold=1.*val_fold=(0|2)\)"):
            run_variant("uniform", data, runs, **SMALL, **other)
    with pytest.warns(UserWarning, match=r"folds \[1\] validate 2 of 6"):
        df = crossval([runs], "uniform")
    assert df["mean_iou"].iloc[-1] == pytest.approx(d["mean_iou"]) and df["images"].iloc[-1] == 2


def test_every_variant_names_the_paper_preset_and_changes_only_its_fields():
    from lumenkit.lab.ablation import PRESET
    from lumenkit.training.config import PRESETS, TrainConfig

    assert PRESET == "paper" and set(PRESETS["paper"]) <= set(TrainConfig().to_dict())
    base = variant_config("paper", "D", "R")
    assert base == TrainConfig.from_preset("paper", data="D", out="R/paper", epochs=10**6)
    assert variant_config("exposure", "D", "R") == TrainConfig.from_preset(
        "s1", data="D", out="R/exposure", epochs=10**6, compile="on")  # the default recipe, compiled
    assert variant_config("default", "D", "R", epochs=46, minutes=None) == TrainConfig(
        data="D", out="R/default", epochs=46, minutes=None)  # `lumenkit train --epochs 46`, exactly
    assert variant_config("s2", "D", "R", epochs=49, minutes=None) == TrainConfig.from_preset(
        "s2", data="D", out="R/s2", epochs=49, minutes=None)  # `lumenkit train --preset s2 --epochs 49`, exactly
    pair = variant_config("s2_pair", "D", "R", epochs=49, minutes=None)
    assert pair.class_weights == [1.0, 1.0, 1.0, 2.0, 2.0] and pair.n_val == 5
    assert variant_config("s2_half", "D", "R", epochs=49, minutes=None) == TrainConfig.from_preset(
        "s2", data="D", out="R/s2_half", epochs=49, minutes=None, scale=0.5, depth=5)


def test_an_ensemble_row_scores_its_members_together_on_their_own_split(data, tmp_path, monkeypatch):
    from lumenkit.lab import ablation

    runs = tmp_path / "runs"
    monkeypatch.setitem(ablation.VARIANTS, "ens", ablation.Variant("ens", "uniform with paper", uses="uniform",
                                                                   also=("paper",)))
    run_variant("uniform", data, runs, **SMALL)
    with pytest.raises(ConfigError, match=r"paper/model\.pt: no trained model for the ensemble 'ens'"):
        run_variant("ens", data, runs, **SMALL)
    run_variant("paper", data, runs, **{**SMALL, "val_fold": 1})  # another split: it trained on fold 0's images
    with pytest.raises(ConfigError, match=r"paper/model\.pt: trained with .*val_fold=1, not the scored split "
                                          r".*trained on some"):
        run_variant("ens", data, runs, **SMALL)
    shutil.rmtree(runs / "paper")
    run_variant("paper", data, runs, **SMALL)
    from lumenkit.models.checkpoint import load_checkpoint

    last = load_checkpoint(runs / "paper" / "last.pt")
    last.train_state["epoch"] = 0  # as if still training: model.pt is rewritten until the budget is spent
    last.save(runs / "paper" / "half.pt")
    (runs / "paper" / "last.pt").rename(runs / "paper" / "done.pt")
    (runs / "paper" / "half.pt").rename(runs / "paper" / "last.pt")
    with pytest.raises(ConfigError, match=r"paper/last\.pt: 'paper' has not finished training"):
        run_variant("ens", data, runs, **SMALL)
    (runs / "paper" / "done.pt").replace(runs / "paper" / "last.pt")
    monkeypatch.setitem(ablation.VARIANTS, "ens_tta", ablation.Variant("ens_tta", "with tta", uses="uniform",
                                                                       also=("tta",)))
    with pytest.raises(ConfigError, match="member 'tta' is not a trained model"):
        run_variant("ens_tta", data, runs, **SMALL)
    d = run_variant("ens", data, runs, **SMALL)
    assert d["variant"] == "ens" and d["ensemble"] == ["uniform/model.pt", "paper/model.pt"]
    assert d["images"] == SMALL["n_val"] and not (runs / "ens" / "model.pt").exists()  # scored, nothing trained
    assert "ens" in set(ablation_table(runs)["variant"])
    listed = ablation.describe().set_index("variant")
    assert listed.loc["ens", "train"] == "models of uniform, paper" and listed.loc["tta", "train"] == "model of paper"


def test_a_barred_class_is_never_predicted_and_its_pixels_go_to_the_others(data, tmp_path):
    from lumenkit.models.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    run_variant("uniform", data, runs, **SMALL)
    labels = list(load_checkpoint(runs / "uniform" / "model.pt").class_map.labels)
    plain = score_variant("uniform", data, runs, "plain")
    predicted = np.asarray(plain["confusion"]).sum(0)
    gone = labels[int(np.argmax(predicted))]  # the most predicted class
    d = score_variant("uniform", data, runs, "nogone", bar=(gone,))
    cm = np.asarray(d["confusion"])
    assert cm[:, labels.index(gone)].sum() == 0 < predicted[labels.index(gone)]
    assert cm.sum() == np.asarray(plain["confusion"]).sum() and d["barred"] == [gone] and plain["barred"] == []
    with pytest.raises(ConfigError, match=r"Xyz not among the model's classes"):
        score_variant("uniform", data, runs, "x", bar=("Xyz",))
    with pytest.raises(ConfigError, match="sequence of labels"):
        score_variant("uniform", data, runs, "x", bar=gone)
    with pytest.raises(ConfigError, match="every class"):
        score_variant("uniform", data, runs, "x", bar=tuple(labels))
    assert main(["ablation", "score", "uniform", "--data", str(data), "--runs", str(runs), "--label", "cli",
                 "--bar", f" {gone} ,"]) == 0
    assert json.loads((runs / "uniform" / "val_cli.json").read_text())["barred"] == [gone]
