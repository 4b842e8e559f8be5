"""A corpus of bad inputs, generated here, run through the loader and the command line.

Each case must give a specific lumenkit exception naming the file in Python, and one line with a non-zero exit
code on the command line; `predict` skips the bad file and still writes the others; nothing half-written is left.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_fake_dataset
from PIL import Image

from lumenkit.cli import main
from lumenkit.data.catalogue import ClassMap
from lumenkit.data.datasets import LumenStoneDataset
from lumenkit.errors import (
    BadImageError,
    BadMaskError,
    ConfigError,
    EmptySplitError,
    LumenkitError,
    MaskSizeError,
    UnknownClassError,
)
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model

H, W = 64, 96


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png() -> bytes:
    """A PNG header declaring 100000×100000 px (10 gigapixels) with almost no data."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 10))
            + _png_chunk(b"IEND", b""))


def _jpeg_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


RGB = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
MASK = np.zeros((H, W), np.uint8)

# name: (which file of the pair is replaced, file bytes, expected exception, message fragment)
IMAGE_CASES = {
    "zero-byte JPEG": (b"", BadImageError, "empty (0 bytes)"),
    "truncated JPEG": (_jpeg_bytes(RGB)[:300], BadImageError, "corrupt or truncated"),
    "truncated PNG": (_png_bytes(RGB)[:200], BadImageError, "corrupt or truncated"),
    "text named .jpg": (b"microscope export log\n", BadImageError, "not a readable image"),
    "grayscale image": (_png_bytes(RGB[..., 0]), BadImageError, "grayscale"),
    "RGBA with transparency": (_png_bytes(np.dstack([RGB, np.full((H, W), 128, np.uint8)])), BadImageError,
                               "transparent"),
    "decompression-bomb header": (bomb_png(), BadImageError, "too large to decode safely"),
}
MASK_CASES = {
    "16-bit PNG mask": (_png_bytes(MASK.astype(np.uint16)), BadMaskError, "8-bit"),
    "RGB colour-coded mask": (_png_bytes(np.dstack([MASK] * 3)), BadMaskError, "codes_from_colour_mask"),
    "mask one pixel smaller": (_png_bytes(MASK[:-1, :-1]), MaskSizeError, "but its image is"),
    "unknown class codes": (_png_bytes(np.full((H, W), 9, np.uint8)), UnknownClassError, "not in class set"),
    "truncated PNG mask": (_png_bytes(np.eye(H, W, dtype=np.uint8))[:60], BadMaskError, "corrupt or truncated"),
}


def tiff16_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(RGB[..., 0].astype(np.uint16) * 257).save(buf, format="TIFF")
    return buf.getvalue()


IMAGE_CASES["16-bit TIFF image"] = (tiff16_bytes(), BadImageError, "not supported")


@pytest.fixture
def dataset(tmp_path):
    return write_fake_dataset(tmp_path / "ds", n_train=4, n_test=2, size=(W, H))


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory):
    torch.manual_seed(0)
    m = create_model("resunet", width=4, depth=2, classes=3)
    m.eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    Checkpoint(model=m, class_map=ClassMap([0, 1, 2]), scale=0.5).save(path)
    return path


def _plant(dataset: Path, split: str, name: str, which: str, content: bytes, suffix: str = ".png") -> Path:
    folder = dataset / ("imgs" if which == "image" else "masks") / split
    old = folder / f"{name}.png"
    old.unlink()
    new = folder / f"{name}{suffix if which == 'image' else '.png'}"
    new.write_bytes(content)
    return new


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_image_in_a_dataset(dataset, case, capsys):
    content, exc, fragment = IMAGE_CASES[case]
    bad = _plant(dataset, "test", "te01", "image", content, suffix=".jpg" if "JPEG" in case or ".jpg" in case
                 else ".tif" if "TIFF" in case else ".png")
    ds = LumenStoneDataset(dataset, "test")
    with pytest.raises(exc, match=re.escape(fragment)) as e:
        ds.load("te01")
    assert str(bad) in str(e.value)
    assert main(["info", str(dataset), "--check"]) == 2
    err = capsys.readouterr().err
    assert "te01" in err and fragment in err


@pytest.mark.parametrize("case", list(MASK_CASES))
def test_bad_mask_in_a_dataset(dataset, case, capsys):
    content, exc, fragment = MASK_CASES[case]
    bad = _plant(dataset, "train", "tr01", "mask", content)
    ds = LumenStoneDataset(dataset, "train")
    with pytest.raises(exc, match=re.escape(fragment)) as e:
        ds.load("tr01")
    assert str(bad) in str(e.value)
    assert isinstance(e.value, LumenkitError)


