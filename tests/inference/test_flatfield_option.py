"""`predict_files(..., flatfield=)`, `analyse_sections(..., flatfield=)` and `--flat-field REF` on the command line.

The scenes are built so that the correction is exact (a reference brighter than the target everywhere shrinks the
shot's rounding below half a level): prediction with the reference must equal prediction on the clean image, bit
for bit, overlays included.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lumenkit.cli import main
from lumenkit.data.catalogue import ClassMap
from lumenkit.data.flatfield import FlatField
from lumenkit.data.imageio import read_mask, save_image, write_text
from lumenkit.inference.predict import predict_files
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model

H, W = 48, 64


@pytest.fixture(scope="module")
def ckpt():
    torch.manual_seed(0)
    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()
    return Checkpoint(net, ClassMap([0, 1, 2]), 0.5, config={"pixel_size_um": 2.6})


def scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(clean, shot, reference)``: a structured section, the same under vignetting and a warm lamp, the blank."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    r2 = ((yy + 0.5 - H / 2) ** 2 + (xx + 0.5 - W / 2) ** 2) / ((H / 2) ** 2 + (W / 2) ** 2)
    reference = np.round(250 * (1 - 0.3 * r2)[..., None] * np.array([1.0, 0.92, 0.85])).astype(np.uint8)
    clean = rng.integers(20, 60, (H, W, 3)).astype(np.uint8)
    clean[10:30, 8:40] = (130, 110, 40)  # a bright grain
    clean[28:44, 36:60] = (90, 95, 100)  # a grey one
    shot = np.round(clean * reference.astype(float) / 128).astype(np.uint8)
    return clean, shot, reference


def _outputs(out, name="s"):
    return (read_mask(out / f"{name}.png"), read_mask(out / "confidence" / f"{name}.png"),
            (out / "overlays" / f"{name}.jpg").read_bytes())


def test_prediction_with_the_reference_equals_prediction_on_the_clean_image(tmp_path, ckpt):
    clean, shot, reference = scene()
    save_image(clean, tmp_path / "clean" / "s.png")
    save_image(shot, tmp_path / "shot" / "s.png")
    ff = FlatField.from_reference(reference, sigma=0, target=128)
    assert np.array_equal(ff(shot), clean)
    kw = {"scale": 0.5, "progress": False}
    a = predict_files(ckpt, [tmp_path / "clean"], tmp_path / "a", **kw)
    b = predict_files(ckpt, [tmp_path / "shot"], tmp_path / "b", flatfield=ff, **kw)
    c = predict_files(ckpt, [tmp_path / "shot"], tmp_path / "c", **kw)
    mask_a, conf_a, overlay_a = _outputs(tmp_path / "a")
    mask_b, conf_b, overlay_b = _outputs(tmp_path / "b")
    assert np.array_equal(mask_a, mask_b) and np.array_equal(conf_a, conf_b)
    assert overlay_a == overlay_b  # the overlay shows the corrected image, the one the model saw
    assert not np.array_equal(conf_a, _outputs(tmp_path / "c")[1])  # uncorrected, the model sees something else
    assert "flat_field" not in a.composition.columns and "flat_field" not in c.composition.columns
    assert list(b.composition["flat_field"]) == ["(in memory)"]
    assert list(b.composition.columns).index("flat_field") == list(a.composition.columns).index("pixel_size_source") + 1
    labels = ckpt.class_map.labels
    pd.testing.assert_frame_equal(a.composition[labels], b.composition[labels])


def test_a_reference_saved_at_twice_the_size_gives_the_same_prediction(tmp_path, ckpt):
    _, shot, reference = scene()
    save_image(shot, tmp_path / "in" / "s.png")
    ff1 = FlatField.from_reference(reference, sigma=0, target=128)
    ff2 = FlatField.from_reference(np.kron(reference, np.ones((2, 2, 1), np.uint8)), sigma=0, target=128)
    predict_files(ckpt, [tmp_path / "in"], tmp_path / "one", scale=0.5, progress=False, flatfield=ff1)
    predict_files(ckpt, [tmp_path / "in"], tmp_path / "two", scale=0.5, progress=False, flatfield=ff2)
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1]) and one[2] == two[2]


def test_cli_flat_field_corrects_each_image_and_names_the_reference(tmp_path, ckpt):
    _, shot, reference = scene()
    ref = tmp_path / "blank standard.png"
    save_image(reference, ref)
    save_image(shot, tmp_path / "in" / "s.png")
    save_image(FlatField.from_reference(ref)(shot), tmp_path / "pre" / "s.png")  # corrected beforehand, by hand
    ckpt.save(tmp_path / "model.pt")
    args = ["predict", "--model", str(tmp_path / "model.pt"), "--scale", "0.5", "--quiet", "--out"]
    assert main([*args, str(tmp_path / "out"), "--flat-field", str(ref), str(tmp_path / "in")]) == 0
    assert main([*args, str(tmp_path / "want"), str(tmp_path / "pre")]) == 0
    got, want = _outputs(tmp_path / "out"), _outputs(tmp_path / "want")
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    comp = pd.read_csv(tmp_path / "out" / "composition.csv")
    assert list(comp["flat_field"]) == [str(ref)]
    assert "flat_field" not in pd.read_csv(tmp_path / "want" / "composition.csv").columns


def test_an_image_of_another_frame_is_skipped_and_the_others_predicted(tmp_path, ckpt, capsys):
    _, shot, reference = scene()
    ref = tmp_path / "ref.png"
    save_image(reference, ref)
    save_image(shot, tmp_path / "in" / "good.png")
    save_image(shot[:, :H], tmp_path / "in" / "square.png")  # a crop: 48×48, the reference is 64×48
    ckpt.save(tmp_path / "model.pt")
    code = main(["predict", "--model", str(tmp_path / "model.pt"), "--scale", "0.5", "--quiet", "--out",
                 str(tmp_path / "out"), "--flat-field", str(ref), str(tmp_path / "in")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "square.png: 48×48 px does not have the aspect ratio of the flat-field reference" in err[0]
    assert str(ref) in err[0] and "same camera frame" in err[0]
    assert (tmp_path / "out" / "good.png").exists() and not (tmp_path / "out" / "square.png").exists()


@pytest.mark.parametrize("case", ["missing", "corrupt", "all black"])
@pytest.mark.parametrize("command", ["predict", "analyse"])
def test_a_bad_reference_stops_before_anything_is_written(tmp_path, ckpt, capsys, command, case):
    _, shot, _ = scene()
    save_image(shot, tmp_path / "in" / "s.png")
    ckpt.save(tmp_path / "model.pt")
    ref = tmp_path / "ref.png"
    if case == "corrupt":
        ref.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    elif case == "all black":
        save_image(np.zeros((H, W, 3), np.uint8), ref)
    head = ["predict", "--scale", "0.5"] if command == "predict" else ["analyse"]
    code = main([*head, "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "out"), "--quiet",
                 "--flat-field", str(ref), str(tmp_path / "in")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lumenkit: error: {ref}: flat-field reference")
    assert "image a mirror or a blank, evenly reflecting standard" in err[0]
    assert not (tmp_path / "out").exists()


def test_analyse_with_a_reference_equals_analyse_of_corrected_sections_and_records_it(tmp_path, ckpt):
    ref = tmp_path / "ref.png"
    save_image(scene()[2], ref)
    ff = FlatField.from_reference(ref)
    for name, seed in (("a", 0), ("b", 1)):
        shot = scene(seed)[1]
        save_image(shot, tmp_path / "sec" / f"{name}.png")
        save_image(ff(shot), tmp_path / "pre" / f"{name}.png")
    for folder in ("sec", "pre"):  # at the model's pixel size: predicted at the size stored
        write_text(tmp_path / folder / "samples.csv", "image,sample,deposit,pixel_size_um\na,S1,D,2.6\nb,S2,D,2.6\n")
    ckpt.save(tmp_path / "model.pt")
    args = ["analyse", "--model", str(tmp_path / "model.pt"), "--quiet", "--um", "--out"]
    assert main([*args, str(tmp_path / "out"), str(tmp_path / "sec"), "--flat-field", str(ref)]) == 0
    assert main([*args, str(tmp_path / "want"), str(tmp_path / "pre")]) == 0
    for name in ("a", "b"):
        assert np.array_equal(read_mask(tmp_path / "out" / "masks" / f"{name}.png"),
                              read_mask(tmp_path / "want" / "masks" / f"{name}.png"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "modal.csv"),
                                  pd.read_csv(tmp_path / "want" / "modal.csv"))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["flat_field"] == str(ref)
    assert json.loads((tmp_path / "want" / "summary.json").read_text())["flat_field"] is None
    assert set(pd.read_csv(tmp_path / "out" / "masks" / "composition.csv")["flat_field"]) == {str(ref)}
