import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, jaccard_score
from sklearn.metrics import confusion_matrix as sk_confusion

from lumenkit.evaluation.metrics import (
    Scores,
    bootstrap_mean_iou,
    confusion_matrix,
    error_sources,
    iou_from_confusion,
    per_image_table,
    sum_confusions,
    void_border,
)

K = 5


def random_pair(seed, absent=(3,)):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, (60, 80)).astype(np.uint8)
    for a in absent:
        true[true == a] = 0
    true[rng.random(true.shape) < 0.1] = 255
    pred = np.where(rng.random(true.shape) < 0.7, true, rng.integers(0, K, true.shape)).astype(np.uint8)
    pred[pred == 255] = 1
    return true, pred


def test_confusion_matches_sklearn_with_ignore_and_absent_classes():
    trues, preds = zip(*(random_pair(s) for s in range(4)))
    total = sum_confusions(confusion_matrix(p, t, K) for p, t in zip(preds, trues))
    t = np.concatenate([x.ravel() for x in trues])
    p = np.concatenate([x.ravel() for x in preds])
    keep = t != 255
    ref = sk_confusion(t[keep], p[keep], labels=list(range(K)))
    assert np.array_equal(total, ref)
    s = Scores(total, [f"c{i}" for i in range(K)])
    sk_iou = jaccard_score(t[keep], p[keep], labels=list(range(K)), average=None, zero_division=0.0)
    present = [0, 1, 2, 4]
    np.testing.assert_allclose(s.iou[present], sk_iou[present])
    assert np.isnan(s.iou[3]) or s.iou[3] == 0
    assert s.mean_iou == pytest.approx(np.mean(sk_iou[present]))  # class 3 absent from truth: not averaged
    assert s.pixel_accuracy == pytest.approx((t[keep] == p[keep]).mean())
    assert s.kappa == pytest.approx(cohen_kappa_score(t[keep], p[keep]))
    np.testing.assert_allclose(
        s.f1[present], f1_score(t[keep], p[keep], labels=present, average=None)
    )


def test_iou_nan_only_when_class_absent_everywhere():
    cm = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 2]])
    iou = iou_from_confusion(cm)
    assert np.isnan(iou[1]) and iou[0] == pytest.approx(5 / 6) and iou[2] == pytest.approx(2 / 3)
    d = Scores(cm, ["a", "b", "c"]).to_dict()
    assert d["per_class_iou"]["b"] is None and d["class_order"] == ["a", "b", "c"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="prediction holds"):
        confusion_matrix(np.full((2, 2), 4), np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match="empty split"):
        sum_confusions([])


def test_petroscope_void_is_petroscopes_one_sided_erosion_and_frame():
    """petroscope's void borders (width 2, pad 4): one pixel on the lower/right side of each boundary, a frame."""
    from lumenkit.evaluation.metrics import petroscope_void

    t = np.zeros((20, 24), np.uint8)
    t[:, 10:] = 1  # a vertical boundary between columns 9 and 10
    t[12:, :] = 2  # a horizontal one between rows 11 and 12
    keep = petroscope_void(t, width=2, pad=0)
    # dropped: column 10 above row 12 (its left neighbour differs), row 12 (its upper neighbour differs), and the
    # first row and column (the square reaches outside the image, which counts as no class)
    expected = np.ones_like(keep)
    expected[:12, 10] = False
    expected[12, :] = False
    expected[0, :] = expected[:, 0] = False
    np.testing.assert_array_equal(keep, expected)
    framed = petroscope_void(t, width=2, pad=4)
    assert not framed[:4].any() and not framed[-4:].any() and not framed[:, :4].any() and not framed[:, -4:].any()
    np.testing.assert_array_equal(framed[4:-4, 4:-4], keep[4:-4, 4:-4])
    # across a straight boundary, a quarter of what the symmetric 2-px band leaves out (1 column of 4)
    straight = np.zeros((20, 24), np.uint8)
    straight[:, 10:] = 1
    assert (~petroscope_void(straight, 2, 4)[4:-4, 4:-4]).sum() * 4 == (~void_border(straight, 2)[4:-4, 4:-4]).sum()
    # ignore pixels are a region of their own: the pixels just past them are dropped, as petroscope drops them
    t2 = np.zeros((10, 10), np.uint8)
    t2[:, 5] = 255
    assert not petroscope_void(t2, 2, 0)[1:, 6].any() and petroscope_void(t2, 2, 0)[1:, 7].all()
    assert petroscope_void(t, width=0, pad=0).all()
    with pytest.raises(ValueError, match=">= 0"):
        petroscope_void(t, width=-1)


