import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.errors import CheckpointError
from lumenkit.inference.predict import predict_image
from lumenkit.inference.runners import as_runner
from lumenkit.inference.tiling import Tiling, predict_probs
from lumenkit.models.checkpoint import Checkpoint, save_checkpoint
from lumenkit.models.resunet import create_model

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_EXPORTER = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))
needs_onnx = pytest.mark.skipif(not (HAS_ORT and HAS_EXPORTER), reason="needs onnx, onnxscript and onnxruntime")


def _randomised_model(seed: int = 0) -> torch.nn.Module:
    """A tiny ResUNet with random weights, a few training steps and non-trivial BN statistics and affine terms."""
    torch.manual_seed(seed)
    m = create_model(width=4, depth=3, classes=3, mean=(120.0, 110.0, 100.0), std=(50.0, 60.0, 70.0))
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    m.train()
    for _ in range(2):  # "briefly trained": weights away from their init, BN stats updated
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return m.eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    img[100:400, 200:700] = (230, 200, 40)
    img[500:700, 50:900] = (90, 95, 100)
    return img


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not (HAS_ORT and HAS_EXPORTER):
        pytest.skip("needs onnx, onnxscript and onnxruntime")
    from lumenkit.inference.onnx import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    ckpt = Checkpoint(model=_randomised_model(), class_map=ClassMap([0, 3, 11]), scale=0.5)
    pt = save_checkpoint(root / "model.pt", ckpt)
    return pt, export_onnx(pt)


@needs_onnx
def test_export_writes_metadata_and_dynamic_shapes(exported):
    import onnx

    pt, path = exported
    assert path == pt.with_suffix(".onnx")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["lumenkit.format"] == "lumenkit-onnx"
    assert json.loads(meta["lumenkit.class_codes"]) == [0, 3, 11]
    assert float(meta["lumenkit.scale"]) == 0.5 and meta["lumenkit.output_stride"] == "8"
    assert meta["lumenkit.classes"] == "3"
    assert meta["lumenkit.version"] and json.loads(meta["lumenkit.model_config"])["width"] == 4
    (inp,) = proto.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[1].dim_value == 3 and all(d.dim_param for d in (dims[0], dims[2], dims[3]))
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded before export


@needs_onnx
def test_onnx_matches_torch_on_a_large_image(exported, image):
    from lumenkit.inference.onnx import load_onnx

    pt, path = exported
    ckpt = Checkpoint.load(pt)
    om = load_onnx(path)
    assert om.class_map == ckpt.class_map and om.scale == 0.5 and om.output_stride == 8 and om.classes == 3
    ref = predict_probs(ckpt.model, image, fuse=False)  # unfused torch: the reference
    got = predict_probs(om, image)
    agree = (ref.argmax(0) == got.argmax(0)).float().mean().item()
    assert agree >= 0.999
    assert (ref - got).abs().max().item() < 1e-3


@needs_onnx
def test_predict_image_with_an_onnx_path_tta_and_runtime_option(exported, image):
    pt, path = exported
    small = image[:200, :300]
    ref = predict_image(pt, small, 1.0, tiling=Tiling(96, 16, tta="d4"))  # rot90 windows: transposed shapes
    got = predict_image(path, small, 1.0, tiling=Tiling(96, 16, tta="d4"))
    assert got["model_scale"] == 0.5 and got["codes"].shape == small.shape[:2]
    assert (ref["codes"] == got["codes"]).mean() >= 0.999
    assert np.abs(ref["confidence"] - got["confidence"]).max() < 1e-3
    same = predict_image(pt, small, 1.0, runtime="onnx", tiling=Tiling(96, 16))  # in-memory export of the .pt
    base = predict_image(pt, small, 1.0, tiling=Tiling(96, 16))
    assert (same["codes"] == base["codes"]).mean() >= 0.999
    with pytest.raises(ValueError, match="runtime='torch' needs a PyTorch checkpoint"):
        predict_image(path, small, 1.0, runtime="torch")
    with pytest.raises(ValueError, match="unknown runtime"):
        predict_image(pt, small, 1.0, runtime="tensorrt")


@needs_onnx
def test_cli_export_then_predict_with_the_onnx_file(exported, tmp_path, capsys):
    from lumenkit.cli import main
    from lumenkit.data.imageio import read_mask, save_image

    pt, _ = exported
    onnx_path = tmp_path / "exported.onnx"
    assert main(["export", "--onnx", str(pt), "--out", str(onnx_path)]) == 0
    assert "checked with ONNX Runtime" in capsys.readouterr().out
    img = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    save_image(img, tmp_path / "in" / "a.png")
    for model, out in ((onnx_path, "o_onnx"), (pt, "o_pt")):
        assert main(["predict", "--model", str(model), "--out", str(tmp_path / out), "--scale", "0.5", "--quiet",
                     "--tile", "64", "--margin", "8", str(tmp_path / "in")]) == 0
    a, b = read_mask(tmp_path / "o_onnx" / "a.png"), read_mask(tmp_path / "o_pt" / "a.png")
    assert a.shape == (120, 160) and (a == b).mean() >= 0.999


