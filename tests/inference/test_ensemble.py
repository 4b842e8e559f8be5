import json

import numpy as np
import pytest
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.errors import CheckpointError, ConfigError
from lumenkit.inference.ensemble import Ensemble
from lumenkit.inference.loading import load_ensemble
from lumenkit.inference.predict import predict_files, predict_image
from lumenkit.inference.tiling import Tiling
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model

CODES = [0, 3, 11]


def _model(seed: int, depth: int = 3):
    torch.manual_seed(seed)
    m = create_model(width=4, depth=depth, classes=3)
    with torch.no_grad():  # non-trivial BN statistics and biases, so the two members really differ
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.5, 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    a = Checkpoint(model=_model(0), class_map=ClassMap(CODES), scale=0.5).save(d / "a" / "model.pt")
    b = Checkpoint(model=_model(1, depth=2), class_map=ClassMap(CODES), scale=0.5).save(d / "b" / "model.pt")
    return a, b


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    img[20:60, 30:100] = (230, 200, 40)
    return img


def test_ensemble_probabilities_are_the_weighted_mean_of_its_members(members, image):
    tiling = Tiling(64, 16)
    pa = predict_image(members[0], image, tiling=tiling, return_probs=True)["probs"]
    pb = predict_image(members[1], image, tiling=tiling, return_probs=True)["probs"]
    assert not np.allclose(pa, pb, atol=1e-2)  # the members disagree, so the mean is a real test
    both = predict_image(list(members), image, tiling=tiling, return_probs=True)
    np.testing.assert_allclose(both["probs"], (pa + pb) / 2, atol=1e-5)
    assert np.array_equal(both["indices"], both["probs"].argmax(0))
    weighted = predict_image(load_ensemble(members, weights=[1, 3]), image, tiling=tiling, return_probs=True)
    np.testing.assert_allclose(weighted["probs"], 0.25 * pa + 0.75 * pb, atol=1e-5)
    ens = load_ensemble(members)
    assert ens.output_stride == 8 and ens.classes == 3 and ens.scale == 0.5  # lcm of strides 8 (depth 3), 4
    assert list(ens.class_map.codes) == CODES and set(np.unique(both["codes"])) <= set(CODES)


def test_one_path_in_a_list_is_that_model_and_loaded_models_pass_through(members, image):
    from lumenkit.inference.loading import load_model

    assert isinstance(load_model([members[0]]), Checkpoint)  # not a one-member ensemble
    loaded = [Checkpoint.load(p) for p in members]
    assert load_model(loaded[:1]) is loaded[0]
    ens = load_model(loaded)
    assert isinstance(ens, Ensemble) and ens.members[1] is loaded[1]
    one = predict_image([members[0]], image, tiling=Tiling(64, 16))["codes"]
    assert np.array_equal(one, predict_image(members[0], image, tiling=Tiling(64, 16))["codes"])


def test_the_runner_works_outside_inference_mode(members):
    from lumenkit.inference.runners import as_runner

    ens = load_ensemble(members)
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    p = as_runner(ens).probs(x)  # members' outputs are inference tensors: averaged without writing into them
    ref = sum(as_runner(m).probs(x) for m in ens.members) / 2
    assert torch.allclose(p, ref, atol=1e-6) and torch.allclose(p.sum(1), torch.ones(1, 32, 32), atol=1e-5)


def test_a_mosaics_resume_key_tells_ensembles_apart(members, tmp_path):
    from lumenkit.inference.mosaic import _model_key

    c = Checkpoint(model=_model(3), class_map=ClassMap(CODES), scale=0.5).save(tmp_path / "c.pt")
    keys = {_model_key(load_ensemble([members[0], members[1]])), _model_key(load_ensemble([members[0], c])),
            _model_key(load_ensemble(members, weights=[1, 3])), _model_key(Checkpoint.load(members[0]))}
    assert len(keys) == 4
    assert _model_key(load_ensemble(members)) == _model_key(load_ensemble(members))  # and stays put


