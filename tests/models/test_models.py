import pickle
from typing import ClassVar

import pytest
import torch

from lumenkit import CheckpointError, LumenkitError
from lumenkit.data.catalogue import ClassMap
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from lumenkit.models.resunet import ConvBlock, ResUNet, count_flops, count_parameters, create_model


class BaseModelTest:
    """Generic checks every segmentation architecture must pass (smp style); subclasses set ``arch``."""

    arch: str = ""
    kwargs: ClassVar[dict] = {}

    def make(self, **kw):
        torch.manual_seed(0)
        return create_model(self.arch, **{"width": 4, "depth": 2, "classes": 3, **self.kwargs, **kw})

    def test_forward_shape_and_backward(self):
        m = self.make()
        x = torch.randn(2, 3, 32, 48)
        y = m(x)
        assert y.shape == (2, 3, 32, 48)
        y.mean().backward()
        assert all(p.grad is not None for p in m.parameters())

    @pytest.mark.parametrize("width,depth", [(2, 1), (4, 3), (8, 2)])
    def test_widths_and_depths(self, width, depth):
        m = self.make(width=width, depth=depth)
        assert m.encoder.out_channels == tuple(width * 2**i for i in range(depth + 1))
        assert m.output_stride == 2**depth
        assert m(torch.randn(1, 3, 2**depth * 3, 2**depth * 2)).shape == (1, 3, 2**depth * 3, 2**depth * 2)

    def test_odd_size_names_padded_shape(self):
        m = self.make(depth=3)
        with pytest.raises(ValueError, match=r"divisible by 8.*Pad the input to 32×40"):
            m(torch.randn(1, 3, 30, 33))

    def test_channels(self):
        m = self.make(in_channels=1, mean=(100.0,), std=(50.0,), classes=5)
        assert m(torch.randn(1, 1, 16, 16)).shape == (1, 5, 16, 16)
        with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, H, W\)"):
            m(torch.randn(1, 3, 16, 16))

    def test_predict_is_inference_mode_and_eval(self):
        m = self.make().train()
        y = m.predict(torch.randn(1, 3, 16, 16))
        assert y.is_inference() and not m.training

    def test_config_rebuilds_same_architecture(self):
        m = self.make()
        cfg = dict(m.config)
        m2 = create_model(cfg.pop("arch"), **cfg)
        m2.load_state_dict(m.state_dict())  # strict: same keys and shapes
        assert count_parameters(m2) == count_parameters(m)


class TestResUNet(BaseModelTest):
    arch = "resunet"


class TestPlainUNet(BaseModelTest):
    arch = "resunet"
    kwargs: ClassVar[dict] = {"block": "plain"}

    def test_plain_has_no_shortcut(self):
        assert all(b.shortcut is None for b in self.make().modules() if isinstance(b, ConvBlock))


def test_residual_block_sums_two_branches():
    torch.manual_seed(0)
    b = ConvBlock(3, 5).eval()
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(b(x), b.body(x) + b.shortcut(x))
    assert b.shortcut[0].kernel_size == (1, 1) and b.body[0][0].kernel_size == (3, 3)


def test_factory_lists_valid_names_and_rejects_bad_args():
    with pytest.raises(KeyError, match="valid names: resunet"):
        create_model("segformer")
    with pytest.raises(ValueError, match="valid blocks"):
        create_model(block="dense")
    with pytest.raises(ValueError, match="width must be a positive integer"):
        create_model(width=0)


def test_paper_sizes_and_flops():
    # DESIGN §7: f=64 ≈ 32 M parameters and ≈1.55 TFLOP per megapixel; f=16 ≈ 0.1 TFLOP/MP
    big = ResUNet(width=64)
    assert 31e6 < count_parameters(big) < 34e6
    mp = 1024 * 1024 / 1e6
    assert count_flops(big, 1024, 1024) / mp / 1e12 == pytest.approx(1.55, rel=0.03)
    assert count_flops(ResUNet(width=16), 1024, 1024) / mp / 1e12 == pytest.approx(0.098, rel=0.05)


