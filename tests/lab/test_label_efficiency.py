"""The label-efficiency study: ordinary runs gathered into a table whose every row carries the command behind it."""

import shlex

import pandas as pd
import pytest
import yaml
from conftest import write_fake_dataset

from lumenkit.cli import build_parser, main, train_config
from lumenkit.data.catalogue import IGNORE
from lumenkit.data.datasets import ValidationSplit
from lumenkit.data.imageio import read_mask
from lumenkit.lab.cli import main as lab_main
from lumenkit.lab.strokes import sparse_dataset
from lumenkit.training.config import UNRECORDED_FIELDS, TrainConfig

TINY = ["--width", "4", "--depth", "2", "--patch-size", "32", "--batch-size", "4", "--patches-per-epoch", "16",
        "--n-val", "2", "--val-tile", "64", "--val-margin", "8", "--quiet", "--threads", "1", "--scale", "none",
        "--epochs", "1"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("le")
    data = write_fake_dataset(root / "fake", n_train=6, size=(96, 64))
    sparse = root / "sparse"
    sparse_dataset(data, sparse, 0.05, validation=ValidationSplit(n_val=2), width=1, length=10)
    runs = {"full": (data, []), "ft": (sparse, ["--init", str(root / "full" / "model.pt")]), "scratch": (sparse, [])}
    for name, (ds, extra) in runs.items():
        out = root / name
        assert main(["train", "--data", str(ds), "--out", str(out), *TINY, *extra]) == 0
        assert main(["evaluate", "--data", str(ds), "--split", "val", "--model", str(out / "model.pt"),
                     "--out", str(out / "val.json"), "--no-baselines", "--quiet"]) == 0
    return root, sparse


def test_the_table_measures_labels_and_prints_each_runs_command(cells, tmp_path):
    root, sparse = cells
    out, fig = tmp_path / "le.csv", tmp_path / "le.png"
    assert lab_main(["label-efficiency", str(root / "ft"), str(root / "scratch"), "--reference", str(root / "full"),
                     "--out", str(out), "--figure", str(fig), "--path", f"{root}=runs"]) == 0
    table = pd.read_csv(out)
    assert list(table["run"]) == ["full", "ft", "scratch"]  # the reference first, fine-tuned before scratch
    assert table.loc[0, "of_reference"] == 1.0 and table.loc[0, "labels"] == "whole masks"
    assert list(table["start"]) == ["scratch", "full", "scratch"]
    fit = yaml.safe_load((root / "ft" / "config.yaml").read_text())["resolved"]["fit_names"]
    masks = [read_mask(sparse / "masks" / "train" / f"{n}.png") for n in fit]
    share = sum(int((m != IGNORE).sum()) for m in masks) / sum(m.size for m in masks)
    assert table.loc[1, "labelled_pct"] == pytest.approx(100 * share) and 0 < share < 0.2
    assert table.loc[0, "labelled_pct"] == 100.0
    assert (table["epochs"] == 1).all() and (table["best_epoch"] == 1).all() and fig.stat().st_size > 1000
    assert table["last_epoch_miou"].between(0, 1).all()
    for i, name in enumerate(["full", "ft", "scratch"]):
        train_part, evaluate_part = table.loc[i, "command"].replace("runs", str(root)).split(" && ")
        assert shlex.split(evaluate_part)[:2] == ["lumenkit", "evaluate"]
        back = train_config(build_parser().parse_args(shlex.split(train_part)[1:]))
        raw = yaml.safe_load((root / name / "config.yaml").read_text())
        saved = TrainConfig.from_dict({k: v for k, v in raw.items() if k not in ("resolved", "versions")}, saved=True)
        keep = [k for k in saved.to_dict() if k not in UNRECORDED_FIELDS]
        assert {k: getattr(back, k) for k in keep} == {k: getattr(saved, k) for k in keep}, train_part


def test_a_run_without_its_evaluation_is_one_line_naming_the_command(cells, tmp_path, capsys):
    root, _ = cells
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((root / "scratch" / "config.yaml").read_text())
    assert lab_main(["label-efficiency", str(bare), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "val.json" in err and "lumenkit evaluate" in err
    assert not (tmp_path / "x.csv").exists()


def test_a_path_replaced_by_an_environment_variable_stays_expandable(cells, tmp_path):
    root, _ = cells
    out = tmp_path / "le.csv"
    assert lab_main(["label-efficiency", str(root / "ft"), "--out", str(out), "--path", f"{root}=$RUNS"]) == 0
    command = pd.read_csv(out).loc[0, "command"]
    assert "--init $RUNS/full/model.pt" in command and "--model $RUNS/ft/model.pt" in command
    assert "'$" not in command
