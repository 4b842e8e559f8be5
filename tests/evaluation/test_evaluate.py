import json

import numpy as np
import pandas as pd
import pytest
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.datasets import LumenStoneDataset, ValidationSplit
from lumenkit.errors import ConfigError
from lumenkit.evaluation.evaluate import (
    ColourCentroids,
    error_sources_of,
    evaluate,
    image_confusion,
    modal_errors,
    summarise_error_sources,
    summarise_modal_errors,
    training_split_for,
    write_evaluation,
)
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("resunet", width=4, depth=2, classes=3)
    model.eval()
    c = Checkpoint(model=model, class_map=ClassMap([0, 1, 2]), scale=0.5)
    c.save(tmp_path / "model.pt")
    return tmp_path / "model.pt"


def test_colour_centroid_baseline_is_perfect_on_palette_images(fake_dataset):
    ds = LumenStoneDataset(fake_dataset)
    cm = ClassMap([0, 1, 2])
    base = ColourCentroids.fit(ds, cm)
    s = ds[0]
    assert np.array_equal(base.predict(s["image"]), cm.to_index(s["mask"]))
    counts = ds.class_counts()[["BG", "Ccp", "Gl"]].sum().to_numpy()
    assert base.majority == int(np.argmax(counts))


def test_training_split_never_the_evaluated_one(fake_dataset):
    assert training_split_for(fake_dataset, "test") == "train"
    assert training_split_for(fake_dataset, "val") == "fit"


def test_evaluate_json_schema_and_resolution(fake_dataset, ckpt, tmp_path):
    ev = evaluate(fake_dataset, ckpt, split="test", scale=0.25, save_masks=tmp_path / "pred", progress=False)
    out = write_evaluation(ev, tmp_path / "metrics.json", n_boot=50)
    d = json.loads(out.read_text())
    assert set(d["per_class_iou"]) == {"BG", "Ccp", "Gl"}
    for key in ("mean_iou", "pixel_accuracy", "confusion", "class_order", "per_image", "baselines", "scales",
                "mean_iou_ci95", "kappa"):
        assert key in d
    assert d["scales"] == {"stored": 0.5, "model": 0.25, "trained": 0.5}
    # metrics are counted at the stored masks' resolution whatever scale the model runs at
    assert np.array(d["confusion"]).sum() == 2 * 96 * 64
    assert d["baselines"]["colour_centroid"]["mean_iou"] == pytest.approx(1.0)
    assert set(d["baselines"]) == {"majority", "colour_centroid"}
    assert [r["image"] for r in d["per_image"]] == ["te00", "te01"]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["te00.png", "te01.png"]
    assert sum(r["pixels"] for r in d["confidence"]) == 2 * 96 * 64
    assert list(d["per_image_confusion"]) == ["te00", "te01"]
    assert np.sum(list(d["per_image_confusion"].values()), axis=0).tolist() == d["confusion"]
    pd.testing.assert_frame_equal(error_sources_of(out), error_sources_of(ev))
    src = error_sources_of(ev)
    src.loc["Gl", ["worst_share", "worst_image"]] = [0.75, "te01"]
    src.loc[["BG", "Ccp"], "worst_share"] = [0.39, float("nan")]
    lines = summarise_error_sources(src)
    assert len(lines) == 1 and lines[0].startswith("Gl: 75% of its error pixels are in te01")
    old = {k: v for k, v in d.items() if k != "per_image_confusion"}
    with pytest.raises(ConfigError, match="evaluate` again"):
        error_sources_of(old)
    one = image_confusion(out, "te01")  # where each class of one image went: rows truth, columns prediction
    assert one.to_numpy().tolist() == d["per_image_confusion"]["te01"] and list(one.index) == ["BG", "Ccp", "Gl"]
    assert (one.index.name, one.columns.name) == ("truth", "predicted")
    pd.testing.assert_frame_equal(image_confusion(ev, "te00"), image_confusion(d, "te00"))
    with pytest.raises(ConfigError, match="'a25' is not in this evaluation; its images: te00, te01"):
        image_confusion(out, "a25")


