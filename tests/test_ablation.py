import json

import numpy as np
import pytest
from conftest import write_fake_dataset

from lumenkit.ablation import VARIANTS, ablation_table, run_variant, score_variant, to_markdown, variant_config
from lumenkit.cli import main
from lumenkit.errors import ConfigError

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


def test_score_on_another_split_adds_a_row(data, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"no trained model.*ablation run uniform"):
        score_variant("uniform", data, runs, "S1")
    run_variant("uniform", data, runs, **SMALL)
    with pytest.raises(ConfigError, match="label"):
        score_variant("uniform", data, runs, "../x")
    d = score_variant("uniform", data, runs, "wide", n_val=4, seed=1)
    assert d["images"] == 4 and d["val_seed"] == 1 and d["scored_on"] == "wide"
    assert (runs / "uniform" / "val_wide.json").exists()
    stray = {k: v for k, v in d.items() if k != "scored_on"}  # e.g. a TTA evaluation saved beside the run
    (runs / "uniform" / "val_tta.json").write_text(json.dumps(stray))
    df = ablation_table(runs).set_index("variant")
    names = list(df.index)
    assert names[names.index("uniform") + 1] == "uniform on wide" and "uniform on tta" not in names
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


def test_lumenkit_train_defaults_are_the_no_photometric_recipe(monkeypatch):
    import torch

    from lumenkit.cli import _train_config, build_parser
    from lumenkit.train import compile_decision

    a = build_parser().parse_args(["train", "--data", "D", "--minutes", "45", "--out", "R/no_photometric"])
    got, want = _train_config(a), variant_config("no_photometric", "D", "R")
    fields = ("scale", "width", "depth", "patch_size", "batch_size", "patches_per_epoch", "minutes", "schedule",
              "photometric", "sampler", "strength", "flips", "rot90", "noise", "blur", "n_val", "val_seed", "seed",
              "lr", "loss")
    assert {f: getattr(got, f) for f in fields} == {f: getattr(want, f) for f in fields}
    # ... with its training step compiled, like the `compiled` row (the other rows ran eagerly)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    cpu = torch.device("cpu")
    assert compile_decision(got, cpu)[0] is True and compile_decision(want, cpu)[0] is False
    assert compile_decision(variant_config("compiled", "D", "R"), cpu)[0] is True