def _ckpt(**kw):
    torch.manual_seed(1)
    m = create_model(width=4, depth=2, classes=7, mean=(120.0, 110.0, 100.0), std=(50.0, 60.0, 70.0))
    m.train()
    m(torch.randn(2, 3, 16, 16))  # move BN running stats away from their defaults
    return Checkpoint(model=m.eval(), class_map=ClassMap("S1"), scale=0.25,
                      history=[{"epoch": 1, "val_miou": 0.5}], config={"seed": 3}, **kw)


def test_checkpoint_round_trip_same_outputs(tmp_path):
    ck = _ckpt(train_state={"optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "step": 7})
    path = save_checkpoint(tmp_path / "run" / "model.pt", ck)
    back = load_checkpoint(path)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(ck.model.eval()(x), back.model(x))
    assert back.class_map == ClassMap("S1") and back.class_map.name == "S1"
    assert back.scale == 0.25 and back.history == ck.history and back.config == {"seed": 3}
    assert back.model.mean == (120.0, 110.0, 100.0) and back.model.std == (50.0, 60.0, 70.0)
    assert back.train_state["step"] == 7 and back.version and back.path == path
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temporary file


def test_checkpoint_weights_mismatch_fails_loudly(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", _ckpt())
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["width"] = 8  # weights are f=4
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"model\.pt: weights do not match the stored architecture") as e:
        load_checkpoint(path)
    assert isinstance(e.value, LumenkitError)


def test_checkpoint_missing_key_fails_loudly(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", _ckpt())
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("head.weight")
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"head\.weight"):
        load_checkpoint(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p.pop("scale"), r"model\.pt: checkpoint lacks scale; the file is damaged"),
    (lambda p: p.pop("model_config"), r"model\.pt: checkpoint lacks model_config"),
    (lambda p: p.update(class_set=None, class_codes=[0, 1, 2, 3, 4, 5, 999]),
     r"model\.pt: its class map is not readable"),
])
def test_edited_checkpoint_is_a_checkpoint_error(tmp_path, edit, message):
    path = save_checkpoint(tmp_path / "model.pt", _ckpt())
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", pickle.dumps({"a": 1})])
def test_non_checkpoint_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a (readable )?lumenkit checkpoint"):
        load_checkpoint(path)


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(create_model(width=4, depth=2).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a lumenkit checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_class_count_mismatch_refused_on_save(tmp_path):
    ck = Checkpoint(model=create_model(width=4, depth=2, classes=3), class_map=ClassMap("S1"), scale=1.0)
    with pytest.raises(CheckpointError, match="classes=7"):
        ck.save(tmp_path / "m.pt")


@pytest.mark.parametrize(("block", "context"), [("separable", "none"), ("residual", "aspp"), ("separable", "aspp"),
                                               ("inverted", "none")])
def test_candidate_blocks_and_context_fold_export_and_reload(tmp_path, block, context):
    """The accuracy candidates (issue 31) behave as the paper's network does: shapes, BN folding, checkpoints."""
    from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
    from lumenkit.models.folding import fuse_for_inference

    torch.manual_seed(0)
    net = create_model("resunet", width=8, depth=3, classes=4, block=block, context=context)
    net.train()
    net(torch.randn(2, 3, 64, 64)).sum().backward()  # trains (the pooled branch has no BN: batch-size safe)
    net.eval()
    x = torch.randn(1, 3, 96, 64)
    y = net(x)
    assert y.shape == (1, 4, 96, 64)
    torch.testing.assert_close(fuse_for_inference(net)(x), y, rtol=1e-4, atol=1e-4)
    assert net.config.get("context", "none") == context and net.config["block"] == block
    Checkpoint(net, ClassMap([0, 1, 2, 4]), 0.25).save(tmp_path / "m.pt")
    torch.testing.assert_close(load_checkpoint(tmp_path / "m.pt").model(x), y)
    paper = create_model("resunet", width=8, depth=3, classes=4)
    assert "context" not in paper.config  # the paper's network's config is unchanged
    lighter = sum(p.numel() for p in create_model("resunet", width=8, depth=3, classes=4,
                                                  block="separable").parameters())
    assert lighter < sum(p.numel() for p in paper.parameters()) / 3
    with pytest.raises(ValueError, match="unknown context"):
        create_model("resunet", context="ppm")
