import numpy as np
import pytest
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.errors import ConfigError
from lumenkit.inference.predict import predict_image
from lumenkit.inference.tiling import Tiling, predict_probs, resize_probs, tta_transforms
from lumenkit.models.checkpoint import Checkpoint, save_checkpoint
from lumenkit.models.resunet import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model(width=4, depth=3, classes=3)
    with torch.no_grad():  # non-trivial BN statistics, so eval mode really uses them
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (150, 203, 3), dtype=np.uint8)
    img[40:90, 60:160] = (230, 200, 40)  # some structure, not only noise
    return img


def test_tiled_equals_single_pass(model, image):
    single = predict_probs(model, image, tile=1024, margin=48)
    tiled = predict_probs(model, image, tile=96, margin=32, batch=3)  # 32-px cores, many tiles
    assert single.shape == tiled.shape == (3, 150, 203)
    # margins cover the receptive field of this depth-3 net: agreement everywhere, not just inside
    assert torch.allclose(single, tiled, atol=1e-5)
    assert torch.equal(single.argmax(0), tiled.argmax(0))
    assert torch.allclose(single.sum(0), torch.ones(150, 203))


def test_small_margins_still_agree_in_the_interior(model, image):
    single = predict_probs(model, image, tile=1024, margin=48)
    tiled = predict_probs(model, image, tile=64, margin=8, batch=8)
    assert (single.argmax(0) == tiled.argmax(0)).float().mean() > 0.98


def test_training_mode_is_restored(model, image):
    model.train()
    try:
        predict_probs(model, image[:40, :40], tile=64, margin=8)
        assert model.training
    finally:
        model.eval()


def test_tile_too_small_for_margin_is_clear(model, image):
    with pytest.raises(ValueError, match="tile=32 leaves no core"):
        predict_probs(model, image, tile=32, margin=16)


# -- the tiling spec ------------------------------------------------------------------------------
def test_tiling_defaults_are_the_documented_ones_and_frozen():
    import dataclasses

    t = Tiling()
    assert (t.tile, t.margin, t.batch, t.tta) == (768, 64, 1, False)
    assert t == Tiling(768, 64, 1, False) and hash(t) == hash(Tiling())
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.tile = 512  # type: ignore[misc]
    n = Tiling(np.int64(96), np.int32(16), np.uint8(2), "flip")  # e.g. values read from an array
    assert (n.tile, n.margin, n.batch) == (96, 16, 2) and type(n.tile) is int


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tile": 0}, r"^Tiling: tile=0 must be a whole number ≥ 1 \(window side .*\), e\.g\. tile=768$"),
    ({"tile": 512.0}, r"tile=512\.0 must be a whole number"),
    ({"tile": True}, r"tile=True must be a whole number"),
    ({"margin": -8}, r"margin=-8 must be a whole number ≥ 0 .* e\.g\. margin=64$"),
    ({"batch": 0}, r"batch=0 must be a whole number ≥ 1 \(windows per forward pass\), e\.g\. batch=1$"),
    ({"tile": 100}, r"tile=100 leaves no core after cropping margin=64 on both sides; use tile > 2·margin, e\.g\. "
                    r"tile=384$"),
    ({"tta": "d8"}, r"tta='d8' is no test-time augmentation; use False \(none\), True or 'd4'"),
    ({"tta": None}, r"tta=None is no test-time augmentation"),
    ({"tta": 1}, r"tta=1 is no test-time augmentation"),
])
def test_tiling_refuses_bad_values_in_one_line_naming_the_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        Tiling(**kwargs)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_tiling_layout_covers_the_image_with_the_fewest_even_windows():
    lay = Tiling(512, 64).layout(425, 425, 16)  # 384-px cores: two of 224 px along each side, not two of 384
    assert lay.margin == 64 and lay.core == (224, 224) and lay.window == (352, 352)
    assert lay.ys == lay.xs == (0, 224) and lay.padded == (224 + 352,) * 2
    assert lay.origins == [(0, 0), (0, 224), (224, 0), (224, 224)]
    odd = Tiling(96, 20).layout(150, 203, 8)  # margin rounded up to the grid (multiples of stride / 2)
    assert odd.margin == 20 and all(y % 8 == 0 for y in odd.ys + odd.xs)
    assert odd.ys[-1] + odd.core[0] >= 150 and odd.xs[-1] + odd.core[1] >= 203
    with pytest.raises(ConfigError, match=r"tile=40 leaves no core after cropping margin=16 .* tile ≥ 2·margin \+ 16"):
        Tiling(40, 16).layout(100, 100, 16)  # 40 px is 32 on a 16-px grid: nothing left inside two 16-px margins


