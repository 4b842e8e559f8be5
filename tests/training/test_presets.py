"""One recipe, defined once: the presets, the CLI generated from the config's fields, notebook 03 and the params."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from lumenkit.cli import build_parser, train_config
from lumenkit.errors import ConfigError
from lumenkit.training import TrainConfig
from lumenkit.training.config import DEFAULT_PRESET, PRESETS, field_docs
from lumenkit.workbook.training import notebook_train_config

ROOT = Path(__file__).resolve().parents[2]
WHERE = ("out", "resume", "overwrite", "quiet")  # where a run is written, not what it trains


def recipe(cfg: TrainConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in WHERE}


def notebook_03_config(params_file: Path, run_dir: Path) -> TrainConfig:
    """The configuration notebook 03 builds from the parameters `lumenkit report --params` gives it."""
    import papermill as pm

    from lumenkit.workbook.pipeline import _stage_params, load_params

    nb = ROOT / "notebooks" / "03_train.ipynb"
    call = "notebook_train_config(data, preset, overrides, class_set, seed, val_fold, run_dir, resume, n_val)"
    assert call in nb.read_text()
    cfg = load_params(params_file)
    shared = {k: v for k, v in cfg.items() if k not in ("notebooks", "run")}
    shared["run_dir"] = str(run_dir)
    declared = pm.inspect_notebook(str(nb))
    p = {k: ast.literal_eval(v["default"]) for k, v in declared.items()}  # what papermill does not inject
    p.update(_stage_params(declared, shared, cfg["notebooks"]["03_train"], params_file.parent))
    return notebook_train_config(p["data"], p["preset"], p["overrides"], p["class_set"], p["seed"], p["val_fold"],
                                 p["run_dir"], p["resume"], p["n_val"])


def test_cli_api_notebook_and_s1_preset_resolve_to_the_same_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMENKIT_LUMENSTONE", str(tmp_path))
    d = str(tmp_path / "S1_v1_x05")
    cli = train_config(build_parser().parse_args(["train", "--data", d]))
    api = TrainConfig(data=d)
    preset = TrainConfig.from_preset("s1", data=d)
    nb = notebook_03_config(ROOT / "params" / "lumenstone_s1.yaml", tmp_path / "report")
    assert recipe(cli) == recipe(api) == recipe(preset) == recipe(nb)
    assert DEFAULT_PRESET == "s1" and TrainConfig() == TrainConfig.from_preset("s1")
    assert (api.scale, api.schedule, api.exposure, api.minutes) == (0.125, "cosine", 0.25, 45.0)  # the S1 recipe


@pytest.mark.parametrize(("params", "preset"), [("lumenstone_s2.yaml", "s2"), ("synthetic.yaml", "synthetic")])
def test_every_params_file_names_a_preset_and_resolves_to_it(tmp_path, monkeypatch, params, preset):
    monkeypatch.setenv("LUMENKIT_LUMENSTONE", str(tmp_path))
    nb = notebook_03_config(ROOT / "params" / params, tmp_path / "report")
    assert recipe(nb) == recipe(TrainConfig.from_preset(preset, data=nb.data))


def test_the_cli_offers_every_field_with_its_documentation():
    p = build_parser()
    train = p._subparsers._group_actions[0].choices["train"]
    options = {a.dest: a for a in train._actions}
    docs = field_docs()
    for f in dataclasses.fields(TrainConfig):
        assert f.name in options, f.name
        assert docs[f.name] and docs[f.name].split()[0] in options[f.name].help, f.name
    assert options["preset"].choices == list(PRESETS)


def test_cli_options_change_the_preset_and_nothing_else():
    a = build_parser().parse_args(["train", "--data", "D", "--preset", "s2", "--minutes", "none", "--epochs", "3",
                                   "--no-flips", "--class-set", "0,1,3", "--class-weights", "inverse_sqrt"])
    got = train_config(a)
    want = TrainConfig.from_preset("s2", data="D", minutes=None, epochs=3, flips=False, rot90=False,
                                   class_set=[0, 1, 3], class_weights="inverse_sqrt")
    assert got == want


def test_cli_conveniences_kept_from_the_hand_written_parser():
    def cfg(*args: str) -> TrainConfig:
        return train_config(build_parser().parse_args(["train", "--data", "D", *args]))

    assert (cfg("--epochs", "3").epochs, cfg("--epochs", "3").minutes) == (3, None)  # an epoch count alone: no budget
    assert cfg("--epochs", "3", "--minutes", "5").minutes == 5.0
    assert cfg("--minutes", "20").minutes == 20.0 and cfg().minutes == 45.0
    assert (cfg("--no-flips").flips, cfg("--no-flips").rot90) == (False, False)  # as the old --no-flips
    assert cfg("--no-flips", "--rot90").rot90 is True


def test_cli_resume_continues_the_saved_recipe_and_refuses_contradictions(tmp_path):
    from lumenkit.data.catalogue import ClassMap
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    run = tmp_path / "run"
    saved = TrainConfig.from_preset("s2", data="D", out=str(run), minutes=90.0)
    net = create_model("resunet", in_channels=3, classes=2, width=4, depth=2)
    Checkpoint(net, ClassMap([0, 1]), 0.25, [], {"epoch": 1}, {"train": saved.to_dict()}).save(run / "last.pt")

    def cfg(*args: str) -> TrainConfig:
        return train_config(build_parser().parse_args(["train", "--data", "D", "--out", str(run), "--resume", *args]))

    got = cfg()
    assert got.scale == 0.25 and got.n_val == 5 and got.minutes == 90.0 and got.resume  # the saved run, not s1
    assert cfg("--preset", "s2", "--minutes", "90", "--threads", "1").threads == 1
    with pytest.raises(ConfigError, match=r"minutes: saved 90.0, preset 's2' 45.0"):  # the preset's budget is 45
        cfg("--preset", "s2", "--threads", "1")
    with pytest.raises(ConfigError, match=r"different recipe \(scale: saved 0.25, now 0.125"):
        cfg("--scale", "0.125")
    with pytest.raises(ConfigError, match="different recipe"):
        cfg("--preset", "s1")
    with pytest.raises(ConfigError, match=r"minutes: saved 90.0, preset 'long' 180.0 \(--minutes changes a budget"):
        cfg("--preset", "long", "--scale", "0.25", "--exposure", "0", "--n-val", "5")
    assert cfg("--minutes", "180").minutes == 180.0  # a budget is changed by saying so
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "D", "--schedule", "step"])


def test_presets_are_valid_and_unknown_names_are_refused():
    for name in PRESETS:
        TrainConfig.from_preset(name, data="D").check()
    known = "s1, long, s2, synthetic, paper, finetune"
    with pytest.raises(ConfigError, match=f"unknown training preset 'fast'; known: {known}"):
        TrainConfig.from_preset("fast")
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_preset("s1", learning_rate=0.1)


def test_old_run_configs_with_retired_fields_still_load_but_callers_are_told():
    old = {**TrainConfig(data="D").to_dict(), "retain_heap": False}
    assert TrainConfig.from_dict(old, saved=True) == TrainConfig(data="D")
    with pytest.raises(ConfigError, match=r"retain_heap is no longer a training option.*set_heap_retention"):
        TrainConfig.from_dict(old)
    with pytest.raises(ConfigError, match="retain_heap"):
        TrainConfig.from_preset("s1", retain_heap=False)


def test_a_resumed_run_keeps_its_budget_unless_a_new_one_is_given():
    from lumenkit.training.config import resumed_config

    saved = TrainConfig(data="D", minutes=90.0, epochs=7, threads=2)
    assert resumed_config(saved, TrainConfig(data="D")).minutes == 90.0
    assert resumed_config(saved, TrainConfig(data="D")).epochs == 7
    assert resumed_config(saved, TrainConfig(data="D", minutes=120.0, threads=1)).minutes == 120.0
    assert resumed_config(saved, TrainConfig(data="D", threads=1)).threads == 1
    # stated explicitly, a budget equal to the default still replaces the saved one
    assert resumed_config(saved, TrainConfig(data="D"), stated={"minutes"}).minutes == TrainConfig().minutes
    assert resumed_config(saved, TrainConfig(data="D"), stated={"minutes"}).epochs == 7


def test_a_resumed_run_keeps_its_validation_windows_unless_new_ones_are_given():
    """The best epoch (model.pt) is chosen by one measure: the windows of validation stay those the run began with."""
    from lumenkit.training.config import resumed_config

    saved = TrainConfig(data="D", val_tile=512, val_margin=32)
    kept = resumed_config(saved, TrainConfig(data="D"))
    assert (kept.val_tile, kept.val_margin) == (512, 32)
    assert resumed_config(saved, TrainConfig(data="D", val_tile=1024)).val_tile == 1024
    assert resumed_config(saved, TrainConfig(data="D"), stated={"val_tile"}).val_tile == TrainConfig().val_tile


def test_cli_resume_with_the_default_budget_typed_shortens_a_long_run(tmp_path, monkeypatch):
    import dataclasses

    import lumenkit.training.loop as loop
    from lumenkit.cli import main
    from lumenkit.data.catalogue import ClassMap
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    run = tmp_path / "run"
    saved = TrainConfig.from_preset("long", data="D", out=str(run), val_tile=512)
    net = create_model("resunet", in_channels=3, classes=2, width=4, depth=2)
    Checkpoint(net, ClassMap([0, 1]), 0.125, [], {"epoch": 1}, {"train": saved.to_dict()}).save(run / "last.pt")
    ran = []

    def fake_train(config, on_step=None, **overrides):  # the real resolution, without the training
        ran.append(loop._resume_or_start(dataclasses.replace(config, **overrides), stated=overrides)[0])
        return loop.TrainResult(run, None, None, 0.5)

    monkeypatch.setattr(loop, "train", fake_train)
    base = ["train", "--data", "D", "--out", str(run), "--resume"]
    for args, minutes, epochs in [([], 180.0, saved.epochs), (["--minutes", "45"], 45.0, saved.epochs),
                                  (["--epochs", "3"], None, 3)]:
        assert main([*base, *args]) == 0
        assert (ran[-1].minutes, ran[-1].epochs) == (minutes, epochs), args
        assert ran[-1].val_tile == 512  # the windows it began with
    # a validation window typed is taken, the default's too
    assert main([*base, "--val-tile", str(TrainConfig().val_tile)]) == 0 and ran[-1].val_tile == TrainConfig().val_tile
    # a preset names its budget, the default's 45 minutes too: s1 does not end a long run unasked
    with pytest.raises(ConfigError, match=r"minutes: saved 180.0, preset 's1' 45.0 \(--minutes changes a budget"):
        train_config(build_parser().parse_args([*base, "--preset", "s1"]))
    assert train_config(build_parser().parse_args([*base, "--preset", "long"])).minutes == 180.0


def test_the_shared_n_val_reaches_notebook_03(tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("LUMENKIT_LUMENSTONE", str(tmp_path))
    params = yaml.safe_load((ROOT / "params" / "lumenstone_s2.yaml").read_text())
    params["n_val"] = 6
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    assert notebook_03_config(path, tmp_path / "report").n_val == 6


def test_notebook_03_refuses_to_resume_a_run_of_another_recipe(tmp_path):
    from lumenkit.data.catalogue import ClassMap
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    old = notebook_train_config("D", "synthetic", {}, run_dir=tmp_path)
    net = create_model("resunet", in_channels=3, classes=2, width=4, depth=2)
    ckpt = Checkpoint(net, ClassMap([0, 1]), 0.25, [], {"epoch": 1}, {"train": old.to_dict()})
    ckpt.save(tmp_path / "train" / "last.pt")
    assert notebook_train_config("D", "synthetic", {}, run_dir=tmp_path, resume=True).resume
    with pytest.raises(ConfigError, match=r"another recipe \(scale: saved 0.25, now 0.125.*resume=False"):
        notebook_train_config("D", "s1", {}, run_dir=tmp_path, resume=True)
    assert not notebook_train_config("D", "s1", {}, run_dir=tmp_path, resume=False).resume  # afresh
    with pytest.raises(ConfigError, match=r"another recipe \(minutes: saved 8.0, now 16.0\)"):
        notebook_train_config("D", "synthetic", {"minutes": 16.0}, run_dir=tmp_path, resume=True)


@pytest.mark.parametrize("cfg", [
    TrainConfig(data="d"),
    TrainConfig.from_preset("finetune", data="runs/s2 strokes", init="runs/s1/model.pt", minutes=2.0),
    TrainConfig.from_preset("s2", data="d", epochs=49, minutes=None, out="runs/x"),
    TrainConfig(data="d", flips=False, rot90=True, class_set=[0, 1, 3], class_weights=[1.0, 2.5, 0.5]),
    TrainConfig(data="d", flips=False, rot90=False, scale=None, ema=0.999, freeze="encoder", amp=False),
    TrainConfig.from_preset("synthetic", data="d", class_weights="inverse_sqrt", schedule="cosine"),
    TrainConfig(data="d", epochs=200),  # an epoch cap under the preset's time budget
    TrainConfig.from_preset("finetune", data="d", epochs=20, lr=1e-06, class_set="S2"),
])
def test_train_command_reproduces_the_configuration_through_the_cli(cfg):
    import shlex

    from lumenkit.training import train_command
    from lumenkit.training.config import UNRECORDED_FIELDS

    line = train_command(cfg)
    argv = shlex.split(line)
    assert argv[:2] == ["lumenkit", "train"]
    back = train_config(build_parser().parse_args(argv[1:]))
    skip = set(UNRECORDED_FIELDS)
    assert {k: v for k, v in back.to_dict().items() if k not in skip} == \
        {k: v for k, v in cfg.to_dict().items() if k not in skip}, line


def test_train_command_names_the_nearest_preset_and_only_the_differences():
    from lumenkit.training import train_command

    line = train_command(TrainConfig.from_preset("finetune", data="d", init="m.pt", minutes=5.0))
    assert line == "lumenkit train --preset finetune --data d --init m.pt --minutes 5.0"
    assert train_command(TrainConfig(data="d")) == "lumenkit train --preset s1 --data d"
    assert train_command(TrainConfig(data="d", minutes=180.0)) == "lumenkit train --preset long --data d"


def test_the_long_preset_is_the_default_recipe_with_four_times_its_budget():
    s1, long = TrainConfig.from_preset("s1", data="d"), TrainConfig.from_preset("long", data="d")
    assert dataclasses.replace(long, minutes=s1.minutes) == s1 and long.minutes == 4 * s1.minutes
