import numpy as np
import pandas as pd
import pytest
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.flatfield import FlatField, white_balance_gains
from lumenkit.errors import ConfigError
from lumenkit.evaluation.robustness import (
    PERTURBATIONS,
    brightness,
    defocus,
    image_transform,
    jpeg,
    noise,
    parse_perturb,
    robustness_curves,
    vignetting,
    white_balance,
    worst_conditions,
)
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(40, 200, (60, 80, 3), dtype=np.uint8)


def test_perturbations_do_what_they_say(image):
    assert brightness(image, 0.2).mean() > image.mean() * 1.15
    wb = white_balance(image, 0.1).astype(float).mean((0, 1))
    assert wb[0] > image[..., 0].mean() and wb[2] < image[..., 2].mean()
    v = vignetting(np.full((60, 80, 3), 200, np.uint8), 0.5)
    assert v[30, 40, 0] > 195 and v[0, 0, 0] < 110
    assert defocus(image, 2.0).std() < image.std() * 0.5
    assert abs(noise(image, 10.0).astype(float).std() - np.hypot(image.std(), 10)) < 1.5
    assert np.abs(jpeg(image, 25).astype(float) - image).mean() > 2
    for p in PERTURBATIONS.values():
        out = p.apply(image, p.strengths[0])
        assert out.shape == image.shape and out.dtype == np.uint8


def test_parse_perturb():
    assert parse_perturb("white_balance=0.1") == ("white_balance", 0.1)
    with pytest.raises(ConfigError, match="unknown perturbation 'fog'; choose from"):
        parse_perturb("fog=1")
    with pytest.raises(ValueError, match="must be a number"):
        parse_perturb("gamma=lots")


def test_flat_field_removes_synthetic_vignetting_and_colour_cast():
    rng = np.random.default_rng(1)
    scene = rng.integers(60, 180, (120, 160, 3)).astype(np.float32)
    h, w = scene.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    light = (1 - 0.5 * r2)[..., None] * np.array([1.1, 1.0, 0.85])
    mirror = np.clip(200 * light + rng.normal(0, 2, (h, w, 3)), 0, 255).astype(np.uint8)
    shot = np.clip(scene * light, 0, 255).astype(np.uint8)
    ff = FlatField.from_reference(mirror, target=200)
    fixed = ff(shot).astype(np.float32)
    err_before = np.abs(shot - scene).mean()
    err_after = np.abs(fixed - scene).mean()
    assert err_after < 0.25 * err_before and err_after < 6
    # corner and centre now agree, channels balanced
    assert abs(fixed[:20, :20].mean() - fixed[50:70, 70:90].mean()) < 12
    # a reference of another size is resampled
    assert ff(shot[::2, ::2]).shape == (60, 80, 3)
    g = white_balance_gains(mirror)
    assert g[1] == pytest.approx(1.0) and g[0] < 1 < g[2]


def test_flat_field_rejects_dark_reference():
    with pytest.raises(ValueError, match="near-black"):
        FlatField.from_reference(np.zeros((20, 20, 3), np.uint8))


@pytest.mark.slow
def test_robustness_curves_and_worst_conditions(fake_dataset):
    torch.manual_seed(0)
    m = create_model("resunet", width=4, depth=2, classes=3)
    m.eval()
    ckpt = Checkpoint(model=m, class_map=ClassMap([0, 1, 2]), scale=0.5)
    curves = robustness_curves(fake_dataset, ckpt, names=["brightness", "scale"],
                               strengths={"brightness": [0.3], "scale": [0.25]}, progress=False)
    assert list(curves["perturbation"]) == ["none", "brightness", "scale"]
    assert curves["mean_iou"].between(0, 1).all() and "iou_Ccp" in curves
    worst = worst_conditions(curves, k=2)
    assert len(worst) == 2 and "what it means" in worst
    fixed = robustness_curves(fake_dataset, ckpt, names=["brightness"], strengths={"brightness": [0.3]},
                              remedy="flat_field", progress=False)
    assert list(fixed["remedy"]) == ["", "flat_field"]
    from lumenkit.evaluation.robustness import RobustnessStudy

    study = RobustnessStudy(curves, fixed)
    assert study.summary().startswith("Conditions that hurt most:") and "below the clean" in study.summary()