def test_predict_image_default_tiling_is_tiling_default(model, image):
    a = predict_image(model, image, return_probs=True)
    b = predict_image(model, image, tiling=Tiling(), return_probs=True)
    c = predict_image(model, image, tiling=Tiling(64, 8, batch=3), return_probs=True)
    np.testing.assert_array_equal(a["probs"], b["probs"])
    ref = predict_probs(model, image, tile=64, margin=8, batch=3)
    np.testing.assert_array_equal(c["probs"], ref.numpy())


def test_cli_predict_refuses_a_bad_tiling_before_reading_anything(model, tmp_path, capsys):
    from lumenkit.cli import main

    pt = Checkpoint(model=model, class_map=ClassMap([0, 3, 11]), scale=0.5).save(tmp_path / "model.pt")
    assert main(["predict", "--model", str(pt), "--out", str(tmp_path / "out"), "--tile", "100", "--quiet",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tile=100 leaves no core after cropping margin=64" in err
    assert not (tmp_path / "out").exists()


def test_bad_image_is_clear(model):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB image"):
        predict_image(model, np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="float32"):
        predict_image(model, np.zeros((10, 10, 3), dtype=np.float32))


def test_output_at_input_resolution_when_scales_differ(model, image, tmp_path):
    # the checkpoint remembers scale 0.25; the input is at 0.5: predicted at half size, returned full size
    path = save_checkpoint(tmp_path / "m.pt", Checkpoint(model=model, class_map=ClassMap([0, 3, 11]), scale=0.25))
    out = predict_image(path, image, 0.5, tiling=Tiling(64, 8), return_probs=True)
    assert out["codes"].shape == out["confidence"].shape == image.shape[:2]
    assert out["probs"].shape == (3, *image.shape[:2])
    assert set(np.unique(out["codes"])) <= {0, 3, 11} and out["codes"].dtype == np.uint8
    assert out["confidence"].min() >= 1 / 3 - 1e-5 and out["confidence"].max() <= 1 + 1e-5
    assert out["model_scale"] == 0.25
    np.testing.assert_array_equal(out["codes"], ClassMap([0, 3, 11]).to_code(out["probs"].argmax(0)))
    # output_size: e.g. a mask's stored resolution
    down = predict_image(model, image, 1.0, output_size=(101, 75), tiling=Tiling(64, 8))
    assert down["codes"].shape == (75, 101)


def test_same_scale_matches_predict_probs(model, image):
    out = predict_image(model, image, 0.5, model_scale=0.5, tiling=Tiling(96, 32))
    ref = predict_probs(model, image, tile=96, margin=32)
    np.testing.assert_array_equal(out["indices"], ref.argmax(0).numpy())
    np.testing.assert_allclose(out["confidence"], ref.max(0).values.numpy())


@pytest.mark.parametrize("size", [(40, 31), (17, 31), (9, 50), (400, 14)])
def test_resize_probs_matches_bilinear_interpolate(size):
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(4, 13, 17), 0)
    idx, _conf, full = resize_probs(p, size, strip=5, keep_probs=True)
    ref = torch.nn.functional.interpolate(p[None], size=size[::-1], mode="bilinear", align_corners=False)[0]
    assert torch.allclose(full, ref, atol=1e-6)
    np.testing.assert_array_equal(idx, ref.argmax(0).numpy())


@pytest.mark.parametrize("size", [(40, 31), (17, 31), (9, 50), (400, 14), (130, 97)])
@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_labels_without_upsampling_every_class_equal_the_full_upsampling(size, noise):
    from lumenkit.inference.tiling import _linear_weights, upsample_labels, upsample_rows

    torch.manual_seed(0)
    blocks = torch.nn.functional.interpolate(torch.randn(1, 5, 4, 5) * 6, size=(13, 17), mode="nearest")[0]
    p = torch.softmax(blocks + noise * torch.randn(5, 13, 17), 0)  # regions with boundaries, or noise everywhere
    idx, conf, _ = resize_probs(p, size, strip=7)
    ref_conf, ref_idx = upsample_rows(p, 0, _linear_weights(13, size[1]), 0, size[1], size[0]).max(dim=0)
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    np.testing.assert_array_equal(conf, ref_conf.numpy())
    tie = torch.full((3, 4, 5), 1 / 3)  # every class equal: the first, as argmax says
    c, i = upsample_labels(tie, 0, _linear_weights(4, 9), 0, 9, size[0])
    assert (i == 0).all() and torch.allclose(c, torch.tensor(1 / 3))


@pytest.mark.parametrize("mode", [True, "flip", "d4"])
def test_tta_runs_and_transforms_invert(model, image, mode):
    x = torch.randn(2, 3, 8, 8)
    for fwd, inv in tta_transforms(mode):
        assert torch.equal(inv(fwd(x)), x)
    out = predict_image(model, image[:70, :90], tiling=Tiling(64, 8, tta=mode), threads=1)
    assert out["codes"].shape == (70, 90)
    with pytest.raises(ValueError, match="unknown tta"):
        tta_transforms("d8")


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (17, 3), (9, 200)])
def test_tiny_and_thin_images(model, shape):
    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = predict_image(model, img, tiling=Tiling(64, 8))
    assert out["codes"].shape == shape and out["confidence"].shape == shape


