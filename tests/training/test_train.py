import os
import signal
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import write_fake_dataset

from lumenkit.cli import main
from lumenkit.data.catalogue import ClassMap
from lumenkit.data.datasets import ValidationSplit
from lumenkit.data.imageio import save_image
from lumenkit.errors import ConfigError
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
from lumenkit.models.resunet import create_model
from lumenkit.training.config import TrainConfig
from lumenkit.training.loop import compile_decision, cosine_lr, read_history, train
from lumenkit.training.losses import SegmentationLoss

# A tiny model on the fake dataset at its stored scale, the paper's plateau schedule, no jitter, no time budget.
TINY = dict(width=4, depth=2, patch_size=32, batch_size=4, patches_per_epoch=16, n_val=2, val_tile=64,
            val_margin=8, quiet=True, threads=1, scale=None, schedule="plateau", exposure=0.0, minutes=None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("train") / "fake", n_train=6, size=(96, 64))


def adam_steps(path: Path) -> int:
    st = load_checkpoint(path).train_state["optimizer"]["state"]
    return int(next(iter(st.values()))["step"])


def test_training_writes_all_outputs(data, tmp_path):
    run = tmp_path / "run"
    r = train(data=str(data), out=str(run), epochs=2, **TINY)
    assert not r.interrupted and r.rank == 0 and r.world_size == 1
    for name in ("model.pt", "last.pt", "history.csv", "config.yaml"):
        assert (run / name).is_file(), name
    h = read_history(run)
    assert list(h["epoch"]) == [1, 2]
    for col in ("train_loss", "val_loss", "val_miou", "val_pixel_acc", "iou_BG", "iou_Ccp", "iou_Gl", "lr", "seconds"):
        assert col in h.columns
    assert np.isfinite(h["train_loss"]).all() and h["lr"].iloc[0] == pytest.approx(1e-3)
    best = load_checkpoint(run / "model.pt")
    assert best.scale == 0.5 and best.class_map == ClassMap([0, 1, 2]) and best.train_state is None
    assert best.config["val_names"] == ["tr02", "tr03"]
    assert max(h["val_miou"]) == pytest.approx(r.best_miou)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["seed"] == 0 and cfg["resolved"]["val_names"] == ["tr02", "tr03"]
    assert cfg["versions"]["torch"] and cfg["resolved"]["class_codes"] == [0, 1, 2]
    assert len(cfg["resolved"]["data_sha1_train_split"]) == 40
    assert adam_steps(run / "last.pt") == 2 * 4  # 16 patches / batch 4 per epoch
    from lumenkit.runtime.heap import heap_retention_available

    assert cfg["resolved"]["heap_retained"] is heap_retention_available()  # the default keeps freed memory
    assert cfg["resolved"]["cpu_sgemm_gflops"] > 0


def test_existing_run_is_not_overwritten(data, tmp_path):
    run = tmp_path / "run"
    train(data=str(data), out=str(run), epochs=1, **TINY)
    with pytest.raises(ConfigError, match=r"already holds a training run.*--resume"):
        train(data=str(data), out=str(run), epochs=1, **TINY)
    train(data=str(data), out=str(run), epochs=1, overwrite=True, **TINY)


def test_photometric_jitter_is_recorded(data, tmp_path):
    run = tmp_path / "run"
    train(data=str(data), out=str(run), epochs=1, photometric=0.1, **TINY)
    assert yaml.safe_load((run / "config.yaml").read_text())["photometric"] == 0.1


