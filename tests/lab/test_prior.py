import numpy as np
import pytest
import torch
from conftest import write_fake_dataset

from lumenkit.data.catalogue import ClassMap
from lumenkit.errors import CheckpointError, ConfigError
from lumenkit.lab.prior import (
    apply_prior_correction,
    correct_model,
    em_prior,
    fit_prior_correction,
    prior_shift,
    served_counts,
)
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
from lumenkit.models.resunet import create_model
from lumenkit.training.config import TrainConfig
from lumenkit.training.loop import train


def test_prior_shift_is_log_ratio_of_shares():
    s = prior_shift([10, 10, 0], [30, 10, 5])
    assert s[0] == pytest.approx(np.log((30 / 45) / 0.5)) and s[1] == pytest.approx(np.log((10 / 45) / 0.5))
    assert s[2] == 0  # never served: no information, no shift
    assert np.allclose(prior_shift([5, 3, 2], [50, 30, 20]), 0)  # served as in nature (uniform sampler): nothing
    with pytest.raises(ValueError, match="equal length"):
        prior_shift([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="not all zero"):
        prior_shift([0, 0], [1, 2])


def test_correction_adds_the_bias_to_every_logit_and_leaves_the_original():
    torch.manual_seed(0)
    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()
    ck = Checkpoint(net, ClassMap([0, 1, 2]), 0.5, config={"train": {"data": "D"}})
    x = torch.randn(1, 3, 32, 32)
    before = net(x).detach()
    bias = [0.5, -1.0, 2.0]
    out = apply_prior_correction(ck, bias, {"tau": 0.5})
    assert torch.allclose(net(x), before)  # original untouched
    assert torch.allclose(out.model.eval()(x) - before, torch.tensor(bias).view(1, 3, 1, 1), atol=1e-5)
    assert out.config["prior_correction"][0]["tau"] == 0.5 and "prior_correction" not in ck.config
    twice = apply_prior_correction(out, bias)
    assert len(twice.config["prior_correction"]) == 2
    assert torch.allclose(twice.model.eval()(x) - before, 2 * torch.tensor(bias).view(1, 3, 1, 1), atol=1e-5)
    with pytest.raises(ValueError, match="one value per class"):
        apply_prior_correction(ck, [1.0, 2.0])


def test_natural_counts_come_from_the_fold_the_model_trained_on(tmp_path):
    from lumenkit.data.datasets import LumenStoneDataset, ValidationSplit
    from lumenkit.lab.prior import natural_counts

    data = write_fake_dataset(tmp_path / "fake", n_train=6, size=(96, 64), codes=(0, 1, 2))
    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()

    def counts(fold=0):
        fit = LumenStoneDataset(data, "fit", validation=ValidationSplit(2, 0, fold)).class_counts()
        return fit[["BG", "Ccp", "Gl"]].to_numpy().sum(0)

    assert not np.array_equal(counts(fold=1), counts())  # the folds' fit images differ
    for fold in (0, 1, 2):
        ck = Checkpoint(net, ClassMap([0, 1, 2]), 0.5,
                        config={"train": {"data": str(data), "n_val": 2, "val_seed": 0, "val_fold": fold}})
        assert np.array_equal(natural_counts(ck), counts(fold=fold))
        assert np.array_equal(natural_counts(ck, validation=ValidationSplit.of_model(ck, fold=0)), counts())
    old = Checkpoint(net, ClassMap([0, 1, 2]), 0.5, config={"train": {"data": str(data), "n_val": 2}})
    assert np.array_equal(natural_counts(old), counts())  # recorded no fold: the usual split
    with pytest.raises(ConfigError, match="out of range"):
        natural_counts(old, validation=ValidationSplit.of_model(old, fold=3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior")
    data = write_fake_dataset(root / "fake", n_train=6, size=(96, 64), codes=(0, 1, 2))
    cfg = TrainConfig(data=str(data), out=str(root / "run"), width=4, depth=2, patch_size=32, batch_size=4,
                      patches_per_epoch=32, epochs=2, n_val=2, val_tile=64, val_margin=8, threads=1, quiet=True,
                      scale=None, schedule="plateau", exposure=0.0, minutes=None)
    train(cfg)
    return data, root / "run"


def test_fit_chooses_the_best_tau_on_training_images_and_writes_a_checkpoint(trained, tmp_path):
    _, run = trained
    served = served_counts(run / "model.pt")
    assert served.shape == (3,) and served.sum() > 0
    fit = fit_prior_correction(run / "model.pt", taus=(0.0, 0.5, 1.0), progress=False)
    assert fit.split == "fit" and fit.images == 4  # 6 training images less 2 validation images
    assert list(fit.curve["tau"]) == [0.0, 0.5, 1.0]
    assert fit.curve["mean_iou"].max() == pytest.approx(fit.curve.set_index("tau").loc[fit.tau, "mean_iou"])
    assert np.allclose(fit.shift, prior_shift(served, fit.natural))
    out, got, info = correct_model(run / "model.pt", tmp_path / "corrected.pt", taus=(0.0, 0.5, 1.0), progress=False)
    assert got is not None and info["tau"] == got.tau and (tmp_path / "corrected.prior.csv").exists()
    ck, orig = load_checkpoint(out), load_checkpoint(run / "model.pt")
    delta = (ck.model.head.bias - orig.model.head.bias).detach().numpy()
    assert np.allclose(delta, got.tau * got.shift, atol=1e-5)
    assert ck.config["prior_correction"][-1]["fitted_on"] == "fit"
    # tau at zero: predictions of the corrected model equal the fitted curve's first row
    fixed, _, info0 = correct_model(run / "model.pt", tmp_path / "zero.pt", tau=0.0, progress=False)
    assert info0["fitted_on"] is None
    assert np.allclose(load_checkpoint(fixed).model.head.bias.detach(), orig.model.head.bias.detach())


def test_refuses_to_overwrite_and_needs_served_counts(trained, tmp_path):
    _, run = trained
    with pytest.raises(ConfigError, match="overwrite the trained model"):
        correct_model(run / "model.pt", run / "model.pt")
    lone = tmp_path / "lone" / "model.pt"
    lone.parent.mkdir()
    load_checkpoint(run / "model.pt").save(lone)
    with pytest.raises(CheckpointError, match=r"last\.pt"):
        served_counts(lone)


def test_cli_writes_the_corrected_model_beside_the_run(trained, capsys):
    from lumenkit.lab.cli import main

    _, run = trained
    assert main(["prior", "--model", str(run / "model.pt"), "--tau", "0.5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "full shift log(natural/served)" in out and "model_prior.pt (tau 0.5)" in out
    assert "served shares: BG" in out and "natural shares: BG" in out
    ck = load_checkpoint(run / "model_prior.pt")
    assert ck.config["prior_correction"][-1]["tau"] == 0.5
    assert main(["prior", "--model", str(run / "model.pt"), "--tau", "1", "--em", "--quiet",
                 "--out", str(run / "model_em.pt")]) == 0
    assert load_checkpoint(run / "model_em.pt").config["prior_correction"][-1]["natural_from"] == "em"
    capsys.readouterr()
    assert main(["prior", "--model", str(run / "nope.pt")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err


def _bayes_posteriors(prior, served, n, rng):
    """Pixels drawn under ``prior`` from three 1-D Gaussians; posteriors as a model trained under ``served`` gives."""
    means = np.array([0.0, 1.5, 3.0])
    y = rng.choice(3, size=n, p=prior)
    x = rng.normal(means[y], 1.0)
    lik = np.exp(-0.5 * (x[None] - means[:, None]) ** 2)
    post = lik * np.asarray(served)[:, None]
    return post / post.sum(0, keepdims=True)


def test_em_prior_recovers_the_prior_of_unlabelled_pixels():
    rng = np.random.default_rng(0)
    served, true = np.array([1 / 3, 1 / 3, 1 / 3]), np.array([0.8, 0.15, 0.05])
    probs = [_bayes_posteriors(true, served, 20000, rng).reshape(3, 100, 200) for _ in range(2)]
    naive = np.concatenate([p.reshape(3, -1) for p in probs], 1).mean(1)
    est = em_prior(probs, served * 999)  # counts in any unit
    assert np.abs(est - true).max() < 0.02  # the mean posterior alone is far off (it leans to the served prior)
    assert np.abs(naive - true).max() > 0.05
    assert est.sum() == pytest.approx(1.0)
    # posteriors already under the served prior: EM stays there
    same = em_prior([_bayes_posteriors(served, served, 40000, rng)], served)
    assert np.abs(same - served).max() < 0.02
    # a class never served stays at zero
    assert em_prior([np.full((3, 10), 1 / 3)], [1, 1, 0])[2] == 0


def test_em_prior_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="3 classes"):
        em_prior([np.ones((2, 4))], [1, 1, 1])
    with pytest.raises(ValueError, match="not all zero"):
        em_prior([np.ones((3, 4)) / 3], [0, 0, 0])


def test_em_correction_reads_no_mask_and_is_recorded(trained, tmp_path):
    _, run = trained
    out, fit, info = correct_model(run / "model.pt", tmp_path / "em.pt", tau=1.0, em=True, progress=False)
    assert fit is None and info["natural_from"] == "em" and sum(info["natural"]) == pytest.approx(1e6, abs=3)
    served = served_counts(run / "model.pt")
    ck, orig = load_checkpoint(out), load_checkpoint(run / "model.pt")
    delta = (ck.model.head.bias - orig.model.head.bias).detach().numpy()
    assert np.allclose(delta, prior_shift(served, info["natural"]), atol=1e-5)
