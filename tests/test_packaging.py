"""The pip and conda dependency lists agree; the package metadata is coherent; the wheel carries the workbook."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def _pyproject() -> dict:
    import tomllib  # Python 3.11+

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower(), m.group(2).replace(" ", "")


def _conda_equivalents(req: str, extras: dict[str, list[str]]) -> dict[str, str]:
    """``name[extra]>=v`` as conda packages: ``name>=v`` and ``name-extra``; ``lumenkit[x]`` as extra x's packages."""
    name, rest = _split(req)
    m = re.match(r"^\[([^\]]*)\](.*)$", rest)
    wanted, spec = ([e.strip() for e in m.group(1).split(",")], m.group(2)) if m else ([], rest)
    if name == "lumenkit":
        return {k: v for e in wanted for r in extras[e] for k, v in _conda_equivalents(r, extras).items()}
    return {CONDA_NAMES.get(name, name): spec, **{f"{name}-{e}": "" for e in wanted}}


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    pip: dict[str, str] = {}
    for r in project["dependencies"] + extras["dev"]:
        pip.update(_conda_equivalents(r, extras))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(_split(d) for d in env["dependencies"] if isinstance(d, str) and not d.startswith(("python", "pip")))
    assert conda == pip, "environment.yml and pyproject.toml list different dependencies or versions"
    pip_extra = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_extra == [{"pip": ["-e ."]}]