@needs_onnx
def test_corrupt_and_foreign_onnx_files_are_checkpoint_errors(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from lumenkit.inference.onnx import load_onnx

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(CheckpointError, match=r"bad.onnx: not a readable ONNX model"):
        load_onnx(bad)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(CheckpointError, match="not one exported by lumenkit"):
        load_onnx(foreign)
    with pytest.raises(CheckpointError, match="ONNX file not found"):
        predict_image(tmp_path / "absent.onnx", np.zeros((8, 8, 3), np.uint8))
    from lumenkit.cli import main

    assert main(["predict", "--model", str(bad), "--out", str(tmp_path / "o"), str(tmp_path)]) == 2


def test_missing_onnxruntime_says_what_to_install(tmp_path, monkeypatch):
    from lumenkit.inference.onnx import load_onnx

    path = tmp_path / "m.onnx"
    path.write_bytes(b"not used")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime → ImportError
    with pytest.raises(CheckpointError, match="pip install onnxruntime"):
        load_onnx(path)
    if HAS_EXPORTER:  # runtime="onnx" on a torch model: exports in memory, then needs the runtime
        with pytest.raises(CheckpointError, match="pip install onnxruntime"):
            as_runner(create_model(width=4, depth=2, classes=2), runtime="onnx")


def test_missing_exporter_says_what_to_install(tmp_path, monkeypatch):
    from lumenkit.inference.onnx import export_onnx

    ckpt = Checkpoint(model=create_model(width=4, depth=2, classes=2), class_map=ClassMap([0, 1]), scale=1.0)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(CheckpointError, match="pip install onnx onnxscript"):
        export_onnx(ckpt, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@needs_onnx
@pytest.mark.parametrize("block", ["separable", "inverted"])
def test_the_context_and_lighter_block_candidates_export(tmp_path, image, block):
    from lumenkit.inference.onnx import export_onnx, load_onnx

    torch.manual_seed(0)
    net = create_model("resunet", width=4, depth=3, classes=3, block=block, context="aspp").eval()
    pt = save_checkpoint(tmp_path / "m.pt", Checkpoint(model=net, class_map=ClassMap([0, 3, 11]), scale=0.5))
    om = load_onnx(export_onnx(pt))
    ref = predict_probs(net, image[:256, :384], fuse=False)
    assert (ref - predict_probs(om, image[:256, :384])).abs().max().item() < 1e-3


@needs_onnx
def test_export_keeps_the_pixel_size_and_onnx_resamples_by_it_as_torch_does(exported, image, tmp_path):
    import onnx
    import pandas as pd
    import tifffile

    from lumenkit.data.imageio import read_mask
    from lumenkit.inference.onnx import export_onnx, load_onnx
    from lumenkit.inference.predict import predict_files

    assert load_onnx(exported[1]).pixel_size_um is None  # a checkpoint without one: nothing recorded
    assert "lumenkit.pixel_size_um" not in {p.key for p in onnx.load(str(exported[1])).metadata_props}
    ckpt = Checkpoint(model=_randomised_model(), class_map=ClassMap([0, 3, 11]), scale=0.5,
                      config={"pixel_size_um": 2.6})
    pt = save_checkpoint(tmp_path / "model.pt", ckpt)
    om = load_onnx(export_onnx(pt))
    assert om.pixel_size_um == 2.6 and om.metadata["lumenkit.pixel_size_um"] == "2.6"
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "x20.tif", image[:240, :320], photometric="rgb",
                     resolution=(10_000 / 0.65, 10_000 / 0.65), resolutionunit="CENTIMETER")  # 0.65 µm: scale 2
    kw = {"tiling": Tiling(96, 16), "progress": False}
    by_torch = predict_files(pt, [tmp_path / "in"], tmp_path / "pt", **kw)
    by_onnx = predict_files(pt.with_suffix(".onnx"), [tmp_path / "in"], tmp_path / "onnx", **kw)
    for rep in (by_torch, by_onnx):
        assert rep.ok and rep.composition.loc[0, "scale"] == pytest.approx(2.0)  # 0.5 · 2.6 / 0.65 (without: 1.0)
        assert rep.composition.loc[0, "pixel_size_source"] == "TIFF tags"
    a, b = read_mask(tmp_path / "pt" / "x20.png"), read_mask(tmp_path / "onnx" / "x20.png")
    assert a.shape == (240, 320) and (a == b).mean() >= 0.999
    ca, cb = (read_mask(tmp_path / d / "confidence" / "x20.png").astype(int) for d in ("pt", "onnx"))
    assert np.abs(ca - cb).max() <= 1
    labels = ckpt.class_map.labels
    assert (pd.read_csv(tmp_path / "pt" / "composition.csv")[labels]
            - pd.read_csv(tmp_path / "onnx" / "composition.csv")[labels]).abs().max().max() < 0.2


@needs_onnx
def test_a_damaged_onnx_pixel_size_is_a_checkpoint_error(exported, tmp_path):
    import onnx

    from lumenkit.inference.onnx import load_onnx, onnx_model_proto

    proto = onnx.load(str(exported[1]))
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        "lumenkit.pixel_size_um": "-1"})
    bad = tmp_path / "bad_px.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(CheckpointError, match=r"bad_px.onnx: damaged lumenkit metadata .*pixel_size_um"):
        load_onnx(bad)
    with pytest.raises(ValueError, match="pixel_size_um must be a positive number of µm"):
        onnx_model_proto(create_model(width=4, depth=2, classes=2), pixel_size_um=0.0)


