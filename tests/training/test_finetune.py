"""Few labels and a head start: sparse (stroke) datasets, --init from a trained model with added and dropped classes."""

import numpy as np
import pytest
import torch
import yaml
from conftest import write_fake_dataset

from lumenkit.cli import main
from lumenkit.data.catalogue import IGNORE, ClassMap
from lumenkit.data.datasets import LumenStoneDataset, ValidationSplit
from lumenkit.data.imageio import read_mask, resize_mask, save_image
from lumenkit.errors import CheckpointError, ConfigError
from lumenkit.lab.strokes import simulate_strokes, sparse_dataset
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
from lumenkit.models.resunet import create_model
from lumenkit.training.init import init_from_checkpoint
from lumenkit.training.loop import train

TINY = dict(width=4, depth=2, patch_size=32, batch_size=4, patches_per_epoch=16, n_val=2, val_tile=64,
            val_margin=8, quiet=True, threads=1, scale=None, schedule="plateau", exposure=0.0, minutes=None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("ft") / "fake", n_train=6, size=(96, 64))


def source(tmp_path, codes=(0, 1, 2), width=4, depth=2):
    torch.manual_seed(1)
    net = create_model("resunet", width=width, depth=depth, classes=len(codes), mean=(0.3, 0.4, 0.5),
                       std=(0.2, 0.2, 0.2))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    path = tmp_path / "source.pt"
    Checkpoint(net.eval(), ClassMap(list(codes)), 0.5).save(path)
    return path, net


def test_init_keeps_every_kept_weight_bit_identical(tmp_path):
    path, old = source(tmp_path)
    net, rec = init_from_checkpoint(path, ClassMap([0, 2, 4]), "resunet", 4, 2, "residual", seed=0)
    a, b = old.state_dict(), net.state_dict()
    for k, v in a.items():
        if not k.startswith("head."):
            assert torch.equal(b[k], v), k
    assert torch.equal(b["head.weight"][0], a["head.weight"][0]) and torch.equal(b["head.bias"][1], a["head.bias"][2])
    assert torch.equal(b["head.weight"][1], a["head.weight"][2])
    assert not torch.equal(b["head.weight"][2], a["head.weight"][1])  # code 4 is new, not code 1's channel
    assert (rec.kept, rec.added, rec.dropped, rec.frozen) == ([0, 2], [4], [1], [])
    assert net.mean == old.mean and len(rec.sha256) == 64
    frozen, rec = init_from_checkpoint(path, ClassMap([0, 1]), "resunet", 4, 2, "residual", 0, freeze="encoder")
    assert rec.frozen == ["encoder"] and not any(p.requires_grad for p in frozen.encoder.parameters())
    assert all(p.requires_grad for p in frozen.decoder.parameters())


def test_another_architecture_is_one_line_with_the_fix(data, tmp_path, capsys):
    from lumenkit.training.config import TrainConfig

    path, _ = source(tmp_path, width=8)
    with pytest.raises(CheckpointError, match="--width 8") as e:
        init_from_checkpoint(path, ClassMap([0, 1, 2]), "resunet", 4, 2, "residual", 0)
    assert "\n" not in str(e.value)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--width", "4", "--depth", "2", "--quiet",
            "--n-val", "2", "--patch-size", "32"]
    assert main([*args, "--init", str(path)]) == 2
    assert "--width 8" in capsys.readouterr().err
    assert main([*args, "--init", str(tmp_path / "none.pt")]) == 2
    assert "none.pt" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs init"):
        TrainConfig(data="D", freeze="encoder").check()


def test_fine_tuning_records_what_it_started_from(data, tmp_path):
    path, old = source(tmp_path)
    run = tmp_path / "run"
    train(data=str(data), out=str(run), epochs=1, init=str(path), freeze="encoder", **TINY)
    ck = load_checkpoint(run / "last.pt")
    assert ck.config["init"]["source"] == str(path) and ck.config["init"]["kept"] == [0, 1, 2]
    assert ck.config["init"]["frozen"] == ["encoder"]
    enc = {k: v for k, v in ck.model.state_dict().items() if k.startswith("encoder.") and "running" not in k
           and "num_batches" not in k}
    for k, v in enc.items():  # frozen: weights unchanged by the epoch (batch-norm statistics adapt)
        assert torch.equal(v, old.state_dict()[k]), k
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["init"] == str(path) and cfg["resolved"]["init"]["dropped"] == []
    assert cfg["resolved"]["labels"] == "dense"