def test_exposure_jitter_widens_brightness_alone(data, tmp_path, monkeypatch):
    import lumenkit.data.augment

    made = []

    class Spy(lumenkit.data.augment.Augment):
        def __init__(self, **kw):
            made.append(kw)
            super().__init__(**kw)

    monkeypatch.setattr(lumenkit.data.augment, "Augment", Spy)
    run = tmp_path / "run"
    train(data=str(data), out=str(run), epochs=1, photometric=0.05, **{**TINY, "exposure": 0.25})
    assert made and made[0]["brightness"] == 0.25 and made[0]["gamma"] == made[0]["white_balance"] == 0.05
    assert yaml.safe_load((run / "config.yaml").read_text())["exposure"] == 0.25
    with pytest.raises(ConfigError, match=r"exposure must be in \[0, 1\)"):
        train(data=str(data), out=str(tmp_path / "bad"), epochs=1, **{**TINY, "exposure": 1.0})


def test_cosine_lr_runs_from_lr_to_min_lr():
    assert cosine_lr(1e-3, 1e-6, 0.0) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 1e-6, 0.5) == pytest.approx((1e-3 + 1e-6) / 2)
    assert cosine_lr(1e-3, 1e-6, 1.0) == pytest.approx(1e-6)
    assert cosine_lr(1e-3, 1e-6, 7.0) == pytest.approx(1e-6) and cosine_lr(1e-3, 1e-6, -1) == pytest.approx(1e-3)


def test_cosine_schedule_with_noise_and_blur_augmentation(data, tmp_path):
    run = tmp_path / "run"
    r = train(data=str(data), out=str(run), epochs=3, noise=8.0, blur=1.0, **{**TINY, "schedule": "cosine"})
    lrs = list(r.history["lr"])  # the rate at the end of each epoch: 1/3, 2/3 and all of the run done
    assert lrs == pytest.approx([cosine_lr(1e-3, 1e-6, f) for f in (1 / 3, 2 / 3, 1.0)])
    assert load_checkpoint(run / "last.pt").train_state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-6)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["schedule"], cfg["noise"], cfg["blur"]) == ("cosine", 8.0, 1.0)
    with pytest.raises(ConfigError, match="schedule must be"):
        train(data=str(data), out=str(tmp_path / "bad"), epochs=1, **{**TINY, "schedule": "step"})
    with pytest.raises(ConfigError, match="noise must be"):
        train(data=str(data), out=str(tmp_path / "bad"), epochs=1, noise=-2.0, **TINY)


def test_cosine_schedule_ends_at_the_epoch_cap_when_it_comes_before_the_time_budget(data, tmp_path):
    cfg = {**TINY, "schedule": "cosine", "minutes": 600.0, "compile": "off"}
    r = train(data=str(data), out=str(tmp_path / "run"), epochs=2, **cfg)
    assert list(r.history["lr"]) == pytest.approx([cosine_lr(1e-3, 1e-6, f) for f in (0.5, 1.0)], rel=1e-3)


def test_resume_with_an_incompatible_config_is_refused_listing_differences(data, tmp_path):
    run = tmp_path / "run"
    train(data=str(data), out=str(run), epochs=1, **TINY)
    other = {**TINY, "width": 8, "lr": 0.01}
    with pytest.raises(ConfigError, match=r"cannot resume.*width: saved 4, now 8.*lr: saved 0.001, now 0.01"):
        train(data=str(data), out=str(run), epochs=2, resume=True, **other)
    r = train(data=str(data), out=str(run), epochs=2, resume=True, **TINY)  # same settings, longer budget: fine
    assert list(r.history["epoch"]) == [1, 2]


def test_interrupt_saves_resumable_state_and_resume_continues(data, tmp_path):
    run = tmp_path / "run"

    def interrupt(info):
        if info["step"] == 6:  # mid-way through epoch 2
            os.kill(os.getpid(), signal.SIGINT)

    r = train(data=str(data), out=str(run), epochs=3, on_step=interrupt, **TINY)
    assert r.interrupted and len(r.history) == 1
    st = load_checkpoint(run / "last.pt").train_state
    assert st["epoch"] == 1 and st["patches_done"] == 8 and adam_steps(run / "last.pt") == 6
    assert signal.getsignal(signal.SIGINT) is not None  # handler restored

    steps = []
    r2 = train(data=str(data), out=str(run), epochs=3, resume=True, on_step=lambda i: steps.append(i["step"]), **TINY)
    assert not r2.interrupted and list(r2.history["epoch"]) == [1, 2, 3]
    assert steps == list(range(7, 13))  # continues from step 6: 2 more in epoch 2, 4 in epoch 3
    assert adam_steps(run / "last.pt") == 12
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [1, 2, 3]