def test_void_border_reduces_counted_pixels(fake_dataset, ckpt):
    a = evaluate(fake_dataset, ckpt, split="test", baselines=False, progress=False)
    b = evaluate(fake_dataset, ckpt, split="test", void_border_px=2, baselines=False, progress=False)
    assert b.scores.confusion.sum() < a.scores.confusion.sum()
    assert not b.baselines
    # one run scores both protocols, from the same predictions, whatever the headline protocol is
    for ev in (a, b):
        assert set(ev.protocols) == {"all_pixels", "void_border_2px", "petroscope"}
        np.testing.assert_array_equal(ev.protocols["all_pixels"].confusion, a.scores.confusion)
        np.testing.assert_array_equal(ev.protocols["void_border_2px"].confusion, b.scores.confusion)
    # petroscope's protocol counts exactly the labelled pixels petroscope_void keeps of each test mask
    from PIL import Image

    from lumenkit.evaluation.metrics import petroscope_void

    masks = [np.asarray(Image.open(m)) for m in sorted((fake_dataset / "masks" / "test").glob("*.png"))]
    kept = sum(int((petroscope_void(m) & (m != 255)).sum()) for m in masks)
    assert a.protocols["petroscope"].confusion.sum() == kept < a.scores.confusion.sum()
    d = a.to_dict()
    assert d["protocols"]["void_border_2px"].items() >= {"void_border": 2, "pad": 0, "band": "symmetric"}.items()
    assert d["protocols"]["petroscope"].items() >= {"void_border": 2, "pad": 4, "band": "petroscope"}.items()
    assert d["protocols"]["all_pixels"]["mean_iou"] == pytest.approx(d["mean_iou"])


