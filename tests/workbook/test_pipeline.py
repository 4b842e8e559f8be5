import json
from pathlib import Path

import nbformat
import pytest

from lumenkit.errors import ConfigError, DatasetNotFoundError
from lumenkit.workbook.pipeline import load_params, run_report


def _notebook(path, body: str, params: str) -> None:
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.mark.slow
def test_pipeline_runs_stages_records_failure_and_skips_dependants(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(
        nbs / "01_explore.ipynb",
        "from lumenkit.workbook.pipeline import write_headline\n"
        "write_headline(run_dir, '01_explore', {'images': n * 2, 'data': data})\nprint('explored')",
        'data: str = ""  # dataset folder\nrun_dir: str = ""  # report folder\nn: int = 1  # a number',
    )
    _notebook(nbs / "03_train.ipynb", "raise RuntimeError('training exploded')", 'run_dir: str = ""  # report folder')
    _notebook(nbs / "04_evaluate.ipynb", "print('never')", 'run_dir: str = ""  # report folder')
    params = tmp_path / "params" / "p.yaml"
    params.parent.mkdir()
    params.write_text("run: t\ndata: data/x\nnotebooks:\n  01_explore:\n    n: 21\n")
    res = run_report(params, notebook_dir=nbs, progress=False)
    status = {s.name: s.status for s in res.stages}
    assert status == {"01_explore": "ok", "03_train": "failed", "04_evaluate": "skipped"}
    run = tmp_path / "reports" / "t"
    assert res.index == run / "index.html"
    head = json.loads((run / "headlines" / "01_explore.json").read_text())
    assert head == {"images": 42, "data": str((tmp_path / "data" / "x").resolve())}
    page = res.index.read_text()
    assert "training exploded" in page and "01_explore.html" in page and "<b>42</b>" in page
    assert "explored" in (run / "01_explore.html").read_text()
    assert (run / "03_train.html").exists()  # the failed notebook is still rendered
    assert not list(run.glob(".*partial*"))
    assert not res.ok


def test_params_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("notebooks: [1, 2]\n")
    with pytest.raises(ConfigError, match="'notebooks' must map"):
        load_params(p)


@pytest.mark.slow
def test_undeclared_parameter_fails_the_stage_with_a_clear_message(tmp_path):
    nbs = tmp_path / "nb"
    nbs.mkdir()
    _notebook(nbs / "01_explore.ipynb", "print(1)", "x: int = 1  # a number")
    p = tmp_path / "p.yaml"
    p.write_text("run: u\nnotebooks:\n  01_explore:\n    y: 2\n")
    res = run_report(p, out=tmp_path / "out", notebook_dir=nbs, progress=False)
    assert res.stages[0].status == "failed" and "not declared" in res.stages[0].error


@pytest.mark.slow
def test_deposit_report_renders_summary_and_one_page_per_deposit(tmp_path):
    from conftest import write_fake_dataset

    data = write_fake_dataset(tmp_path / "fake", n_test=4)
    p = tmp_path / "p.yaml"
    p.write_text(f"run: dep\ndata: {data}\nnotebooks:\n  05_deposit_report:\n    n_boot: 20\n")
    res = run_report(p, out=tmp_path / "rep", stages=["05_deposit_report"], progress=False)
    assert [s.name for s in res.stages] == ["05_deposit_report", "05_deposit_report__dep0", "05_deposit_report__dep1"]
    assert res.ok, [s.error for s in res.stages]
    rep = tmp_path / "rep"
    assert json.loads((rep / "headlines" / "05_deposit_report.json").read_text())["deposits"] == 2
    assert json.loads((rep / "headlines" / "05_deposit_report__dep1.json").read_text())["deposits"] == 1
    assert (rep / "deposits" / "dep0_true_grains.csv").exists() and (rep / "deposits" / "all_true_locking.csv").exists()
    page = (rep / "05_deposit_report__dep0.html").read_text()
    assert "Modal mineralogy" in page and "def " not in page.split("Modal mineralogy", 1)[1]
    assert "cdnjs" not in page and "unpkg" not in page  # opens offline
    assert "<title>lumenkit — Deposit mineralogy report</title>" in page
    assert "05_deposit_report__dep1.html" in res.index.read_text()


def test_stages_named_in_the_parameter_file(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("run: x\nstages: 06_sections\n")
    with pytest.raises(ConfigError, match="'stages' must be a list of notebook names"):
        load_params(p)
    p.write_text("run: x\nstages: [06_sections]\n")
    with pytest.raises(ConfigError, match="needs sections: "):
        run_report(p, out=tmp_path / "r", progress=False)
    p.write_text("run: x\nstages: [03_train, 07_nothing]\n")
    with pytest.raises(ConfigError, match=r"stages \['07_nothing'\] are not notebooks of the workbook"):
        run_report(p, out=tmp_path / "r", progress=False)


def test_a_bad_samples_csv_fails_at_once_before_any_stage_runs(tmp_path, monkeypatch, capsys):
    """The sections report reads samples.csv after training; its errors must come first, as one line, exit 2."""
    import numpy as np

    from lumenkit.cli import main
    from lumenkit.data.imageio import save_image, write_text
    from lumenkit.workbook import pipeline

    nbs = tmp_path / "nb"
    nbs.mkdir()
    _notebook(nbs / "03_train.ipynb", "open(run_dir + '/trained', 'w').write('x')", 'run_dir: str = ""')
    _notebook(nbs / "06_sections.ipynb", "print(sections)", 'sections: str = ""\nrun_dir: str = ""')
    monkeypatch.setattr(pipeline, "find_notebook_dir", lambda: nbs)  # `lumenkit report` too: stages that are fast
    save_image(np.zeros((16, 16, 3), np.uint8), tmp_path / "sec" / "a.png")
    write_text(tmp_path / "sec" / "samples.csv", "image,sample\na,S1\nnot_there,S2\n")
    params = tmp_path / "params" / "p.yaml"
    write_text(params, "run: s\nsections: sec\ndata: data/x\n")  # no model: training (03) runs first
    assert pipeline.default_stages(load_params(params)) == ["03_train", "06_sections"]
    with pytest.raises(ConfigError, match=r"samples.csv: names images not in .*\['not_there'\]"):
        run_report(params, progress=False)
    assert not (tmp_path / "reports").exists()  # no stage ran, no report folder was made
    assert main(["report", "--params", str(params)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"lumenkit: error: {tmp_path / 'sec' / 'samples.csv'}: names images")
    assert not (tmp_path / "reports").exists()
    write_text(params, "run: s\nstages: [06_sections]\nnotebooks:\n  06_sections:\n    sections: nowhere\n")
    with pytest.raises(DatasetNotFoundError, match="nowhere: folder of sections not found"):
        run_report(params, progress=False)
    assert not (tmp_path / "reports").exists()
    # the check reads only what the sections report uses: a path it never reads may name an unset variable
    monkeypatch.delenv("LUMENKIT_LUMENSTONE", raising=False)
    write_text(tmp_path / "sec" / "samples.csv", "image,sample\na,S1\n")
    pipeline.check_sections({"run": "s", "sections": "sec", "data": "${LUMENKIT_LUMENSTONE}/S1_v1_x05"}, tmp_path)
    with pytest.raises(ConfigError, match="LUMENKIT_LUMENSTONE"):  # but an unset variable where it reads is refused
        pipeline.check_sections({"run": "s", "sections": "${LUMENKIT_LUMENSTONE}/sec"}, tmp_path)


def test_environment_variables_in_paths(tmp_path, monkeypatch):
    from lumenkit.workbook.pipeline import _stage_params

    monkeypatch.setenv("LUMENKIT_LUMENSTONE", str(tmp_path / "ls"))
    p = _stage_params({"data": {}}, {"data": "${LUMENKIT_LUMENSTONE}/S1_v1_x05"}, {}, tmp_path)
    assert p["data"] == str(tmp_path / "ls" / "S1_v1_x05")
    monkeypatch.delenv("LUMENKIT_LUMENSTONE")
    with pytest.raises(ConfigError, match="export LUMENKIT_LUMENSTONE"):
        _stage_params({"data": {}}, {"data": "${LUMENKIT_LUMENSTONE}/S1_v1_x05"}, {}, tmp_path)


def test_every_ensemble_member_path_is_resolved(tmp_path, monkeypatch):
    from lumenkit.workbook.pipeline import _stage_params

    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    p = _stage_params({"model": {}, "ensemble_with": {}}, {"model": "runs/a/model.pt"},
                      {"ensemble_with": "runs/b/model.pt, $RUNS/c/model.pt"}, tmp_path)
    assert p["model"] == str(tmp_path / "runs" / "a" / "model.pt")
    assert p["ensemble_with"].split(",") == [str(tmp_path / "runs" / "b" / "model.pt"),
                                             str(tmp_path / "runs" / "c" / "model.pt")]


def test_shipped_parameter_files_only_set_declared_parameters():
    import papermill as pm

    root = Path(__file__).resolve().parents[2]
    declared = {p.stem: set(pm.inspect_notebook(str(p))) for p in (root / "notebooks").glob("*.ipynb")}
    files = sorted((root / "params").glob("*.yaml"))
    assert {f.stem for f in files} >= {"synthetic", "lumenstone_s1", "lumenstone_s2"}
    for f in files:
        cfg = load_params(f)
        for nb, own in (cfg.get("notebooks") or {}).items():
            assert nb in declared, f"{f.name}: no notebook {nb}"
            assert set(own or {}) <= declared[nb], f"{f.name}: {nb} does not declare {set(own) - declared[nb]}"
        shared = set(cfg) - {"run", "notebooks", "stages"}
        everywhere = set().union(*declared.values())
        assert shared <= everywhere, f"{f.name}: no notebook declares {shared - everywhere}"
