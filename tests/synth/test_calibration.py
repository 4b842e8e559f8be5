import numpy as np
import pytest

from lumenkit.lab.calibration_study import plot_calibration
from lumenkit.synth.calibration import (
    ClassStats,
    collect_stats,
    compare,
    dataset_stats,
    delta_e,
    srgb_to_lab,
    to_markdown,
)


def test_srgb_to_lab_reference_values():
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [128, 128, 128]]))
    assert np.allclose(lab[0], [100, 0, 0], atol=0.05)
    assert np.allclose(lab[1], [0, 0, 0], atol=1e-6)
    assert np.allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)
    assert np.allclose(lab[3], [53.59, 0, 0], atol=0.05)
    with pytest.raises(ValueError, match="length 3"):
        srgb_to_lab(np.zeros((2, 4)))


def test_delta_e():
    assert delta_e((10, 20, 30), (10, 20, 30)) == 0
    assert delta_e((0, 0, 0), (255, 255, 255)) == pytest.approx(100, abs=0.05)


def test_collect_stats_colours_and_grains():
    mask = np.zeros((40, 60), np.uint8)
    mask[5:15, 5:15] = 6  # one 100-px grain
    mask[20:22, 30:32] = 6  # one 4-px grain
    mask[30:, :] = 255
    img = np.zeros((40, 60, 3), np.uint8)
    img[mask == 6] = (180, 170, 150)
    img[mask == 0] = (40, 40, 40)
    st = collect_stats([(img, mask)], scale=1.0)
    assert set(st) == {0, 6}
    py = st[6]
    assert np.allclose(py.mean_rgb, (180, 170, 150)) and np.allclose(py.std_rgb, 0)
    assert sorted(py.grain_areas.tolist()) == [1.0, 25.0]  # areas at ×0.5 from scale 1.0
    assert py.weighted_median_grain == 25.0
    assert py.share == pytest.approx(104 / (104 + st[0].pixels))
    t = compare(st, st)
    assert (t["ΔE"] == 0).all()
    md = to_markdown(t, title="x")
    assert md.startswith("### x") and "Py/Mrc" in md
    fig = plot_calibration([("S1", st, st)], thumbnails=[img, img])
    assert len(fig.axes) == 5
    with pytest.raises(ValueError, match="differ in size"):
        collect_stats([(img, mask[:10])])
    assert np.isnan(ClassStats(code=1).median_grain)


def test_dataset_stats_by_association(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMENKIT_CACHE", str(tmp_path / "cache"))
    from lumenkit.synth.writer import write_dataset

    root = write_dataset(tmp_path / "ds", n_train=3, n_test=0, size=(128, 96), seed=1)
    s2 = dataset_stats(root, association="S2")
    assert set(s2) == {0, 1, 3, 5, 7}
    assert s2[5].pixels > 0 and np.all(np.isfinite(s2[5].mean_rgb))
    with pytest.raises(ValueError, match="association"):
        dataset_stats(root, association="S9")