@pytest.mark.parametrize(("kw", "message"), [
    ({"remedy": "flatfield"}, "unknown remedy 'flatfield'"),
    ({"names": ["brightnes"]}, "unknown perturbation 'brightnes'; choose from brightness"),
    ({"strengths": {"blurr": [1.0]}}, "unknown perturbation 'blurr'"),
])
def test_robustness_curves_refuse_unknown_names_before_any_work(tmp_path, kw, message):
    from lumenkit.errors import ConfigError

    # the model path does not exist: the refusal comes before the checkpoint is read, let alone any evaluation
    with pytest.raises(ConfigError, match=message):
        robustness_curves(tmp_path, tmp_path / "absent.pt", progress=False, **kw)
    with pytest.raises(ConfigError, match="unknown perturbation 'tilt'"):
        image_transform("tilt", 0.1)


def test_flat_field_remedy_undoes_multiplicative_conditions(image):
    from lumenkit.evaluation.robustness import flat_field_remedy

    for name, s in (("brightness", -0.3), ("white_balance", 0.2), ("vignetting", 0.5)):
        p = PERTURBATIONS[name].apply(image, s)
        fixed = flat_field_remedy(name, s)(p)
        assert np.abs(fixed.astype(float) - image).mean() < 0.4 * np.abs(p.astype(float) - image).mean(), name
    blurred = defocus(image, 2.0)
    assert np.abs(flat_field_remedy("defocus", 2.0)(blurred).astype(float) - blurred).mean() < 1.5


@pytest.mark.slow
def test_robustness_and_perturbed_evaluate_cli(fake_dataset, tmp_path, capsys):
    import json

    from lumenkit.cli import main

    torch.manual_seed(0)
    m = create_model("resunet", width=4, depth=2, classes=3)
    m.eval()
    Checkpoint(model=m, class_map=ClassMap([0, 1, 2]), scale=0.5).save(tmp_path / "model.pt")
    out = tmp_path / "rob.json"
    assert main(["robustness", "--data", str(fake_dataset), "--model", str(tmp_path / "model.pt"), "--out", str(out),
                 "--names", "white_balance,defocus", "--augmented-model", str(tmp_path / "model.pt")]) == 0
    d = json.loads(out.read_text())
    assert {r["perturbation"] for r in d["curves"]} == {"none", "white_balance", "defocus"}
    assert (tmp_path / "rob.csv").exists() and len(d["table"]) == 3
    row = d["table"][1]
    assert set(row) == {"perturbation", "strength", "baseline", "baseline + flat-field", "augmented",
                        "augmented + flat-field"}
    assert row["baseline"] == row["augmented"]  # the same model twice gives the same figure
    assert row["baseline + flat-field"] == row["augmented + flat-field"]
    clean = next(r["mean_iou"] for r in d["curves"] if r["perturbation"] == "none")
    assert d["table"][0]["baseline"] == clean == d["table"][0]["augmented"]
    assert d["augmented_curves"] == d["curves"]
    csv = pd.read_csv(tmp_path / "rob.csv")
    assert sorted(set(csv["model"])) == ["augmented", "baseline"] and len(csv) == 2 * len(d["curves"])
    assert main(["evaluate", "--data", str(fake_dataset), "--model", str(tmp_path / "model.pt"), "--out",
                 str(tmp_path / "e.json"), "--perturb", "gamma=0.5", "--quiet", "--no-baselines"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["perturbation"] == "gamma=0.5"
    assert main(["evaluate", "--data", str(fake_dataset), "--model", str(tmp_path / "model.pt"), "--out",
                 str(tmp_path / "e.json"), "--perturb", "fog=1"]) == 2
    assert "choose from" in capsys.readouterr().err