@pytest.mark.parametrize("case", ["truncated JPEG", "text named .jpg", "decompression-bomb header", "grayscale image"])
def test_predict_skips_the_bad_file_and_writes_the_rest(dataset, model_pt, tmp_path, case, capsys):
    content = IMAGE_CASES[case][0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "bad sample é.jpg").write_bytes(content)
    Image.fromarray(RGB).save(inputs / "good.png")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_pt), "--out", str(out), "--scale", "0.5", "--quiet",
                 str(inputs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad sample é.jpg" in err[0]
    assert (out / "good.png").exists() and not (out / "bad sample é.png").exists()
    assert not list(out.rglob("*.tmp"))
    assert "good" in (out / "composition.csv").read_text()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_training_and_evaluation_refuse_bad_data_with_one_line(dataset, model_pt, tmp_path, command, capsys):
    _plant(dataset, "train" if command == "train" else "test", "tr01" if command == "train" else "te00", "mask",
           MASK_CASES["mask one pixel smaller"][0])
    out = tmp_path / "run"
    if command == "train":
        args = ["train", "--data", str(dataset), "--out", str(out), "--epochs", "1", "--width", "4", "--depth", "2",
                "--patch-size", "32", "--patches-per-epoch", "8", "--n-val", "1", "--quiet"]
    else:
        args = ["evaluate", "--data", str(dataset), "--model", str(model_pt), "--out", str(out / "m.json"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lumenkit: error:") and "mask is 95×63 but its image is 96×64" in err[0]
    assert not (out / "m.json").exists() and not (out / "model.pt").exists()


def test_empty_split_and_bad_config_files(dataset, tmp_path, capsys):
    for p in (dataset / "imgs" / "test").iterdir():
        p.unlink()
    with pytest.raises(EmptySplitError):
        LumenStoneDataset(dataset, "test")
    (dataset / "dataset.yaml").write_text("scale: '0.5'\nclasses: [0, 1, 2]\n")
    with pytest.raises(ConfigError, match="'scale' must be a number"):
        LumenStoneDataset(dataset, "train")
    assert main(["info", str(dataset)]) == 2
    assert "dataset.yaml" in capsys.readouterr().err
    (dataset / "dataset.yaml").write_text("scale: 0.5\nclasses: [0, 1, 2]\n")
    (dataset / "deposits.csv").write_text("image,deposit\nnot_there,X\n")
    with pytest.raises(ConfigError, match="not_there"):
        LumenStoneDataset(dataset, "train")


def test_report_with_a_missing_dataset_keeps_going_and_says_why(tmp_path):
    import nbformat

    from lumenkit.workbook.pipeline import run_report

    nbs = tmp_path / "nb"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('data: str = ""  # dataset folder')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("from lumenkit import LumenStoneDataset\nLumenStoneDataset(data)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(nbs / "01_explore.ipynb"))
    p = tmp_path / "p.yaml"
    p.write_text(f"run: r\ndata: {tmp_path / 'nowhere'}\n")
    res = run_report(p, out=tmp_path / "rep", notebook_dir=nbs, progress=False)
    assert res.stages[0].status == "failed" and "DatasetNotFoundError" in res.stages[0].error
    assert "dataset folder not found" in res.index.read_text()


# -- outputs that cannot be written ---------------------------------------------------------------
# Tests run as root in CI, where permission bits do not stop writes: a folder is made read-only with `chattr +i`
# (immutable, refused even to root), and a path under a file fails for anyone.
def _args(command: str, out: Path, dataset: Path, model: Path, tmp: Path) -> list[str]:
    """The command line of ``command`` writing to ``out`` (a folder or, for evaluate/robustness/export, a file)."""
    m, ds = str(model), str(dataset)
    return {
        "predict": ["predict", "--model", m, "--out", str(out), "--scale", "0.5", "--quiet", str(dataset / "imgs")],
        "analyse": ["analyse", str(dataset / "imgs" / "test"), "--model", m, "--out", str(out), "--quiet"],
        "synth": ["synth", "--out", str(out), "--images", "1", "--test", "0", "--size", "64x64"],
        "train": ["train", "--data", ds, "--out", str(out), "--epochs", "1", "--width", "4", "--depth", "2",
                  "--patch-size", "32", "--patches-per-epoch", "8", "--n-val", "1", "--quiet"],
        "evaluate": ["evaluate", "--data", ds, "--model", m, "--out", str(out), "--quiet", "--no-baselines"],
        "evaluate --save-masks": ["evaluate", "--data", ds, "--model", m, "--out", str(tmp / "scores.json"),
                                  "--quiet", "--no-baselines", "--save-masks", str(out)],
        "robustness": ["robustness", "--data", ds, "--model", m, "--out", str(out), "--names", "brightness"],
        "export": ["export", "--onnx", m, "--out", str(out)],
        "combine": ["combine", ds, str(tmp / "other"), "--out", str(out), "--n-val", "1"],
        "report": ["report", "--params", str(tmp / "p.yaml"), "--out", str(out)],
    }[command]


FILE_OUTPUTS = {"evaluate": "scores.json", "robustness": "rob.json", "export": "model.onnx"}
WRITERS = ["predict", "analyse", "synth", "train", "evaluate", "evaluate --save-masks", "robustness", "export",
           "combine", "report"]
UNWRITABLE = ["a file where a folder is expected", "a folder under a file", "a read-only folder"]


@pytest.mark.parametrize("case", UNWRITABLE)
@pytest.mark.parametrize("command", WRITERS)
def test_an_output_that_cannot_be_written_is_one_line_naming_it(dataset, model_pt, tmp_path, command, case,
                                                                 request, capsys):
    write_fake_dataset(tmp_path / "other", n_train=3, n_test=0, size=(W, H))
    (tmp_path / "p.yaml").write_text(f"run: r\ndata: {dataset}\n")
    blocker = tmp_path / "a file"
    blocker.write_text("keep me")
    base = {UNWRITABLE[0]: blocker, UNWRITABLE[1]: blocker / "sub",
            UNWRITABLE[2]: request.getfixturevalue("read_only_dir") / "out" if case == UNWRITABLE[2] else None}[case]
    file_name = FILE_OUTPUTS.get(command)
    out = base if file_name is None else (base.parent if case == UNWRITABLE[2] else base) / file_name
    before = sorted(tmp_path.rglob("*"))
    assert main(_args(command, out, dataset, model_pt, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lumenkit: error: {out}: "), err
    assert "choose another --" in err[0]
    assert sorted(tmp_path.rglob("*")) == before and blocker.read_text() == "keep me"  # nothing half-written


@pytest.mark.parametrize("command", list(FILE_OUTPUTS))
def test_a_folder_where_an_output_file_is_expected(dataset, model_pt, tmp_path, command, capsys):
    write_fake_dataset(tmp_path / "other", n_train=3, n_test=0, size=(W, H))
    out = tmp_path / "taken"
    out.mkdir()
    assert main(_args(command, out, dataset, model_pt, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lumenkit: error: {out}: is a folder, not a file; choose another --out"]
    assert list(out.iterdir()) == []


def test_atomic_writes_and_the_check_name_what_is_in_the_way(tmp_path):
    from lumenkit.data.imageio import check_writable, write_text
    from lumenkit.errors import OutputPathError

    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match=f"^{re.escape(str(tmp_path / 'f' / 'a.txt'))}: cannot be written, "
                                              f"{re.escape(str(tmp_path / 'f'))} is a file, not a folder"):
        write_text(tmp_path / "f" / "a.txt", "y")
    with pytest.raises(OutputPathError, match="is a folder, not a file"):
        write_text(tmp_path, "y")
    with pytest.raises(OSError):  # still an OSError for callers that catch those
        check_writable(tmp_path / "f", folder=True)
    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the check leaves nothing behind


def test_a_closed_output_pipe_ends_quietly(tmp_path):
    """`lumenkit … | head -1`: the reader closes the pipe; no traceback, exit status 141 (128 + SIGPIPE)."""
    import subprocess
    import sys

    code = ("import sys; from lumenkit.cli import build_parser, run_command\n"
            "p = build_parser()\n"
            "def flood(a):\n"
            "    while True:\n"
            "        print('x' * 1000)\n"
            "p._subparsers._group_actions[0].choices['info'].set_defaults(func=flood)\n"
            f"sys.exit(run_command(p, ['info', {str(tmp_path)!r}]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10) == b"x" * 10
    proc.stdout.close()  # as `head` does once it has its line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and b"Traceback" not in err, err.decode()