def test_strokes_stay_inside_their_class_and_reach_the_fraction():
    from lumenkit.synth.render import generate_section

    _, mask = generate_section("cutnt_c", (600, 450), np.random.default_rng(0), scale=0.5)
    sparse = simulate_strokes(mask, 0.02, np.random.default_rng(0))
    labelled = sparse != IGNORE
    assert 0.01 < labelled.mean() < 0.04
    assert (sparse[labelled] == mask[labelled]).all()
    present = {int(c) for c in np.unique(mask)} - {IGNORE}
    assert {int(c) for c in np.unique(sparse[labelled])} == present  # every mineral gets strokes
    with pytest.raises(ValueError, match="fraction"):
        simulate_strokes(mask, 0.0, np.random.default_rng(0))


def test_sparse_masks_keep_their_strokes_at_the_training_scale():
    m = np.full((64, 64), IGNORE, np.uint8)
    m[10, 5:50] = 2  # a one-pixel stroke
    assert (resize_mask(m, (8, 8)) == IGNORE).all()  # the dense vote loses it
    small = resize_mask(m, (8, 8), sparse=True)
    assert (small == 2).sum() == 7 and set(np.unique(small)) == {2, IGNORE}
    assert (resize_mask(m, (10, 10), sparse=True) == 2).any()  # a non-integer factor too


def test_a_stroke_dataset_trains_and_validates_on_whole_masks(data, tmp_path):
    sparse = tmp_path / "sparse"
    split = ValidationSplit(n_val=2)
    got = sparse_dataset(data, sparse, 0.05, validation=split, width=1, length=10)
    assert got["images"] == 4 and 0 < got["labelled_fraction"] < 0.2
    ds = LumenStoneDataset(sparse, "fit")
    assert ds.sparse and ds.info.validation == ("tr02", "tr03")
    for name in ("tr02", "tr03"):  # validation masks whole
        assert (read_mask(sparse / "masks" / "train" / f"{name}.png") == read_mask(data / "masks" / "train" /
                                                                                  f"{name}.png")).all()
    run = tmp_path / "run"
    r = train(data=str(sparse), out=str(run), epochs=1, **TINY)
    assert np.isfinite(r.best_miou)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["resolved"]["labels"].startswith("sparse") and cfg["resolved"]["val_names"] == ["tr02", "tr03"]
    # model.pt corrected to the images' class prior by EM, recorded with its validation score before and after
    best = load_checkpoint(run / "model.pt")
    (done,) = best.config["prior_correction"]
    assert done["natural_from"] == "em" and done["tau"] == 0.5
    assert done["images"] == len(LumenStoneDataset(sparse, "fit"))
    assert sum(done["natural"]) == pytest.approx(1e6, abs=len(done["natural"]))
    assert done["val_miou"][0] == pytest.approx(r.best_miou, abs=1e-6)
    plain = train(data=str(sparse), out=str(tmp_path / "plain"), epochs=1, strokes_prior=0.0, **TINY)
    assert "prior_correction" not in load_checkpoint(tmp_path / "plain" / "model.pt").config
    head = dict(best.model.head.named_parameters())["bias"].detach()
    plain_head = dict(load_checkpoint(tmp_path / "plain" / "model.pt").model.head.named_parameters())["bias"].detach()
    np.testing.assert_allclose(head - plain_head, done["bias"], atol=1e-5)  # same training, bias shifted
    assert np.isfinite(plain.best_miou)
    train(data=str(sparse), out=str(run), epochs=1, resume=True, **TINY)  # nothing left to train: not corrected again
    assert len(load_checkpoint(run / "model.pt").config["prior_correction"]) == 1


def test_bad_stroke_masks_are_one_line(data, tmp_path, capsys):
    sparse = tmp_path / "sparse"
    sparse_dataset(data, sparse, 0.05, validation=ValidationSplit(n_val=2), width=1, length=10)
    empty = sparse / "masks" / "train" / "tr00.png"
    save_image(np.full_like(read_mask(empty), IGNORE), empty)
    assert main(["train", "--data", str(sparse), "--out", str(tmp_path / "r"), "--epochs", "1", "--minutes", "none",
                 "--width", "4", "--depth", "2", "--patch-size", "32", "--n-val", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "tr00.png: no labelled pixel" in err and "paint at least one stroke" in err and err.count("\n") == 1
    odd = sparse / "masks" / "train" / "tr01.png"
    m = read_mask(odd)
    m[0, 0] = 200
    save_image(m, odd)
    save_image(read_mask(data / "masks" / "train" / "tr00.png"), empty)
    assert main(["train", "--data", str(sparse), "--out", str(tmp_path / "r2"), "--epochs", "1", "--minutes", "none",
                 "--width", "4", "--depth", "2", "--patch-size", "32", "--n-val", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "tr01.png" in err and "200" in err and err.count("\n") == 1