def test_members_that_cannot_be_averaged_are_refused_by_name(members, tmp_path):
    other_codes = Checkpoint(model=_model(2), class_map=ClassMap([0, 3, 12]), scale=0.5).save(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c\.pt: classes .* differ from .*a/model\.pt"):
        load_ensemble([members[0], other_codes])
    other_scale = Checkpoint(model=_model(2), class_map=ClassMap(CODES), scale=0.25).save(tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match=r"d\.pt: trained at scale 0\.25"):
        load_ensemble([members[0], other_scale])
    with pytest.raises(CheckpointError, match="2 weights for 1 models"):
        load_ensemble([members[0]], weights=[1, 1])
    with pytest.raises(CheckpointError, match="not all zero"):
        load_ensemble(members, weights=[0, 0])
    with pytest.raises(CheckpointError, match=r"weights \['a', 1\] must be numbers"):
        load_ensemble(members, weights=["a", 1])
    with pytest.raises(CheckpointError, match="at least one"):
        Ensemble([])


def test_predict_files_writes_the_ensembles_masks(members, image, tmp_path):
    from lumenkit.cli import main
    from lumenkit.data.imageio import read_mask, save_image

    save_image(image, tmp_path / "in" / "s.png")
    expect = predict_image(list(members), image, 0.5)["codes"]
    rep = predict_files(list(members), [tmp_path / "in"], tmp_path / "out", scale=0.5, progress=False)
    assert rep.ok and np.array_equal(read_mask(tmp_path / "out" / "s.png"), expect)
    assert main(["predict", "--model", str(members[0]), "--model", str(members[1]), "--scale", "0.5", "--quiet",
                 "--out", str(tmp_path / "cli"), str(tmp_path / "in")]) == 0
    assert np.array_equal(read_mask(tmp_path / "cli" / "s.png"), expect)


def _trained_on(fold: int, seed: int, path):
    cfg = {"train": {"n_val": 2, "val_seed": 0, "val_fold": fold}}
    return Checkpoint(model=_model(seed, depth=2), class_map=ClassMap([0, 1, 2]), scale=0.5, config=cfg).save(path)


def test_evaluate_scores_an_ensemble_only_where_no_member_trained(fake_dataset, tmp_path, capsys):
    from lumenkit.cli import main
    from lumenkit.evaluation.evaluate import evaluate

    a, b = _trained_on(1, 0, tmp_path / "a" / "model.pt"), _trained_on(1, 1, tmp_path / "b" / "model.pt")
    ev = evaluate(fake_dataset, [a, b], split="val", baselines=False, progress=False)
    assert ev.info["ensemble"] == ["a/model.pt", "b/model.pt"] and ev.info["val_fold"] == 1
    assert ev.info["images"] == 2
    c = _trained_on(0, 2, tmp_path / "c" / "model.pt")
    with pytest.raises(ConfigError, match=r"c/model\.pt: trained with .*val_fold=0, not the scored split .*val_fold=1"
                                          r".*trained on some"):
        evaluate(fake_dataset, [a, c], split="val", baselines=False, progress=False)
    bare = Checkpoint(model=_model(4, depth=2), class_map=ClassMap([0, 1, 2]), scale=0.5).save(tmp_path / "e.pt")
    with pytest.raises(ConfigError, match=r"e\.pt: records no validation split"):  # as an ONNX export records none
        evaluate(fake_dataset, [a, bare], split="val", baselines=False, progress=False)
    other = {"train": {"n_val": 2, "val_seed": 0, "val_fold": 0, "data": "/elsewhere/another_dataset"}}
    d = Checkpoint(model=_model(5, depth=2), class_map=ClassMap([0, 1, 2]), scale=0.5, config=other)
    evaluate(fake_dataset, [a, d], split="val", baselines=False, progress=False)  # d never saw these images
    evaluate(fake_dataset, [a, c], split="test", baselines=False, progress=False)  # held out from both: fine
    out = tmp_path / "ev.json"
    assert main(["evaluate", "--data", str(fake_dataset), "--split", "val", "--model", str(a), "--model", str(b),
                 "--out", str(out), "--quiet", "--no-baselines"]) == 0
    assert json.loads(out.read_text())["ensemble"] == ["a/model.pt", "b/model.pt"]
    assert main(["evaluate", "--data", str(fake_dataset), "--split", "val", "--model", str(a), "--model", str(c),
                 "--out", str(tmp_path / "bad.json"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c/model.pt" in err[0] and not (tmp_path / "bad.json").exists()