def test_version_and_entry_point():
    import lumenkit

    out = subprocess.run([sys.executable, "-m", "lumenkit", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"lumenkit {lumenkit.__version__}"


def test_all_is_sorted_and_importable():
    import lumenkit

    assert lumenkit.__all__ == sorted(lumenkit.__all__)
    for name in lumenkit.__all__:
        assert hasattr(lumenkit, name)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make report" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_dev_extra_holds_the_workbook_and_the_core_does_not():
    project = _pyproject()["project"]
    core = {_split(r)[0] for r in project["dependencies"]}
    workbook = {_split(r)[0] for r in project["optional-dependencies"]["workbook"]}
    assert {"papermill", "nbconvert", "nbformat", "ipykernel", "ipywidgets", "ipycanvas", "seaborn",
            "matplotlib"} == workbook
    assert not core & workbook
    assert "lumenkit[workbook,onnx]" in project["optional-dependencies"]["dev"]  # `make` installs .[dev]
    assert '-e ".[dev]"' in (ROOT / "Makefile").read_text()
    from lumenkit.workbook.pipeline import WORKBOOK_MODULES

    assert set(WORKBOOK_MODULES) == workbook


def test_setuptools_packages_are_every_package_plus_the_notebooks():
    from setuptools import find_packages

    tool = _pyproject()["tool"]["setuptools"]
    found = find_packages(str(ROOT), include=["lumenkit*"])
    assert sorted(tool["packages"]) == sorted([*found, "lumenkit.workbook.notebooks"]), (
        "pyproject.toml [tool.setuptools] packages must list every package under lumenkit/"
    )
    assert tool["package-dir"] == {"lumenkit.workbook.notebooks": "notebooks"}
    assert tool["package-data"]["lumenkit.workbook.notebooks"] == ["*.ipynb"]
    assert not (ROOT / "lumenkit" / "workbook" / "notebooks").exists(), "one copy of the notebooks: notebooks/"


def test_pipeline_finds_every_notebook_and_the_templates_in_a_source_checkout():
    from lumenkit.workbook.pipeline import INTERACTIVE, STAGES, TEMPLATES, find_notebook_dir

    nb_dir = find_notebook_dir()
    assert nb_dir == ROOT / "notebooks"
    assert sorted(p.stem for p in nb_dir.glob("*.ipynb")) == sorted([*(name for name, _ in STAGES), *INTERACTIVE])
    assert (TEMPLATES / "lumenkit_report" / "conf.json").is_file()


def test_report_without_the_workbook_extra_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    from lumenkit.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "papermill" else real(name, *a))
    params = tmp_path / "p.yaml"
    params.write_text("run: r\ndata: d\n")
    assert main(["report", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "papermill" in err and "pip install 'lumenkit[workbook]'" in err
    assert not (tmp_path / "reports").exists()


def test_the_core_imports_without_the_workbook_packages():
    """Every module but the workbook and the lab imports with matplotlib, papermill, ... made unimportable."""
    blocked = ["matplotlib", "seaborn", "ipywidgets", "IPython", "ipykernel", "papermill", "nbconvert", "nbformat"]
    code = f"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
import lumenkit
for m in pkgutil.walk_packages(lumenkit.__path__, "lumenkit."):
    if not m.name.startswith(("lumenkit.workbook", "lumenkit.lab", "lumenkit.__main__")):
        importlib.import_module(m.name)
from lumenkit.cli import main
for command in ("synth", "info", "train", "evaluate", "predict", "robustness", "export", "combine", "report"):
    try:
        main([command, "--help"])
    except SystemExit as e:
        assert e.code == 0, command
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "ok", out.stderr[-2000:]


def _working_tree_copy(dest: Path) -> Path:
    """The files of the working tree that git would commit (tracked and new, not ignored), copied to ``dest``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of lumenkit")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timings: dict[str, float], label: str, ok: bool = True):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    timings[label] = time.perf_counter() - t0
    if ok:
        assert out.returncode == 0, f"{label}: {' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


TINY_PARAMS = """\
run: tiny
data: D
seed: 0
notebooks:
  02_imbalance:
    n_patches: 50
  03_train:
    preset: synthetic
    overrides: {scale: 0.25, width: 4, patch_size: 64, batch_size: 4, patches_per_epoch: 8, epochs: 1,
                minutes: null, n_val: 2, compile: "off"}
  04_evaluate:
    split: test
  05_deposit_report:
    split: test
    n_boot: 20
"""


@pytest.mark.slow
def test_wheel_installs_and_runs_the_core_then_the_workbook_outside_the_source_tree(tmp_path):
    """``pip install`` of a wheel built from the working tree into a fresh venv; core commands without the workbook
    extra; ``lumenkit report`` refuses in one line, then renders every notebook once the extra is installed.

    torch comes from the index like every other dependency (``torch==`` the running version: on this project's
    machines a CPU wheel on local disk). About 4 minutes, most of it pip.
    """
    import torch

    timings: dict[str, float] = {}
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    src = _working_tree_copy(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)], tmp_path, env,
         timings, "build wheel")
    (wheel,) = (tmp_path / "dist").glob("lumenkit-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, timings, "create venv")
    bindir = venv / "bin"
    py, pip, lumenkit = str(bindir / "python"), [str(bindir / "python"), "-m", "pip"], str(bindir / "lumenkit")
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "elsewhere"  # outside the source tree: nothing to find but the installed package
    work.mkdir()
    _run([*pip, "install", f"torch=={torch.__version__.split('+')[0]}"], work, env, timings, "pip install torch")
    _run([*pip, "install", str(wheel)], work, env, timings, "pip install lumenkit (core)")

    missing = _run([py, "-c", "import importlib.util as u; print([m for m in ('papermill', 'nbconvert', 'matplotlib', "
                    "'seaborn', 'ipywidgets') if u.find_spec(m)])"], work, env, timings, "check")
    assert missing.stdout.strip() == "[]", "the core install pulled in workbook packages"
    _run([lumenkit, "synth", "--out", "D", "--images", "6", "--size", "256x192", "--seed", "0"], work, env, timings,
         "lumenkit synth")
    _run([lumenkit, "train", "--preset", "synthetic", "--data", "D", "--out", "R", "--scale", "0.25", "--width", "4",
          "--patch-size", "64", "--batch-size", "4", "--patches-per-epoch", "8", "--epochs", "1", "--n-val", "2",
          "--compile", "off", "--quiet"], work, env, timings, "lumenkit train")
    _run([lumenkit, "evaluate", "--data", "D", "--model", "R/model.pt", "--out", "R/eval.json", "--quiet"], work, env,
         timings, "lumenkit evaluate")
    _run([lumenkit, "predict", "D/imgs/test", "--model", "R/model.pt", "--out", "P", "--quiet"], work, env, timings,
         "lumenkit predict")
    assert (work / "R" / "eval.json").is_file() and (work / "P" / "composition.csv").is_file()

    (work / "tiny.yaml").write_text(TINY_PARAMS)
    refused = _run([lumenkit, "report", "--params", "tiny.yaml"], work, env, timings, "report without extra", ok=False)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "pip install 'lumenkit[workbook]'" in refused.stderr, refused.stderr

    _run([*pip, "install", f"{wheel}[workbook]"], work, env, timings, "pip install lumenkit[workbook]")
    where = _run([py, "-c", "from lumenkit.workbook.pipeline import find_notebook_dir; print(find_notebook_dir())"],
                 work, env, timings, "check")
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    report = _run([lumenkit, "report", "--params", "tiny.yaml"], work, env, timings, "lumenkit report")
    run = work / "reports" / "tiny"
    index = (run / "index.html").read_text()
    for stage in ("01_explore", "02_imbalance", "03_train", "04_evaluate", "05_deposit_report"):
        assert (run / f"{stage}.html").is_file(), f"{stage}.html missing\n{report.stdout}"
        assert f'href="{stage}.html"' in index
    assert "HTML export failed" not in index and 'class="failed"' not in index, report.stdout
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