@pytest.mark.parametrize("size", [(48, 64), (64, 48), (100, 101), (33, 130)])
def test_uneven_layouts_match_single_pass(model, size):
    img = np.random.default_rng(2).integers(0, 256, (*size, 3), dtype=np.uint8)
    single = predict_probs(model, img, tile=1024, margin=48)
    tiled = predict_probs(model, img, tile=80, margin=24)
    assert torch.allclose(single, tiled, atol=1e-5)


def test_collect_images_in_a_lumenstone_folder_skips_masks(fake_dataset, tmp_path):
    from lumenkit.inference.predict import collect_images, scale_of

    files, missing = collect_images([fake_dataset, tmp_path / "absent.jpg"])
    assert len(files) == 8 and all("imgs" in f.parts for f in files)
    assert missing == [f"{tmp_path / 'absent.jpg'}: no such file or folder"]
    assert scale_of(files[0]) == 0.5 and scale_of(tmp_path / "x.jpg") == 1.0


# -- fused inference ------------------------------------------------------------------------------
def test_fused_copy_matches_and_leaves_the_original_alone(model, image):
    from lumenkit.models.folding import fuse_for_inference

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):  # non-trivial affine terms too
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 0
    assert fused.config == model.config and not any(p.requires_grad for p in fused.parameters())
    x = model.normalize(torch.from_numpy(image[:64, :96]).permute(2, 0, 1)[None])
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-4)
    ref = predict_probs(model, image, tile=96, margin=32, fuse=False)
    got = predict_probs(model, image, tile=96, margin=32)
    assert (ref - got).abs().max() < 1e-4


def test_fused_copy_is_cached_until_the_weights_change(image):
    from lumenkit.inference.runners import fused_model

    m = create_model(width=4, depth=2, classes=2).eval()
    a = fused_model(m)
    assert fused_model(m) is a
    before = predict_probs(m, image[:40, :40], tile=64, margin=8)
    with torch.no_grad():
        m.head.bias[0] += 3.0  # in place: the parameter's version changes
    b = fused_model(m)
    assert b is not a
    after = predict_probs(m, image[:40, :40], tile=64, margin=8)
    assert (after[0] > before[0]).all()
    m.train()  # put back into training: no stale copy survives, and the model's mode is untouched
    c = fused_model(m)
    assert c is not b and m.training
    m.eval()
    assert fused_model(m) is not c  # entries made while training are not kept
    d = fused_model(m)
    assert fused_model(m) is d


