"""Streamed mosaic prediction: the whole-image prediction pixel for pixel, same bytes after a crash, bad input."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.imageio import read_mask
from lumenkit.errors import BadImageError, ConfigError, OutputPathError
from lumenkit.inference import mosaic as mosaic_mod
from lumenkit.inference.mosaic import predict_mosaic
from lumenkit.inference.predict import predict_image
from lumenkit.inference.refine import Refine
from lumenkit.inference.tiling import Tiling
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model
from lumenkit.synth.render import generate_section

TILING = Tiling(tile=128, margin=16)


def model(scale=0.25):
    torch.manual_seed(0)
    net = create_model("resunet", in_channels=3, classes=4, width=4, depth=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.6)  # a random net with strong weights: several classes, boundaries everywhere
    return Checkpoint(net, ClassMap([0, 1, 4, 6]), scale)


@pytest.fixture(scope="module")
def section():
    image, _ = generate_section("pbzn_a", (1203, 1001), np.random.default_rng(0), scale=1.0)
    return image


def write(path, image, levels=()):
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(image, tile=(256, 256), photometric="rgb", compression="zlib", subifds=len(levels))
        for lv in levels:
            tw.write(lv, tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def block_means(image, d):
    """Each ``d × d`` block's mean, rounded half up; edge blocks average the pixels they hold."""
    h, w = image.shape
    rows, cols = -(-h // d), -(-w // d)
    sums, counts = np.zeros((2, rows * d, cols * d), dtype=np.int64)
    sums[:h, :w], counts[:h, :w] = image, 1
    sums, counts = (x.reshape(rows, d, cols, d).sum(axis=(1, 3)) for x in (sums, counts))
    return ((sums + counts // 2) // counts).astype(np.uint8)


@pytest.mark.parametrize("shape, step", [((1001, 1203), 2), ((1001, 1203), 4), ((700, 9000), 8),
                                         ((1300, 700), 512), ((257, 513), 256)])
def test_confidence_levels_are_block_means_for_any_banding(shape, step):
    """Blocks taller than a row of tiles (512) or cut by the image's edges included; rows of 256 rows yielded."""
    image = np.random.default_rng(step).integers(0, 256, shape, dtype=np.uint8)
    got = list(mosaic_mod._averaged((image[y : y + 256] for y in range(0, shape[0], 256)), step, shape[1]))
    assert all(len(r) == 256 for r in got[:-1])
    np.testing.assert_array_equal(np.concatenate(got), block_means(image, step))


@pytest.mark.parametrize("scale", [0.25, 1.0])
def test_streamed_mask_is_the_whole_image_prediction(section, tmp_path, scale):
    ck = model(scale)
    res = predict_mosaic(ck, write(tmp_path / "m.tif", section), tmp_path / "out", scale=1.0, tiling=TILING,
                         progress=False)
    whole = predict_image(ck, section, 1.0, tiling=TILING)
    with tifffile.TiffFile(res.mask) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert [p.shape for p in page.pages] == [(501, 602), (251, 301)]  # the pyramid: 2× and 4× reduced
        got = page.asarray()
    assert len(np.unique(got)) >= 3  # a meaningful comparison: several classes
    np.testing.assert_array_equal(got, whole["codes"])
    conf8 = np.clip(whole["confidence"] * 255 + 0.5, 0, 255).astype(np.uint8)
    with tifffile.TiffFile(res.confidence) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.photometric == tifffile.PHOTOMETRIC.MINISBLACK
        np.testing.assert_array_equal(page.asarray(), conf8)
        levels = [p.asarray() for p in page.pages]  # the mask's pyramid, each level the mean of its blocks
    assert [lv.shape for lv in levels] == [(501, 602), (251, 301)]
    for d, level in zip((2, 4), levels, strict=True):
        np.testing.assert_array_equal(level, block_means(conf8, d))
        assert not np.array_equal(level, conf8[::d, ::d])  # not sampled as the codes are
    assert res.pixels == {int(c): int(n) for c, n in zip(*np.unique(whole["codes"], return_counts=True), strict=True)}
    overview = read_mask(res.overview)
    np.testing.assert_array_equal(overview, whole["codes"])  # small enough: the overview is the mask itself
    assert not (tmp_path / "out" / ".m.parts").exists()


def test_a_refined_mosaic_is_the_whole_image_refined(section, tmp_path):
    ck = model(0.25)
    refine = Refine(radius=2, eps=1e-3)
    path = write(tmp_path / "m.tif", section)
    res = predict_mosaic(ck, path, tmp_path / "out", scale=1.0, tiling=TILING, progress=False, refine=refine)
    whole = predict_image(ck, section, 1.0, tiling=TILING, refine=refine)
    plain = predict_image(ck, section, 1.0, tiling=TILING)
    assert (whole["codes"] != plain["codes"]).mean() > 0.001  # the refinement changes pixels: a real comparison
    np.testing.assert_array_equal(tifffile.imread(res.mask), whole["codes"])
    np.testing.assert_array_equal(tifffile.imread(res.confidence),
                                  np.clip(whole["confidence"] * 255 + 0.5, 0, 255).astype(np.uint8))


def test_refinement_where_one_side_keeps_its_size_follows_predict_image(section, tmp_path):
    part = np.ascontiguousarray(section[:257, :601])
    ck = model(0.9985)  # 601 × 257 px at model scale: 600 × 257, only the width is upsampled: not refined
    res = predict_mosaic(ck, write(tmp_path / "m.tif", part), tmp_path / "out", scale=1.0, tiling=TILING,
                         progress=False, refine=Refine())
    assert res.model_scale_size == (600, 257)
    whole = predict_image(ck, part, 1.0, tiling=TILING, refine=Refine())
    np.testing.assert_array_equal(tifffile.imread(res.mask), whole["codes"])


def test_a_crashed_run_resumes_and_writes_the_same_bytes(section, tmp_path, monkeypatch):
    ck = model()
    path = write(tmp_path / "m.tif", section)
    ref = predict_mosaic(ck, path, tmp_path / "ref", scale=1.0, tiling=TILING, progress=False)
    saved = mosaic_mod._save_row
    calls = []

    def crash_after_two(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")
        calls.append(1)
        saved(*args)

    monkeypatch.setattr(mosaic_mod, "_save_row", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        predict_mosaic(ck, path, tmp_path / "out", scale=1.0, tiling=TILING, progress=False)
    assert not (tmp_path / "out" / "m.tif").exists()  # nothing presented as complete
    assert len(list((tmp_path / "out" / ".m.parts" / "rows").glob("*.npy"))) == 2
    monkeypatch.setattr(mosaic_mod, "_save_row", saved)
    res = predict_mosaic(ck, path, tmp_path / "out", scale=1.0, tiling=TILING, progress=False)
    assert res.resumed_rows == 2
    assert digest(res.mask) == digest(ref.mask) and digest(res.confidence) == digest(ref.confidence)
    assert digest(res.overview) == digest(ref.overview)
    # another model: the saved rows are not reused
    other = model()
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    (tmp_path / "out" / ".m.parts" / "rows").mkdir(parents=True)
    (tmp_path / "out" / ".m.parts" / "meta.json").write_text("{}")
    assert predict_mosaic(other, path, tmp_path / "out", scale=1.0, tiling=TILING, progress=False).resumed_rows == 0


@pytest.mark.slow
def test_kill_9_then_rerun_gives_identical_files(section, tmp_path):
    big = np.concatenate([np.concatenate([section] * 3, axis=1)] * 3, axis=0)  # 3609 × 3003
    path = write(tmp_path / "m.tif", big)
    ck = model()
    ck.save(tmp_path / "model.pt")
    script = (f"from lumenkit.inference.mosaic import predict_mosaic\nfrom lumenkit.inference.tiling import Tiling\n"
              f"predict_mosaic({str(tmp_path / 'model.pt')!r}, {str(path)!r}, {str(tmp_path / 'out')!r}, scale=1.0, "
              "tiling=Tiling(tile=128, margin=16, tta=True), progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    rows = tmp_path / "out" / ".m.parts" / "rows"
    deadline = time.time() + 900  # a guard against a hang, not a timing: a loaded machine is slow
    while time.time() < deadline and len(list(rows.glob("*.npy"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(rows.glob("*.npy")))
    assert 0 < finished < 15 and not (tmp_path / "out" / "m.tif").exists()
    tiling = Tiling(tile=128, margin=16, tta=True)
    res = predict_mosaic(tmp_path / "model.pt", path, tmp_path / "out", scale=1.0, tiling=tiling, progress=False)
    ref = predict_mosaic(tmp_path / "model.pt", path, tmp_path / "ref", scale=1.0, tiling=tiling, progress=False)
    assert res.resumed_rows >= finished - 1
    assert digest(res.mask) == digest(ref.mask) and digest(res.confidence) == digest(ref.confidence)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["confidence", "m.tif", "overviews"]


def test_a_pyramid_serves_the_model_scale(section, tmp_path):
    ck = model(0.125)
    path = write(tmp_path / "p.tif", section, levels=(section[::2, ::2], section[::4, ::4]))
    res = predict_mosaic(ck, path, tmp_path / "out", scale=1.0, tiling=TILING, progress=False)
    assert res.model_scale_size == (150, 125)
    assert tifffile.imread(res.mask).shape == (1001, 1203)


def test_predict_streams_mosaics_among_ordinary_images(section, tmp_path):
    from lumenkit.cli import main
    from lumenkit.data.imageio import save_image

    ck = model()
    ck.save(tmp_path / "model.pt")
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "big.tif", section)
    save_image(section[:200, :300], tmp_path / "in" / "small.png")
    assert main(["predict", str(tmp_path / "in"), "--model", str(tmp_path / "model.pt"), "--out",
                 str(tmp_path / "out"), "--scale", "1", "--tile", "128", "--margin", "16", "--quiet",
                 "--stream-from", "1", "--refine"]) == 0
    assert (tmp_path / "out" / "small.png").is_file() and (tmp_path / "out" / "overviews" / "big.png").is_file()
    comp = pd.read_csv(tmp_path / "out" / "composition.csv")
    assert comp.loc[0, "image"] == "big" and comp.loc[0, "width"] == 1203
    whole = predict_image(ck, section, 1.0, tiling=TILING, refine=Refine())  # --refine reaches the streamed path
    labels = [c for c in comp.columns if c not in ("image", "path", "width", "height", "scale", "pixel_size_um",
                                                     "pixel_size_source", "mean_confidence")]
    shares = {lbl: 100 * float((whole["indices"] == i).mean()) for i, lbl in enumerate(labels)}
    assert comp.loc[0, labels].to_dict() == pytest.approx(shares, abs=1e-3)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "big.tif"), whole["codes"])


def test_bad_mosaic_input(section, tmp_path, read_only_dir):
    ck = model()
    path = write(tmp_path / "m.tif", section)
    with pytest.raises(ConfigError, match="coarser than the model"):
        predict_mosaic(model(2.0), path, tmp_path / "o", scale=1.0, tiling=TILING, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        predict_mosaic(ck, path, tmp_path / "file", scale=1.0, tiling=TILING, progress=False)
    with pytest.raises(OutputPathError) as err:  # checked before any work: nothing predicted, nothing left
        predict_mosaic(ck, path, read_only_dir / "out", scale=1.0, tiling=TILING, progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{read_only_dir / 'out'}: cannot write in {read_only_dir}")
    assert message.endswith("choose another --out in a folder you can write to")
    assert list(read_only_dir.iterdir()) == []
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match=r"cut.tif"):
        predict_mosaic(ck, cut, tmp_path / "o2", scale=1.0, tiling=TILING, progress=False)
    assert not (tmp_path / "o2" / "cut.tif").exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB file system (tmpfs), so writing really runs out of space; skipped where mounting is not allowed."""
    where = tmp_path / "tiny"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", str(where)], check=False)


def test_a_full_disk_is_one_line_and_no_mask_is_presented(section, tmp_path, tiny_disk):
    path = write(tmp_path / "m.tif", section)
    with pytest.raises(OutputPathError, match=r"No space left on device|full") as err:
        predict_mosaic(model(), path, tiny_disk / "out", scale=1.0, tiling=TILING, progress=False)
    assert "\n" not in str(err.value) and str(tiny_disk) in str(err.value)
    assert not (tiny_disk / "out" / "m.tif").exists()


@pytest.mark.slow
def test_a_mosaic_under_torchrun_gives_the_bytes_of_one_process(section, tmp_path):
    from lumenkit.inference.predict import _threads
    from lumenkit.runtime.devices import usable_cores

    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "m.tif", section)
    ck = model()
    pt = ck.save(tmp_path / "model.pt")
    with _threads(max(1, usable_cores() // 2)):  # each of the 2 processes' threads: the same sums
        one = predict_mosaic(pt, tmp_path / "in" / "m.tif", tmp_path / "one", scale=1.0, tiling=TILING,
                             progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lumenkit",
           "predict", "--model", str(pt), "--out", str(tmp_path / "two"), "--scale", "1", "--tile", "128",
           "--margin", "16", "--device", "cpu", "--quiet", "--stream-from", "1", str(tmp_path / "in")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert digest(tmp_path / "two" / "m.tif") == digest(one.mask)
    assert digest(tmp_path / "two" / "confidence" / "m.tif") == digest(one.confidence)
    assert pd.read_csv(tmp_path / "two" / "composition.csv").loc[0, "image"] == "m"


def test_analyse_measures_a_mosaic_streamed_as_the_whole_mask(section, tmp_path):
    """``lumenkit analyse`` on a mosaic: every grain (those across band borders too) as on the whole mask."""
    from lumenkit.cli import main
    from lumenkit.mineralogy.analysis import grains

    ck = model()
    ck.save(tmp_path / "model.pt")
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "big.tif", section)
    assert main(["analyse", str(tmp_path / "in"), "--model", str(tmp_path / "model.pt"), "--out",
                 str(tmp_path / "out"), "--pixel-size", "0.5", "--tile", "256", "--quiet", "--stream-from", "1"]) == 0
    streamed = tifffile.imread(tmp_path / "out" / "masks" / "big.tif")
    table = pd.read_csv(tmp_path / "out" / "grains.csv")
    expected = grains(streamed, 0.5, list(ck.class_map.codes))
    assert len(table) == len(expected) > 50 and (table["y"] > 512).any()  # grains below the first band
    for col in ("area_um2", "perimeter_um", "feret_max_um", "feret_min_um", "boundary_um", "x", "y"):
        np.testing.assert_allclose(table[col], expected[col], rtol=1e-5, err_msg=col)  # the CSV keeps 6 digits
    sections = pd.read_csv(tmp_path / "out" / "sections.csv")
    assert (sections.loc[0, "width"], sections.loc[0, "height"]) == streamed.shape[::-1] == (1203, 1001)


def test_the_onnx_runtime_and_tta_stream_as_they_predict_whole(section, tmp_path):
    pytest.importorskip("onnxruntime")
    runtime = "onnx"
    ck = model()
    tiling = Tiling(tile=128, margin=16, tta="flip")
    res = predict_mosaic(ck, write(tmp_path / "m.tif", section[:400, :500]), tmp_path / "out", scale=1.0,
                         tiling=tiling, progress=False, runtime=runtime)
    whole = predict_image(ck, section[:400, :500], 1.0, tiling=tiling, runtime=runtime)
    np.testing.assert_array_equal(tifffile.imread(res.mask), whole["codes"])


def test_an_ensemble_streams_as_it_predicts_whole(section, tmp_path):
    from lumenkit.inference.ensemble import Ensemble

    other = model(0.25)
    with torch.no_grad():
        for p in other.model.parameters():
            p.normal_(0, 0.6)  # another random net of the same classes and scale
    ens = Ensemble([model(0.25), other])
    res = predict_mosaic(ens, write(tmp_path / "m.tif", section), tmp_path / "out", scale=1.0, tiling=TILING,
                         progress=False)
    whole = predict_image(ens, section, 1.0, tiling=TILING)
    alone = predict_image(model(0.25), section, 1.0, tiling=TILING)
    with tifffile.TiffFile(res.mask) as tif:
        got = tif.pages[0].asarray()
    assert (whole["codes"] != alone["codes"]).mean() > 0.01  # the second member changes the prediction
    np.testing.assert_array_equal(got, whole["codes"])
