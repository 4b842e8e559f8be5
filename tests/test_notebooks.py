"""Notebook hygiene (committed without outputs, one typed `parameters` cell) and execution with papermill."""

import json
import re
from pathlib import Path

import papermill as pm
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_hygiene(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    lines = [ln for ln in "".join(params[0]["source"]).splitlines() if ln.strip() and not ln.startswith("#")]
    for ln in lines:
        assert re.match(r"^\w+: [\w\[\], |]+ = .+  # \S", ln), f"parameter line not typed and commented: {ln!r}"
    declared = pm.inspect_notebook(str(path))
    assert len(declared) == len(lines), "papermill could not parse every parameter (avoid '=' in comments)"
    assert all(v["help"] for v in declared.values())