def test_predict_files_decodes_at_the_model_scale(model, tmp_path, monkeypatch):
    import lumenkit.data.imageio
    from lumenkit.data.imageio import read_image, read_mask, save_image
    from lumenkit.inference.predict import predict_files

    img = np.random.default_rng(5).integers(0, 256, (160, 240, 3), dtype=np.uint8)
    save_image(img, tmp_path / "in" / "a.jpg")
    ckpt = Checkpoint(model=model, class_map=ClassMap([0, 3, 11]), scale=0.25)
    factors = []
    real = lumenkit.data.imageio.read_image

    def spy(path, factor=1.0):
        factors.append(factor)
        return real(path, factor)

    monkeypatch.setattr(lumenkit.data.imageio, "read_image", spy)
    rep = predict_files(ckpt, [tmp_path / "in"], tmp_path / "out", scale=1.0, tiling=Tiling(64, 8), progress=False)
    assert rep.ok and factors == [0.25]
    mask = read_mask(tmp_path / "out" / "a.png")
    assert mask.shape == (160, 240)  # outputs at the file's resolution
    ref = predict_image(ckpt, read_image(tmp_path / "in" / "a.jpg", 0.25), 0.25, output_size=(240, 160),
                        tiling=Tiling(64, 8))
    np.testing.assert_array_equal(mask, ref["codes"])
    assert rep.composition.loc[0, "width"] == 240


@pytest.mark.slow
def test_predict_under_torchrun_shares_the_files_and_matches_one_process(model, tmp_path):
    """`torchrun --nproc-per-node 2 -m lumenkit predict`: same masks and composition as one process, one report."""
    import subprocess
    import sys

    import pandas as pd

    from lumenkit.data.imageio import read_mask, save_image
    from lumenkit.inference.predict import predict_files

    rng = np.random.default_rng(7)
    for i in range(5):
        save_image(rng.integers(0, 256, (70 + 9 * i, 110, 3), dtype=np.uint8), tmp_path / "in" / f"s{i}.png")
    (tmp_path / "in" / "s5.jpg").write_bytes(b"not a jpeg")  # a bad file: reported once, the others written
    pt = Checkpoint(model=model, class_map=ClassMap([0, 3, 11]), scale=0.5).save(tmp_path / "model.pt")
    from lumenkit.inference.predict import _threads
    from lumenkit.runtime.devices import usable_cores

    with _threads(max(1, usable_cores() // 2)):  # each of the 2 processes' threads: the same sums, the same argmax
        one = predict_files(pt, [tmp_path / "in"], tmp_path / "one", scale=0.5, tiling=Tiling(64, 8), progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lumenkit",
           "predict", "--model", str(pt), "--out", str(tmp_path / "two"), "--scale", "0.5", "--tile", "64",
           "--margin", "8", "--device", "cpu", "--quiet", str(tmp_path / "in")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "s5.jpg" in r.stderr  # exit 1: one file failed, on exactly one process
    assert r.stderr.count("lumenkit: skipped") == 1, r.stderr
    assert r.stdout.count("predicted 5 image(s)") == 1 and "by 2 processes; 1 failed" in r.stdout, r.stdout
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two" / "composition.csv"),
                                  pd.read_csv(tmp_path / "one" / "composition.csv"))
    assert len(one.composition) == 5 and len(one.failures) == 1
    for i in range(5):
        two, one_mask = read_mask(tmp_path / "two" / f"s{i}.png"), read_mask(tmp_path / "one" / f"s{i}.png")
        np.testing.assert_array_equal(two, one_mask)
        assert (tmp_path / "two" / "overlays" / f"s{i}.jpg").exists()
        assert (tmp_path / "two" / "confidence" / f"s{i}.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_predict_and_evaluate_refuse_cuda_without_a_gpu(model, fake_dataset, tmp_path, capsys):
    from lumenkit.cli import main
    from lumenkit.data.imageio import save_image

    pt = Checkpoint(model=create_model(width=4, depth=2, classes=3).eval(), class_map=ClassMap([0, 1, 2]),
                    scale=0.5).save(tmp_path / "model.pt")
    save_image(np.zeros((40, 60, 3), np.uint8), tmp_path / "in" / "a.png")
    assert main(["predict", "--model", str(pt), "--out", str(tmp_path / "o"), "--device", "cuda", "--quiet",
                 str(tmp_path / "in")]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["evaluate", "--data", str(fake_dataset), "--model", str(pt), "--out", str(tmp_path / "m.json"),
                 "--device", "cuda", "--quiet"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err
    assert main(["predict", "--model", str(pt), "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet",
                 str(tmp_path / "in")]) == 0