def test_void_border_excludes_pixels_near_boundaries():
    t = np.zeros((20, 20), np.uint8)
    t[:, 10:] = 1
    keep = void_border(t, 2)
    assert not keep[:, 8:12].any() and keep[:, :8].all() and keep[:, 12:].all()
    assert void_border(t, 0).all()
    pred = np.zeros_like(t)  # wrong on the whole right half
    full = confusion_matrix(pred, t, 2)
    inner = confusion_matrix(pred, t, 2, valid=keep)
    assert full.sum() == 400 and inner.sum() == 400 - 80


def test_per_image_table_and_bootstrap():
    mats = [confusion_matrix(p, t, K) for t, p in (random_pair(s) for s in range(6))]
    df = per_image_table([f"i{k}" for k in range(6)], mats, [f"c{i}" for i in range(K)])
    assert list(df.index) == [f"i{k}" for k in range(6)] and "iou_c4" in df.columns
    lo, hi = bootstrap_mean_iou(mats, n_boot=200, seed=0)
    m = Scores(sum_confusions(mats), list("abcde")).mean_iou
    assert lo <= m <= hi and hi - lo < 0.1
    assert bootstrap_mean_iou(mats, n_boot=50, seed=1) == bootstrap_mean_iou(mats, n_boot=50, seed=1)
    assert all(np.isnan(bootstrap_mean_iou(mats, n_boot=0)))  # no bootstrap asked: no interval
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_mean_iou(mats, n_boot=-1)


def test_error_sources_finds_the_image_holding_a_class_errors():
    labels = ["BG", "Sph", "Gl"]
    good = np.diag([900, 100, 50])
    bad = np.array([[500, 400, 0], [0, 100, 0], [0, 0, 50]])  # 400 background pixels called Sph in one image
    df = error_sources(["a", "b", "c"], [good, bad, good + np.array([[0, 0, 10], [0, 0, 0], [0, 0, 0]])], labels)
    sph = df.loc["Sph"]
    assert sph["worst_image"] == "b" and sph["worst_share"] == pytest.approx(1.0) and sph["errors"] == 400
    assert sph["iou"] == pytest.approx(300 / 700) and sph["iou_without"] == pytest.approx(1.0)
    gl = df.loc["Gl"]  # Gl: 10 false positives, all in c
    assert gl["worst_image"] == "c" and gl["iou_without"] == pytest.approx(1.0)
    bg = df.loc["BG"]  # BG errors: 400 FN in b, 10 FN in c
    assert bg["worst_share"] == pytest.approx(400 / 410)
    expect = Scores(good + good + np.array([[0, 0, 10], [0, 0, 0], [0, 0, 0]]), labels).mean_iou
    assert sph["mean_iou_without"] == pytest.approx(expect)
    perfect = error_sources(["a"], [good], labels)
    assert perfect["worst_image"].eq("").all() and perfect["worst_share"].isna().all()
    assert error_sources([], [], labels)["errors"].eq(0).all()
    with pytest.raises(ValueError, match="2 names for 1"):
        error_sources(["a", "b"], [good], labels)


def test_summary_marks_a_class_absent_from_the_truth_instead_of_a_zero():
    # truth rows: class 2 has no pixels, yet 5 pixels are predicted as it (IoU 0, left out of the mean)
    cm = np.array([[90, 5, 5], [10, 40, 0], [0, 0, 0]])
    s = Scores(cm, ["BG", "Ccp", "Brt"])
    line = s.summary()
    assert s.iou[2] == 0 and "Brt –" in line and "Brt 0.00" not in line and "not in the mean" in line
    assert f"mean IoU {np.mean(s.iou[:2]):.3f}" in line and "BG 0.82" in line and "Ccp 0.73" in line  # 90/110, 40/55
    assert "not in the mean" not in Scores(cm[:2, :2], ["BG", "Ccp"]).summary()