def test_evaluate_cli(fake_dataset, ckpt, tmp_path, capsys):
    from lumenkit.cli import main

    out = tmp_path / "m.json"
    assert main(["evaluate", "--data", str(fake_dataset), "--model", str(ckpt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and json.loads(out.read_text())["split"] == "test"
    assert all(f"protocol {p}: mean IoU" in printed for p in ("all_pixels", "void_border_2px", "petroscope"))
    modal = modal_errors(out)
    line = next(x for x in printed.splitlines() if "modal mineralogy: area % off by" in x)
    assert f"{modal['error_pp'].abs().mean():.2f} points" in line and f"{modal['error_pp'].abs().max():.1f}," in line
    assert main(["evaluate", "--data", str(tmp_path / "none"), "--model", str(ckpt), "--out", str(out)]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "--data", str(fake_dataset), "--model", str(bad), "--out", str(out)]) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_val_defaults_to_the_split_the_model_was_trained_with(fake_dataset, tmp_path):
    from lumenkit.evaluation.evaluate import recorded_validation
    from lumenkit.models.checkpoint import load_checkpoint

    torch.manual_seed(0)
    model = create_model("resunet", width=4, depth=2, classes=3).eval()
    trained = {"train": {"n_val": 2, "val_seed": 5}}
    Checkpoint(model=model, class_map=ClassMap([0, 1, 2]), scale=0.5, config=trained).save(tmp_path / "m.pt")
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ValidationSplit.of_model(ck) == ValidationSplit(2, 5) and ValidationSplit.of_model(ck, n_val=3) == (
        ValidationSplit(3, 5))
    ev = evaluate(fake_dataset, ck, split="val", baselines=False, progress=False)
    names = ev.per_image.index if ev.per_image.index.name == "image" else ev.per_image["image"]
    assert list(names) == LumenStoneDataset(fake_dataset, "val", validation=ValidationSplit(2, 5)).names
    assert ev.info["n_val"] == 2 and ev.info["val_seed"] == 5
    three = evaluate(fake_dataset, ck, split="val", validation=ValidationSplit.of_model(ck, n_val=3), baselines=False,
                     progress=False)
    assert three.info["images"] == 3 and three.info["val_seed"] == 5
    write_evaluation(ev, tmp_path / "run" / "metrics.json", n_boot=10)
    assert recorded_validation(tmp_path / "run", "val") == ValidationSplit(2, 5)  # notebook 05 reads what 04 scored
    assert recorded_validation(tmp_path / "run", "val", n_val=4) == ValidationSplit(4, 5)
    assert recorded_validation(tmp_path / "run", "test") == recorded_validation(None, "val") == ValidationSplit()
    plain = Checkpoint(model=model, class_map=ClassMap([0, 1, 2]), scale=0.5)
    assert ValidationSplit.of_model(plain) == ValidationSplit(10, 0, 0)


def test_val_defaults_to_the_fold_the_model_was_trained_on(fake_dataset, tmp_path, capsys):
    from lumenkit.cli import main
    from lumenkit.evaluation.evaluate import recorded_validation
    from lumenkit.models.checkpoint import load_checkpoint

    torch.manual_seed(0)
    model = create_model("resunet", width=4, depth=2, classes=3).eval()
    trained = {"train": {"n_val": 2, "val_seed": 5, "val_fold": 2}}
    Checkpoint(model=model, class_map=ClassMap([0, 1, 2]), scale=0.5, config=trained).save(tmp_path / "m.pt")
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ValidationSplit.of_model(ck).fold == 2 and ValidationSplit.of_model(ck, fold=0).fold == 0
    assert ValidationSplit.of_model(Checkpoint(model=model, class_map=ClassMap([0, 1, 2]), scale=0.5)).fold == 0  # old
    fold2 = LumenStoneDataset(fake_dataset, "val", validation=ValidationSplit(2, 5, 2)).names
    assert fold2 != LumenStoneDataset(fake_dataset, "val", validation=ValidationSplit(2, 5)).names
    ev = evaluate(fake_dataset, ck, split="val", progress=False)
    assert list(ev.per_image.index) == fold2
    assert ev.info["n_val"] == 2 and ev.info["val_seed"] == 5 and ev.info["val_fold"] == 2
    ev1 = evaluate(fake_dataset, ck, split="val", validation=ValidationSplit.of_model(ck, fold=1), baselines=False,
                   progress=False)
    fold1 = LumenStoneDataset(fake_dataset, "val", validation=ValidationSplit(2, 5, 1))
    assert list(ev1.per_image.index) == fold1.names
    assert ev1.info["val_fold"] == 1
    assert "val_fold" not in evaluate(fake_dataset, ck, split="test", baselines=False, progress=False).info
    with pytest.raises(ConfigError, match=r"val_fold=3 is out of range.*valid range \[0, 3\)"):
        evaluate(fake_dataset, ck, split="val", validation=ValidationSplit(2, 5, 3), baselines=False, progress=False)
    write_evaluation(ev, tmp_path / "run" / "metrics.json", n_boot=10)
    assert recorded_validation(tmp_path / "run", "val").fold == 2  # notebook 05 reads the fold notebook 04 scored
    assert recorded_validation(tmp_path / "run", "val", fold=1) == ValidationSplit(2, 5, 1)
    assert recorded_validation(tmp_path / "run", "test").fold == 0 and recorded_validation(None, "val").fold == 0
    out = tmp_path / "cli.json"
    common = ["evaluate", "--data", str(fake_dataset), "--model", str(tmp_path / "m.pt"), "--split", "val",
              "--no-baselines", "--quiet", "--out", str(out)]
    assert main(common) == 0 and json.loads(out.read_text())["val_fold"] == 2
    assert main([*common, "--val-fold", "0"]) == 0
    d = json.loads(out.read_text())
    assert d["val_fold"] == 0 and [r["image"] for r in d["per_image"]] == LumenStoneDataset(
        fake_dataset, "val", validation=ValidationSplit(2, 5)).names
    capsys.readouterr()
    assert main([*common, "--val-fold", "7"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_scale_ceiling_is_perfect_at_the_stored_scale_and_falls_below_it(fake_dataset):
    from lumenkit.lab.studies import scale_ceiling

    full = scale_ceiling(fake_dataset, 0.5, split="test")  # the stored scale: masks come back unchanged
    assert full.mean_iou == pytest.approx(1.0) and full.pixel_accuracy == pytest.approx(1.0)
    half = scale_ceiling(fake_dataset, 0.25, split="test")
    coarse = scale_ceiling(fake_dataset, 0.0625, split="test")  # 1/8 of the stored scale
    assert 0.5 < coarse.mean_iou < half.mean_iou < 1.0  # boundaries lost, more of them at the coarser scale
    assert half.confusion.sum() == 2 * 96 * 64  # counted at the stored resolution, like evaluate()
    with pytest.raises(ConfigError, match="val_fold"):
        scale_ceiling(fake_dataset, 0.25, split="val", validation=ValidationSplit(2, 0, 3))


def test_recorded_validation_reads_what_an_evaluation_wrote_and_old_run_folders(tmp_path):
    from lumenkit.evaluation.evaluate import recorded_validation

    run = tmp_path / "run"
    assert recorded_validation(run, "val") == ValidationSplit()  # nothing evaluated yet: the defaults
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"split": "val", "n_val": 4, "val_seed": 3, "val_fold": 1}))
    assert recorded_validation(run, "val") == ValidationSplit(4, 3, 1)
    assert recorded_validation(str(run), "val", n_val=2, seed=None, fold=0) == ValidationSplit(2, 3, 0)
    assert recorded_validation(run, "fit") == ValidationSplit()  # another split was evaluated: nothing recorded
    (run / "metrics.json").write_text(json.dumps({"split": "val", "n_val": 6, "val_seed": 1}))  # before folds
    assert recorded_validation(run, "val") == ValidationSplit(6, 1, 0)
    for junk in ("{not json", "[1, 2]", ""):
        (run / "metrics.json").write_text(junk)
        assert recorded_validation(run, "val", n_val=5) == ValidationSplit(5, 0, 0)
    assert recorded_validation("", "val") == ValidationSplit()  # notebooks pass run_dir="" for no run folder


def test_evaluation_json_keeps_the_validation_keys_and_takes_a_tiling(fake_dataset, ckpt, tmp_path):
    from lumenkit.inference.tiling import Tiling

    ev = evaluate(fake_dataset, ckpt, split="val", validation=ValidationSplit(2, 1, 1), tiling=Tiling(64, 8, 2, "flip"),
                  baselines=False, progress=False)
    d = ev.to_dict(n_boot=10)
    assert (d["n_val"], d["val_seed"], d["val_fold"], d["tta"]) == (2, 1, 1, "flip")
    assert [r["image"] for r in d["per_image"]] == LumenStoneDataset(
        fake_dataset, "val", validation=ValidationSplit(2, 1, 1)).names
    plain = evaluate(fake_dataset, ckpt, split="val", validation=ValidationSplit(2, 1, 1), baselines=False,
                     progress=False)
    assert plain.info["tta"] is False and plain.info["images"] == ev.info["images"] == 2
    with pytest.raises(TypeError):
        evaluate(fake_dataset, ckpt, split="val", n_val=2, progress=False)  # the loose triple is gone


def test_evaluate_refine_is_recorded_and_guided_by_the_stored_image(fake_dataset, tmp_path, monkeypatch):
    from lumenkit.cli import main
    from lumenkit.inference import predict as predict_mod

    torch.manual_seed(0)
    ckpt = tmp_path / "quarter.pt"
    Checkpoint(create_model("resunet", width=4, depth=2, classes=3).eval(), ClassMap([0, 1, 2]), 0.25).save(ckpt)

    seen = []
    real = predict_mod.predict_image

    def spy(*args, **kwargs):
        seen.append((args[1].shape, kwargs.get("guide").shape if kwargs.get("guide") is not None else None,
                     kwargs["output_size"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_mod, "predict_image", spy)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--data", str(fake_dataset), "--model", str(ckpt), "--out", str(out), "--refine",
                 "--no-baselines", "--quiet"]) == 0
    assert json.loads(out.read_text())["refine"] == {"radius": 2, "eps": 1e-3}
    for small, guide, (w, h) in seen:
        assert guide == (h, w, 3) and small[0] < h  # the network's image at model scale, the guide at the mask's
    assert main(["evaluate", "--data", str(fake_dataset), "--model", str(ckpt), "--out", str(out), "--quiet",
                 "--no-baselines"]) == 0
    assert json.loads(out.read_text())["refine"] is None


def test_modal_errors_are_the_area_shares_of_each_images_confusion():
    doc = {"class_order": ["BG", "Py"], "per_image_confusion": {
        "a": [[60, 20], [10, 10]],  # truth 80 % BG, 20 % Py; predicted 70 % / 30 %
        "b": [[50, 0], [0, 50]],    # exact
        "empty": [[0, 0], [0, 0]],  # nothing labelled: left out
    }}
    m = modal_errors(doc).set_index(["image", "mineral"])
    assert list(m.index.get_level_values("image").unique()) == ["a", "b"]
    assert m.loc[("a", "BG"), "true_area_pct"] == pytest.approx(80) and m.loc[("a", "BG"), "pred_area_pct"] == 70
    assert m.loc[("a", "Py"), "error_pp"] == pytest.approx(10) and m.loc[("b", "Py"), "error_pp"] == 0
    with pytest.raises(ConfigError, match="no per-image confusion matrices"):
        modal_errors({"class_order": ["BG"]})
    summary = summarise_modal_errors(modal_errors(doc))
    assert summary["mean_abs_pp"] == pytest.approx(5)  # |−10|, |+10|, 0, 0 over four rows
    assert summary["per_mineral"].to_dict() == pytest.approx({"BG": 5, "Py": 5})
    assert summary["worst"]["image"] == "a" and abs(summary["worst"]["error_pp"]) == pytest.approx(10)
    assert summarise_modal_errors(modal_errors({"class_order": ["BG"], "per_image_confusion": {}}))["worst"] is None
    # several evaluations' rows concatenated repeat index labels: the worst row is still one row
    both = pd.concat([modal_errors(doc), modal_errors(doc).assign(image=lambda d: d["image"] + "_2")])
    worst = summarise_modal_errors(both)["worst"]
    assert isinstance(worst, pd.Series) and worst["image"] == "a" and abs(worst["error_pp"]) == pytest.approx(10)


def test_compare_with_references_sets_each_protocol_of_ours_beside_the_published_rows(fake_dataset, ckpt):
    from lumenkit.evaluation.reference import PUBLISHED_PROTOCOLS as PUBLISHED
    from lumenkit.evaluation.reference import compare_with_references

    d = evaluate(fake_dataset, ckpt, split="test", baselines=False, progress=False).to_dict()
    table = compare_with_references(d["per_class_iou"], d["mean_iou"], d["pixel_accuracy"], name="ours",
                                    protocols=d["protocols"])
    ours = [f"ours, {p}" for p in ("all_pixels", "void_border_2px", "petroscope")]
    assert list(table.index[:3]) == ours and list(table.index[3:]) == list(PUBLISHED)
    assert table.loc["ours, petroscope", "mean_iou"] == pytest.approx(d["protocols"]["petroscope"]["mean_iou"])
    # every published protocol that lumenkit can score has a row of ours under it
    assert {p for p in PUBLISHED.values() if p in d["protocols"]} <= set(table.loc[ours, "protocol"])
    single = compare_with_references(d["per_class_iou"], d["mean_iou"], d["pixel_accuracy"], name="ours")
    assert single.index[0] == "ours" and single.loc["ours", "protocol"] == "all_pixels"
    # a headline counted under none of the protocols (another void border) keeps its own row first
    other = compare_with_references(d["per_class_iou"], d["mean_iou"], d["pixel_accuracy"], name="ours",
                                    protocol="void_border_3px", protocols=d["protocols"])
    assert list(other.index[:4]) == ["ours", *ours] and other.loc["ours", "protocol"] == "void_border_3px"