def test_time_budget_stops_after_a_validated_epoch(data, tmp_path):
    r = train(data=str(data), out=str(tmp_path / "run"), epochs=100, **{**TINY, "minutes": 1e-4})
    assert len(r.history) == 1 and (tmp_path / "run" / "model.pt").exists()


def test_options_and_bad_config(data, tmp_path):
    r = train(data=str(data), out=str(tmp_path / "r"), epochs=1, loss="ce+dice", class_weights="inverse_sqrt",
              sampler="uniform", **TINY)
    assert np.isfinite(r.history["train_loss"]).all()
    with pytest.raises(ConfigError, match="patch_size=30 must be a positive multiple of 2\\*\\*depth=4; use 32"):
        train(data=str(data), out=str(tmp_path / "x"), **{**TINY, "patch_size": 30})
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({"lr": 1e-3, "learning_rate": 1})


def test_loss_of_all_ignored_batch_is_zero_not_nan():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), 255)
    for crit in (SegmentationLoss(), SegmentationLoss(torch.ones(3), dice_weight=1.0)):
        loss = crit(logits, target)
        assert float(loss.detach()) == 0.0
        loss.backward()
    t = torch.randint(0, 3, (2, 8, 8))
    assert torch.allclose(SegmentationLoss()(logits, t), torch.nn.functional.cross_entropy(logits, t))


def test_dice_term_is_the_mean_soft_dice_loss_of_the_classes_present():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    target = torch.randint(0, 3, (2, 6, 6), generator=g)  # class 3 absent
    target[0, :2] = 255
    prob = logits.softmax(1).numpy()
    t = target.numpy()
    valid = t != 255
    losses = []
    for k in range(3):
        p, y = prob[:, k][valid], (t[valid] == k).astype(float)
        losses.append(1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1))
    expected = float(torch.nn.functional.cross_entropy(logits, target, ignore_index=255)) + 0.5 * np.mean(losses)
    got = float(SegmentationLoss(dice_weight=0.5)(logits, target))
    assert got == pytest.approx(expected, rel=1e-5)
    # a confident, correct prediction drives the Dice term towards zero
    sure = torch.nn.functional.one_hot(torch.where(target == 255, 0, target), 4).permute(0, 3, 1, 2).float() * 50
    assert float(SegmentationLoss(dice_weight=1.0)(sure, target)) < 1e-3


def test_cli_train(data, tmp_path, capsys):
    run = tmp_path / "cli_run"
    code = main(["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--width", "4", "--depth", "2",
                 "--patch-size", "32", "--batch-size", "4", "--patches-per-epoch", "8", "--n-val", "2",
                 "--val-seed", "3", "--no-flips", "--no-rot90", "--no-retain-heap", "--quiet"])
    assert code == 0 and (run / "model.pt").exists()
    assert "best val mIoU" in capsys.readouterr().out
    from lumenkit.data.datasets import LumenStoneDataset, ValidationSplit

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    expected = LumenStoneDataset(data, "val", validation=ValidationSplit(2, 3)).names
    assert cfg["val_seed"] == 3 and cfg["resolved"]["val_names"] == expected
    assert cfg["flips"] is False and cfg["rot90"] is False and "retain_heap" not in cfg
    assert cfg["resolved"]["heap_retained"] is False
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2"), "--quiet"]) == 2


