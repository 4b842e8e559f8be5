"""Guided upsampling of class probabilities: boundaries follow the image's edges, probabilities stay probabilities."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lumenkit.errors import ConfigError
from lumenkit.inference.refine import Refine, brightness, guided_coefficients
from lumenkit.inference.tiling import resize_probs


def scene(h=160, w=200, edge=37, ring=(90, 100, 30)):
    """A bright mineral left of a vertical edge off the 8-px grid, a dark disc on the right; labels and image."""
    labels = np.zeros((h, w), np.int64)
    labels[:, :edge] = 1
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = ring
    labels[(yy - cy) ** 2 + (xx - cx - 50) ** 2 <= r * r] = 2
    grey = np.array([120, 230, 40], np.uint8)[labels]
    rng = np.random.default_rng(0)
    image = np.clip(grey[..., None] + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)
    return labels, image


def low_res_probs(labels, factor=8):
    """What a perfect network at 1/factor scale gives: the area share of each class in every low-res pixel."""
    onehot = F.one_hot(torch.from_numpy(labels), 3).permute(2, 0, 1).float()
    return F.avg_pool2d(onehot[None], factor)[0]


def test_refined_boundaries_follow_the_image_edges():
    labels, image = scene()
    probs = low_res_probs(labels)
    small = image.reshape(20, 8, 25, 8, 3).mean((1, 3)).astype(np.uint8)
    size = (labels.shape[1], labels.shape[0])
    plain, _, _ = resize_probs(probs, size)
    ga, gb = guided_coefficients(probs, brightness(small), Refine(radius=1, eps=1e-4))
    refined, conf, full = resize_probs(probs, size, keep_probs=True, guided=(ga, gb, brightness(image)))
    wrong_plain, wrong_refined = int((plain != labels).sum()), int((refined != labels).sum())
    assert wrong_refined < wrong_plain / 4, (wrong_plain, wrong_refined)
    torch.testing.assert_close(full.sum(0), torch.ones(labels.shape), atol=1e-4, rtol=0)  # still sums to one
    assert conf.min() >= 0 and conf.max() <= 1


def test_refinement_of_a_flat_image_is_bilinear_upsampling():
    """No edge in the guide: a = 0 and b = the window mean of the probabilities."""
    labels, _ = scene()
    probs = low_res_probs(labels)
    flat = torch.full((20, 25), 0.5)
    ga, gb = guided_coefficients(probs, flat, Refine(radius=1))
    assert float(ga.abs().max()) == 0.0
    def box(x):
        return F.avg_pool2d(x[None], 3, stride=1, padding=1, count_include_pad=False)[0]

    torch.testing.assert_close(gb, box(box(probs)))


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="radius"):
        Refine(radius=0)
    with pytest.raises(ConfigError, match="eps"):
        Refine(eps=0)
    with pytest.raises(ValueError, match="differ in size"):
        guided_coefficients(torch.zeros(3, 4, 4), torch.zeros(5, 4), Refine())


def test_predict_files_refines_from_the_full_resolution_image(tmp_path):
    from lumenkit.cli import main
    from lumenkit.data.catalogue import ClassMap
    from lumenkit.data.imageio import read_mask, save_image
    from lumenkit.inference.predict import predict_image
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    torch.manual_seed(0)
    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.6)
    ck = Checkpoint(net, ClassMap([0, 1, 4]), 0.25)
    ck.save(tmp_path / "model.pt")
    _, image = scene()
    save_image(image, tmp_path / "in.png")
    assert main(["predict", str(tmp_path / "in.png"), "--model", str(tmp_path / "model.pt"), "--out",
                 str(tmp_path / "out"), "--scale", "1", "--refine", "--quiet", "--tile", "256"]) == 0
    got = read_mask(tmp_path / "out" / "in.png")
    from lumenkit.inference.tiling import Tiling

    want = predict_image(ck, image, 1.0, tiling=Tiling(tile=256), refine=Refine())["codes"]
    plain = predict_image(ck, image, 1.0, tiling=Tiling(tile=256))["codes"]
    np.testing.assert_array_equal(got, want)
    assert (want != plain).any()
