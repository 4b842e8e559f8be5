"""The pip and conda dependency lists agree; the package metadata is coherent."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    pip = {CONDA_NAMES.get(k, k): v for k, v in pip.items()}
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