def test_cli_train_records_the_validation_fold(data, tmp_path, capsys):
    from lumenkit.data.datasets import LumenStoneDataset

    args = ["train", "--data", str(data), "--epochs", "1", "--width", "4", "--depth", "2", "--patch-size", "32",
            "--batch-size", "4", "--patches-per-epoch", "8", "--n-val", "2", "--val-seed", "3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "r3"), "--val-fold", "3"]) == 2  # 6 images: folds 0 to 2
    err = capsys.readouterr().err
    assert "val_fold=3 is out of range" in err and "valid range [0, 3)" in err and "--val-fold" in err
    run = tmp_path / "fold2"
    assert main([*args, "--out", str(run), "--val-fold", "2"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    expected = LumenStoneDataset(data, "val", validation=ValidationSplit(2, 3, 2)).names
    assert cfg["val_fold"] == 2 and cfg["val_seed"] == 3 and cfg["resolved"]["val_names"] == expected
    assert expected != LumenStoneDataset(data, "val", validation=ValidationSplit(2, 3)).names
    assert sorted(cfg["resolved"]["fit_names"] + expected) == LumenStoneDataset(data).names
    assert load_checkpoint(run / "model.pt").config["train"]["val_fold"] == 2


def test_val_fold_is_validated_and_kept_on_resume():
    from lumenkit.training.config import RUN_CONTROL_FIELDS, config_differences

    assert TrainConfig().val_fold == 0 and "val_fold" not in RUN_CONTROL_FIELDS
    saved = TrainConfig(data="D", val_fold=2)
    assert config_differences(saved, TrainConfig(data="D", val_fold=1)) == ["val_fold: saved 2, now 1"]
    assert config_differences(saved, TrainConfig(data="D")) == []  # left at its default: as saved
    TrainConfig(data="D", val_fold=5).check()
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="val_fold must be an integer ≥ 0"):
            TrainConfig(data="D", val_fold=bad).check()


# -- predict --------------------------------------------------------------------------------------
@pytest.fixture
def model_pt(tmp_path):
    torch.manual_seed(0)
    m = create_model(width=4, depth=2, classes=3)
    return Checkpoint(m.eval(), ClassMap([0, 1, 2]), scale=0.5).save(tmp_path / "model.pt")


def test_cli_predict_writes_outputs_and_survives_a_corrupt_file(data, model_pt, tmp_path, capsys):
    inputs = tmp_path / "new"
    rng = np.random.default_rng(0)
    save_image(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8), inputs / "a.png")
    save_image(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8), inputs / "sub" / "b.jpg")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    out = tmp_path / "pred"
    code = main(["predict", "--model", str(model_pt), "--out", str(out), "--quiet", "--tile", "64", "--margin", "8",
                 str(inputs), str(data / "imgs" / "test" / "te00.png")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("skipped") == 1 and "broken.jpg" in err and "\n" not in err.strip()
    for name, shape in (("a", (40, 70)), ("b", (50, 30)), ("te00", (64, 96))):
        mask = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / f"{name}.png"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 1, 2}
        assert (out / "overlays" / f"{name}.jpg").exists() and (out / "confidence" / f"{name}.png").exists()
    comp = pd.read_csv(out / "composition.csv")
    assert sorted(comp["image"]) == ["a", "b", "te00"]
    assert np.allclose(comp[["BG", "Ccp", "Gl"]].sum(axis=1), 100.0, atol=0.01)
    # scale: from the dataset's dataset.yaml (0.5) for te00, default 1.0 elsewhere
    assert dict(zip(comp["image"], comp["scale"])) == {"a": 1.0, "b": 1.0, "te00": 0.5}


def test_cli_predict_bad_model_is_one_line(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_text("nope")
    assert main(["predict", "--model", str(bad), "--out", str(tmp_path / "o"), str(tmp_path)]) == 2
    assert "not a readable lumenkit checkpoint" in capsys.readouterr().err


# -- distributed ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, dump: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    r = train(data=data, out=out, epochs=2, device="cpu", **TINY)
    torch.save({k: v.detach().clone() for k, v in r.model.state_dict().items()}, f"{dump}/rank{rank}.pt")


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_parameters(data, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(data), str(out), str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in a:
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(a[k], b[k]), k
    h = read_history(out)
    assert list(h["epoch"]) == [1, 2] and h["patches"].iloc[0] == 16  # 8 per rank
    assert adam_steps(out / "last.pt") == 2 * 2  # 8 patches per rank / batch 4, two epochs


def test_same_seed_gives_the_same_training_steps_on_cpu(data, tmp_path):
    losses = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        seen: list[float] = []
        train(data=str(data), out=str(tmp_path / name), epochs=1, seed=seed,
              on_step=lambda info, s=seen: s.append(float(info["loss"])), **TINY)
        losses[name] = seen
    assert losses["a"] == losses["b"] and len(losses["a"]) == 4
    assert losses["a"] != losses["c"]
    wa = load_checkpoint(tmp_path / "a" / "last.pt").model.state_dict()
    wb = load_checkpoint(tmp_path / "b" / "last.pt").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_training_process_leaves_a_readable_checkpoint_and_resumes(data, tmp_path, sig):
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = ["--data", str(data), "--out", str(run), "--epochs", "200", "--width", "4", "--depth", "2",
            "--patch-size", "32", "--batch-size", "4", "--patches-per-epoch", "16", "--n-val", "2", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "lumenkit", "train", *args])
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # let it get into a later epoch, maybe mid-write
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    assert code == (130 if sig == signal.SIGTERM else -signal.SIGKILL)
    ckpt = load_checkpoint(run / "last.pt")  # complete and readable whatever the moment of the kill
    done = int(ckpt.train_state["epoch"])
    assert not list(run.glob(".*.tmp"))  or sig == signal.SIGKILL  # SIGTERM cleans up; -9 may leave a temp file
    as_cli = {k: v for k, v in TINY.items() if k not in ("scale", "schedule", "exposure", "minutes")}  # the preset's
    r = train(data=str(data), out=str(run), epochs=done + 1, resume=True, **{**as_cli, "patches_per_epoch": 16})
    assert len(r.history) == done + 1


# -- torch.compile of the training step ---------------------------------------------------------------
def test_compile_decision_follows_the_budget_and_the_toolchain(monkeypatch):
    from lumenkit.training.config import COMPILE_AUTO_MINUTES

    cpu = torch.device("cpu")
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    assert compile_decision(TrainConfig(data="d", minutes=45), cpu)[0] is True
    assert compile_decision(TrainConfig(data="d", minutes=COMPILE_AUTO_MINUTES / 2), cpu)[0] is False
    assert compile_decision(TrainConfig(data="d", epochs=50, minutes=None), cpu)[0] is True  # 50 × 512 patches
    assert compile_decision(TrainConfig(data="d", epochs=2, minutes=None), cpu)[0] is False
    assert compile_decision(TrainConfig(data="d", epochs=2, compile="on"), cpu)[0] is True
    assert compile_decision(TrainConfig(data="d", minutes=45, compile="off"), cpu) == (False, "compile='off'")
    monkeypatch.setattr("shutil.which", lambda name: None)
    ok, why = compile_decision(TrainConfig(data="d", minutes=45), cpu)
    assert ok is False and "C++ compiler" in why
    with pytest.raises(ConfigError, match=r"needs a C\+\+ compiler.*compile='off'"):
        compile_decision(TrainConfig(data="d", compile="on"), cpu)
    with pytest.raises(ConfigError, match=r"compile must be 'auto', 'on' or 'off'"):
        TrainConfig(data="d", compile="yes").check()


class _BackwardFails(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("InductorError: C++ compile error (backward graph)")


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_failed_compilation_falls_back_to_the_same_eager_training(data, tmp_path, monkeypatch, where):
    eager = train(data=str(data), out=str(tmp_path / "eager"), epochs=1, compile="off", **TINY)

    def broken_compile(model, *args, **kwargs):
        def run(*a, **k):
            if where == "forward":
                raise RuntimeError("InductorError: C++ compile error\nlong details")
            return _BackwardFails.apply(model(*a, **k))  # the backward graph is compiled lazily, and fails
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    with pytest.warns(RuntimeWarning, match="torch.compile failed \\(RuntimeError: InductorError.*training eagerly"):
        fell_back = train(data=str(data), out=str(tmp_path / "fallback"), epochs=1, compile="on", **TINY)
    pd.testing.assert_frame_equal(eager.history.drop(columns="seconds"), fell_back.history.drop(columns="seconds"))
    step = yaml.safe_load((tmp_path / "fallback" / "config.yaml").read_text())["resolved"]["training_step"]
    assert step == "torch.compile (compile='on')"


@pytest.mark.skipif(not compile_decision(TrainConfig(data="d", compile="auto", minutes=45), torch.device("cpu"))[0],
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_step_trains_like_the_eager_one(data, tmp_path):
    kw = {**TINY, "patches_per_epoch": 8}
    eager = train(data=str(data), out=str(tmp_path / "eager"), epochs=1, compile="off", **kw)
    comp = train(data=str(data), out=str(tmp_path / "comp"), epochs=1, compile="on", **kw)
    assert yaml.safe_load((tmp_path / "comp" / "config.yaml").read_text())["resolved"]["training_step"].startswith(
        "torch.compile")
    # same patches, same initialisation: the compiled graph computes the same losses and updates up to rounding
    assert comp.history["train_loss"].iloc[0] == pytest.approx(eager.history["train_loss"].iloc[0], rel=1e-4)
    for (name, a), b in zip(eager.model.state_dict().items(), comp.model.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=2e-3), name
    assert not any(k.startswith("_orig_mod") for k in load_checkpoint(tmp_path / "comp" / "model.pt").model
                   .state_dict())


def test_weight_average_moves_towards_the_net_and_copies_counters():
    from lumenkit.training.ema import WeightAverage

    torch.manual_seed(0)
    net = create_model("resunet", classes=3, width=4, depth=2)
    avg = WeightAverage(net, 0.9)
    assert all(not p.requires_grad for p in avg.model.parameters()) and not avg.model.training
    before = {k: v.clone() for k, v in avg.model.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        for name, b in net.named_buffers():
            b.add_(1) if name.endswith("num_batches_tracked") else b.add_(2.0)
    d = avg.update(net, step=100)  # ramp min(0.9, 101/110) = 0.9
    assert d == pytest.approx(0.9)
    after, raw = avg.model.state_dict(), net.state_dict()
    for k, v in after.items():
        if k.endswith("num_batches_tracked"):
            assert torch.equal(v, raw[k]), k  # counters are copied, not averaged
        else:
            assert torch.allclose(v, 0.9 * before[k] + 0.1 * raw[k], atol=1e-6), k
    assert avg.update(net, step=1) == pytest.approx(2 / 11)  # early steps: short memory
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, 1.0)


def test_weight_average_invalidates_the_cached_inference_copy():
    from lumenkit.inference.predict import predict_probs
    from lumenkit.training.ema import WeightAverage

    torch.manual_seed(0)
    net = create_model("resunet", classes=3, width=4, depth=2)
    avg = WeightAverage(net, 0.5)
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    p0 = predict_probs(avg.model, image, tile=32, margin=0)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(-3.0)
    avg.update(net, step=1000)
    assert not torch.allclose(predict_probs(avg.model, image, tile=32, margin=0), p0)


def test_ema_training_validates_saves_and_resumes_the_average(data, tmp_path):
    run = tmp_path / "run"

    def interrupt(info):
        if info["step"] == 6:
            os.kill(os.getpid(), signal.SIGINT)

    r = train(data=str(data), out=str(run), epochs=3, ema=0.9, on_step=interrupt, **TINY)
    assert r.interrupted
    st = load_checkpoint(run / "last.pt").train_state
    raw = load_checkpoint(run / "last.pt").model.state_dict()
    assert set(st["ema"]) == set(raw) and any(not torch.equal(st["ema"][k], raw[k]) for k in raw)
    best = load_checkpoint(run / "model.pt").model.state_dict()  # epoch 1's average, not its raw weights
    assert any(not torch.equal(best[k], raw[k]) for k in raw if not k.endswith("num_batches_tracked"))
    r2 = train(data=str(data), out=str(run), epochs=3, ema=0.9, resume=True, **TINY)
    assert list(r2.history["epoch"]) == [1, 2, 3]
    final = load_checkpoint(run / "last.pt")
    for k, v in r2.model.state_dict().items():  # the returned model is the average kept for resuming
        assert torch.equal(v.cpu(), final.train_state["ema"][k]), k
    with pytest.raises(ConfigError, match="ema"):
        train(data=str(data), out=str(run), epochs=4, ema=1.5, resume=True, **TINY)
    with pytest.raises(ConfigError, match=r"ema: saved 0.0, now 0.9"):
        plain = tmp_path / "plain"
        train(data=str(data), out=str(plain), epochs=1, **TINY)
        train(data=str(data), out=str(plain), epochs=2, ema=0.9, resume=True, **TINY)


def test_a_model_records_the_pixel_size_it_was_trained_at(tmp_path):
    root = write_fake_dataset(tmp_path / "d", n_train=6, size=(96, 64), scale=None)
    (root / "dataset.yaml").write_text("name: d\nscale: 0.5\nclasses: [0, 1, 2]\npixel_size_um: 1.3\n")
    train(data=str(root), out=str(tmp_path / "run"), epochs=1, **{**TINY, "scale": 0.25})
    ckpt = load_checkpoint(tmp_path / "run" / "model.pt")
    assert ckpt.scale == 0.25 and ckpt.pixel_size_um == pytest.approx(2.6)  # µm per pixel at the model's scale
    plain = write_fake_dataset(tmp_path / "e")  # its dataset.yaml declares no pixel size
    train(data=str(plain), out=str(tmp_path / "r2"), epochs=1, **TINY)
    assert load_checkpoint(tmp_path / "r2" / "model.pt").pixel_size_um is None


@pytest.mark.parametrize("val_tile", [None, 512])
def test_each_epoch_is_validated_as_evaluate_scores_the_kept_model(tmp_path, val_tile):
    """The window-dependent case: ``aspp`` pools over each window, so a validation tiled otherwise than prediction
    would choose ``model.pt`` by a score ``lumenkit evaluate`` does not give it (images 1200 px wide at model
    scale: three 512-px windows, two of the prediction's 768)."""
    from lumenkit.evaluation.evaluate import evaluate
    from lumenkit.training.validation import load_validation, validate

    data = write_fake_dataset(tmp_path / "wide", n_train=4, n_test=0, size=(1200, 160))
    cfg = TrainConfig(data=str(data), n_val=2, **({} if val_tile is None else {"val_tile": val_tile}))
    torch.manual_seed(3)
    model = create_model("resunet", in_channels=3, classes=3, width=4, depth=2, context="aspp").eval()
    with torch.no_grad():  # weigh the window's mean as a trained network does (at initialisation it is ~1e-6)
        model.context.pooled[0].weight.mul_(1e3)
    ck = Checkpoint(model=model, class_map=ClassMap([0, 1, 2]), scale=0.5)
    every_epoch = validate(model, load_validation(cfg, ck.class_map, 0.5), 3, tile=cfg.val_tile,
                           margin=cfg.val_margin)["cm"]
    kept = evaluate(str(data), ck, split="val", validation=cfg.validation, baselines=False, progress=False)
    assert np.array_equal(every_epoch, kept.scores.confusion) == (val_tile is None)