@needs_onnx
def test_an_ensemble_mixes_an_onnx_export_with_a_checkpoint(exported, image, tmp_path):
    _, path = exported
    other = save_checkpoint(tmp_path / "b.pt", Checkpoint(model=_randomised_model(1), class_map=ClassMap([0, 3, 11]),
                                                          scale=0.5))
    small, tiling = image[:200, :300], Tiling(96, 16)
    pa = predict_image(path, small, 1.0, tiling=tiling, return_probs=True)["probs"]
    pb = predict_image(other, small, 1.0, tiling=tiling, return_probs=True)["probs"]
    both = predict_image([path, other], small, 1.0, tiling=tiling, return_probs=True)
    assert np.abs(pa - pb).max() > 0.05  # the members disagree somewhere
    np.testing.assert_allclose(both["probs"], (pa + pb) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="runtime='torch' needs a PyTorch checkpoint"):
        predict_image([path, other], small, 1.0, runtime="torch")


@needs_onnx
def test_an_export_is_evaluated_on_test_like_its_checkpoint_and_refused_on_val(exported, tmp_path, capsys):
    from conftest import write_fake_dataset

    from lumenkit.cli import main
    from lumenkit.errors import ConfigError
    from lumenkit.evaluation.evaluate import evaluate

    pt, onnx_path = exported
    data = write_fake_dataset(tmp_path / "d", codes=(0, 3, 11), scale=0.5)
    via_onnx = evaluate(data, onnx_path, split="test", baselines=False, progress=False)
    via_pt = evaluate(data, pt, split="test", baselines=False, progress=False)
    assert via_onnx.scores.confusion.sum() == via_pt.scores.confusion.sum() > 0
    assert np.abs(via_onnx.scores.confusion - via_pt.scores.confusion).sum() <= 0.001 * via_pt.scores.confusion.sum()
    with pytest.raises(ConfigError, match=r"model\.onnx: an export records no validation split"):
        evaluate(data, onnx_path, split="val", progress=False)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--data", str(data), "--model", str(onnx_path), "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["images"] == 2
    assert main(["evaluate", "--data", str(data), "--split", "val", "--model", str(onnx_path), "--out",
                 str(tmp_path / "v.json"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records no validation split" in err[0] and not (tmp_path / "v.json").exists()


@needs_onnx
@pytest.mark.parametrize("key", ["lumenkit.classes", "lumenkit.data.catalogue"])
def test_exports_of_either_class_count_key_are_read(exported, tmp_path, key):
    import onnx

    from lumenkit.inference.onnx import load_onnx

    proto = onnx.load(str(exported[1]))
    for p in proto.metadata_props:  # "lumenkit.data.catalogue": what exports wrote for a while after the restructure
        if p.key == "lumenkit.classes":
            p.key = key
    onnx.save(proto, str(tmp_path / "m.onnx"))
    m = load_onnx(tmp_path / "m.onnx")
    assert m.classes == 3 and list(m.class_map.codes) == [0, 3, 11]


@needs_onnx
def test_an_onnx_model_object_is_refused_where_it_cannot_be_scored(exported, tmp_path):
    from conftest import write_fake_dataset

    from lumenkit.errors import ConfigError
    from lumenkit.evaluation.evaluate import evaluate
    from lumenkit.inference.onnx import OnnxModel, load_onnx

    data = write_fake_dataset(tmp_path / "d", codes=(0, 3, 11), scale=0.5)
    with pytest.raises(ConfigError, match="records no validation split"):
        evaluate(data, load_onnx(exported[1]), split="fit", progress=False)
    bare = OnnxModel.from_model(_randomised_model())  # in memory: no class codes, no scale
    with pytest.raises(ConfigError, match="records no LumenStone class codes or training scale"):
        evaluate(data, bare, split="test", progress=False)
