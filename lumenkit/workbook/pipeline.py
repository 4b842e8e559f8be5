"""The report pipeline: run the notebooks with papermill into ``reports/RUN/`` and render HTML with an index."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from lumenkit.data.imageio import check_writable, read_yaml_mapping, write_json, write_text
from lumenkit.errors import ConfigError, LumenkitError

TEMPLATES = Path(str(files("lumenkit") / "resources" / "templates"))
"""nbconvert templates: ``lumenkit_report`` renders without CDN scripts, so reports open offline."""

WORKBOOK_MODULES = ("papermill", "nbconvert", "nbformat", "ipykernel", "matplotlib", "seaborn", "ipywidgets",
                    "ipycanvas")
"""What the report pipeline and the notebooks import beyond the core: the ``workbook`` extra of the package."""

INSTALL_WORKBOOK = "pip install 'lumenkit[workbook]'"


STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("01_explore", ()),
    ("02_imbalance", ()),
    ("03_train", ()),
    ("04_evaluate", ("03_train",)),
    ("05_deposit_report", ()),
    ("06_sections", ()),
)
"""Notebook stems in run order, each with the stages whose outputs it always needs (see :func:`_needs`)."""

INTERACTIVE: tuple[str, ...] = ("07_paint",)
"""Notebooks for a live session only (the painting loop), never a stage of a report."""

LABELLED = ("01_explore", "02_imbalance", "03_train", "04_evaluate", "05_deposit_report")
"""The stages of a labelled dataset in LumenStone layout (parameter ``data``): the default workbook."""

SECTIONS = "06_sections"
"""The sections report: unlabelled sections (parameter ``sections``), a model, pages per deposit and sample."""

PER_DEPOSIT = ("05_deposit_report",)
"""Stages rendered once for all images and then once per deposit (parameter ``deposit``)."""

PATH_KEYS = ("data", "sections", "samples_csv", "truth", "flat_field", "model", "run_dir", "out_dir", "mosaic",
             "mosaic_mask", "ensemble_with")
"""Parameters holding paths: made absolute (relative to the parameter file's project) before injection."""

PATH_LIST_KEYS = ("ensemble_with",)
"""Those of :data:`PATH_KEYS` holding several paths, comma-separated (each resolved)."""


class WorkbookNotInstalledError(LumenkitError, ImportError):
    """The report pipeline or a notebook needs a package of the ``workbook`` extra that is not installed."""


def require_workbook() -> None:
    """Check that the ``workbook`` extra is installed.

    Raises:
        WorkbookNotInstalledError: one line naming the missing packages and ``pip install 'lumenkit[workbook]'``.
    """
    missing = [m for m in WORKBOOK_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise WorkbookNotInstalledError(
            f"the notebook workbook needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed; install the workbook extra: {INSTALL_WORKBOOK}"
        )


def _directory(resource: Any) -> Path | None:
    """A package resource folder as a filesystem path (``None`` if absent or inside a zip archive)."""
    return resource if isinstance(resource, Path) and resource.is_dir() else None


def find_notebook_dir() -> Path:
    """The folder of the workbook notebooks 01–05, in an installed wheel or in a source checkout.

    An installed wheel carries them as package data (``lumenkit/workbook/notebooks``, built from the project's
    top-level ``notebooks/``, their only copy in the repository); a source checkout or an editable install reads the
    top-level ``notebooks/`` itself.

    Raises:
        LumenkitError: neither exists (an installation without its package data).
    """
    installed = _directory(files("lumenkit.workbook") / "notebooks")
    checkout = Path(__file__).resolve().parents[2] / "notebooks"
    candidates = [folder for folder in (installed, checkout) if folder is not None]
    for folder in candidates:
        if (folder / f"{STAGES[0][0]}.ipynb").is_file():
            return folder
    raise LumenkitError(
        f"the workbook notebooks are missing (looked in {', '.join(map(str, candidates))}); "
        "reinstall lumenkit from a wheel or a source checkout (pip install 'lumenkit[workbook]')"
    )


@dataclass
class StageResult:
    """Outcome of one notebook stage."""

    name: str
    status: str  # "ok", "failed", "skipped"
    seconds: float = 0.0
    html: str | None = None
    error: str | None = None
    headline: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportResult:
    """Outcome of :func:`run_report`: the index page and one result per stage."""

    index: Path
    stages: list[StageResult]

    @property
    def ok(self) -> bool:
        """True when no stage failed."""
        return all(s.status == "ok" for s in self.stages)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a report parameter YAML: ``run``, ``data``, shared keys, and per-notebook ``notebooks:`` overrides.

    Raises:
        ConfigError: the file is missing, not YAML, or has keys of the wrong type.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameter file not found; see params/synthetic.yaml for the format")
    raw = read_yaml_mapping(path, "run, data, notebooks, ...")
    nbs = raw.get("notebooks", {}) or {}
    if not isinstance(nbs, dict) or not all(isinstance(v, dict) or v is None for v in nbs.values()):
        raise ConfigError(f"{path}: 'notebooks' must map a notebook name to a mapping of parameters")
    stages = raw.get("stages")
    if stages is not None and not (isinstance(stages, list) and all(isinstance(s, str) for s in stages)):
        raise ConfigError(f"{path}: 'stages' must be a list of notebook names, e.g. [03_train, 06_sections]")
    raw.setdefault("run", path.stem)
    return raw


def write_headline(
    out_dir: str | Path, stage: str, values: dict[str, Any], deposit: str | None = None, page: str | None = None
) -> Path:
    """Record a stage's headline figures (flat ``name → number/text``) for the report index.

    Written atomically to ``OUT_DIR/headlines/STAGE.json``, or ``STAGE__DEPOSIT.json`` for a per-deposit run
    (``deposit`` given and not ``"all"``), or ``STAGE__PAGE.json`` for another page of the stage (``page``, e.g.
    ``"sample_S12"``, see :func:`group_pages`); returns the path.
    """
    part = page if page not in (None, "") else (None if deposit in (None, "", "all") else deposit)
    name = stage if part is None else f"{stage}__{_slug(str(part))}"
    path = Path(out_dir) / "headlines" / f"{name}.json"
    write_json(path, values)
    return path


def group_pages(stage: str, sections: Any) -> list[tuple[str, str, str]]:
    """The per-deposit and per-sample pages of a sections stage: ``(kind, name, html file)``, deposits first.

    A sample of one image named after that image (no ``samples.csv`` row gave it a sample) gets no page.

    Raises:
        ConfigError: two names that make the same file name (e.g. ``"S 1"`` and ``"S_1"``).

    Args:
        stage: notebook stem (``"06_sections"``).
        sections: the :class:`~lumenkit.data.sections.Section` objects reported on.
    """
    deposits = sorted({s.deposit for s in sections if s.deposit})
    images = {}
    for s in sections:
        images.setdefault(s.sample, []).append(s.name)
    # a sample that is just its one image (no samples.csv row naming it) gets no page of its own
    samples = sorted(k for k, v in images.items() if v != [k])
    pages = [(kind, name, f"{stage}__{_slug(f'{kind}_{name}')}.html")
             for kind, names in (("deposit", deposits), ("sample", samples)) for name in names]
    seen: dict[str, tuple[str, str]] = {}
    for kind, name, page in pages:
        if page in seen:
            raise ConfigError(f"{kind} names {seen[page][1]!r} and {name!r} make the same page name {page}; rename "
                              "one of them in samples.csv")
        seen[page] = (kind, name)
    return pages


def default_stages(cfg: dict[str, Any]) -> list[str]:
    """The stages a parameter file runs when it lists none under ``stages:``.

    With ``sections`` (a folder of unlabelled sections): the sections report, preceded by training (notebook 03,
    on ``data``) when no ``model`` is given. Otherwise the labelled workbook 01–05 on ``data``.
    """
    if cfg.get("sections"):
        return [SECTIONS] if cfg.get("model") else ["03_train", SECTIONS]
    return list(LABELLED)


def _needs(name: str, params: dict[str, Any]) -> tuple[str, ...]:
    """Stages whose outputs ``name`` needs: its fixed ones, and training when a sections report has no model."""
    fixed = dict(STAGES).get(name, ())
    if name == SECTIONS and not params.get("model"):
        return (*fixed, "03_train")
    return fixed


def _stage_params(declared: dict[str, Any], shared: dict[str, Any], own: dict[str, Any], base: Path) -> dict[str, Any]:
    params = {k: v for k, v in shared.items() if k in declared}
    params.update(own or {})
    unknown = sorted(set(own or {}) - set(declared))
    if unknown:
        raise ConfigError(f"parameters {unknown} are not declared in the notebook (it takes {sorted(declared)})")
    return _resolve_paths(params, base)


def _resolve_paths(params: dict[str, Any], base: Path) -> dict[str, Any]:
    """``params`` with the paths of :data:`PATH_KEYS` expanded (``~``, ``$VAR``) and made absolute against ``base``.

    Raises:
        ConfigError: a path names an environment variable that is not set.
    """
    params = dict(params)
    for k in PATH_KEYS:
        if isinstance(params.get(k), str) and params[k]:
            parts = [p.strip() for p in params[k].split(",") if p.strip()] if k in PATH_LIST_KEYS else [params[k]]
            resolved = []
            for part in parts:
                value = os.path.expanduser(os.path.expandvars(part))
                if "$" in value:
                    raise ConfigError(
                        f"parameter {k}={params[k]!r} names an environment variable that is not set; "
                        "e.g. export LUMENKIT_LUMENSTONE=/path/to/lumenstone"
                    )
                resolved.append(value if Path(value).is_absolute() else str((base / value).resolve()))
            params[k] = ",".join(resolved)
    return params


def check_sections(cfg: dict[str, Any], base: Path) -> None:
    """Read the sections a parameter file names, before any stage runs: a bad ``samples.csv`` fails at once.

    The sections stage would read them only after the stages before it (training: minutes); this reads them with
    the same parameters (``sections``, ``samples_csv``, ``pixel_size_um``, shared or under ``notebooks:
    06_sections``, paths relative to ``base``) so that their errors come first, as one line.

    Args:
        cfg: the parameter file's contents (:func:`load_params`).
        base: the folder relative paths are resolved against (the parameter file's project).

    Raises:
        DatasetNotFoundError: the folder of sections is missing or holds no images.
        ConfigError: a bad ``samples.csv`` (rows naming missing images, pixel sizes that are not numbers or
            contradict the images' own, ...) or ``pixel_size_um`` (see
            :func:`lumenkit.data.sections.read_sections`), or an unset environment variable in a path.
    """
    from lumenkit.data.sections import read_sections

    merged = {**cfg, **((cfg.get("notebooks") or {}).get(SECTIONS) or {})}
    wanted = ("sections", "samples_csv", "pixel_size_um")  # only these: other paths may name what this report skips
    params = _resolve_paths({k: v for k, v in merged.items() if k in wanted}, base)
    if params.get("sections"):
        read_sections(params["sections"], params.get("samples_csv") or None, params.get("pixel_size_um") or None)


def to_html(notebook: str | Path, out: str | Path) -> Path:
    """Render an executed notebook to HTML, hiding cells tagged ``remove_cell`` and inputs tagged ``hide_input``.

    The injected-parameters cell keeps its input so readers see what the run used.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(notebook), as_version=4)
    nb.metadata.pop("widgets", None)  # widget state cannot run in a static page; each notebook shows a figure
    heads = [c.source[2:].splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("# ")]
    nb.metadata["title"] = f"lumenkit — {heads[0] if heads else Path(notebook).stem}"
    exporter = HTMLExporter(template_name="lumenkit_report", extra_template_basedirs=[str(TEMPLATES)])
    tags = TagRemovePreprocessor(
        remove_cell_tags={"remove_cell"}, remove_input_tags={"hide_input"}, remove_all_outputs_tags={"remove_output"}
    )
    exporter.register_preprocessor(tags, enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    write_text(out, body)
    return Path(out)


def run_report(
    params_file: str | Path,
    out: str | Path | None = None,
    stages: list[str] | None = None,
    notebook_dir: str | Path | None = None,
    progress: bool = True,
) -> ReportResult:
    """Execute the workbook's notebooks, render each to HTML and write ``index.html``.

    Which notebooks: the parameter file's ``stages:`` list, else :func:`default_stages` (01→05 on a labelled
    dataset; with ``sections:``, training if no ``model:`` is given and the sections report 06). Every stage
    receives the shared parameters it declares (``data``, ``sections``, ``model``, ``run_dir``, ...) plus its own
    section under ``notebooks:``. ``run_dir`` is the report folder, where stages exchange files. A failing
    stage is recorded (its partial notebook is still rendered), stages that depend on it are skipped, and
    earlier outputs are kept. Notebook 05 is rendered again per deposit, notebook 06 per deposit and per sample.

    Args:
        params_file: parameter YAML (see ``params/synthetic.yaml``).
        out: report folder (default ``reports/<run>`` beside the parameter file's project).
        stages: notebook stems to run (default: the file's ``stages:``, else :func:`default_stages`).
        notebook_dir: where the notebooks live (default: :func:`find_notebook_dir`, the installed package's copy
            or the project's ``notebooks/``).
        progress: print one line per stage.

    Returns:
        A :class:`ReportResult` with the index path and per-stage outcomes.

    Raises:
        ConfigError: malformed parameter file; with the sections stage, a bad ``samples.csv`` or pixel size (checked
            before any stage runs and before the report folder is made, see :func:`check_sections`).
        DatasetNotFoundError: with the sections stage, a missing or empty folder of sections (checked likewise).
        WorkbookNotInstalledError: papermill, nbconvert, ... are missing (``pip install 'lumenkit[workbook]'``).
        LumenkitError: no ``notebook_dir`` given and the workbook notebooks are in neither the installed package
            nor the project's ``notebooks/`` (see :func:`find_notebook_dir`).
        OutputPathError: the report folder cannot be written.
    """
    require_workbook()
    params_file = Path(params_file).resolve()
    cfg = load_params(params_file)
    base = params_file.parent.parent if params_file.parent.name == "params" else params_file.parent
    nb_dir = Path(notebook_dir) if notebook_dir else find_notebook_dir()
    run_dir = Path(out).resolve() if out else base / "reports" / str(cfg["run"])
    shared = {k: v for k, v in cfg.items() if k not in ("notebooks", "run", "stages")}
    shared["run_dir"] = str(run_dir)
    if stages is None and not cfg.get("stages"):  # the defaults whose notebook exists (a custom notebook folder)
        stages = [s for s in default_stages(cfg) if (nb_dir / f"{s}.ipynb").exists()]
    elif stages is None:
        stages = list(cfg["stages"])
    known = [s for s, _ in STAGES]
    unknown = [s for s in stages if s not in known or not (nb_dir / f"{s}.ipynb").exists()]
    if unknown:
        raise ConfigError(f"{params_file}: stages {unknown} are not notebooks of the workbook; choose from {known}")
    wanted = list(stages)
    if SECTIONS in wanted and not cfg.get("sections") and not (cfg.get("notebooks") or {}).get(SECTIONS, {}).get(
            "sections"):
        raise ConfigError(f"{params_file}: the stage {SECTIONS} needs sections: (a folder of your section images); "
                          "add it to the parameter file")
    if SECTIONS in wanted:
        check_sections(cfg, base)  # a bad samples.csv now, not after minutes of training
    check_writable(run_dir, option="--out (or the parameter file's run:)")
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[StageResult] = []
    failed: set[str] = set()
    write_json(run_dir / "params.json", {"params_file": str(params_file), **cfg})
    for i, name in enumerate(wanted, 1):
        src = nb_dir / f"{name}.ipynb"
        own = (cfg.get("notebooks") or {}).get(name) or {}
        needs = _needs(name, {**shared, **own})
        blocked = [d for d in needs if d in failed or (d not in wanted and not _has_output(run_dir, d))]
        if blocked:
            res = StageResult(name, "skipped", error=f"needs {', '.join(blocked)}, which failed or did not run")
            failed.add(name)
            results.append(res)
            if progress:
                print(f"[{i}/{len(wanted)}] {name}: skipped ({res.error})", flush=True)
            continue
        if progress:
            print(f"[{i}/{len(wanted)}] {name} …", flush=True)
        res = _execute(src, name, shared, own, base, nb_dir, run_dir)
        results.append(res)
        if res.status != "ok":
            failed.add(name)
        if progress:
            print(f"[{i}/{len(wanted)}] {name}: {res.status} ({res.seconds:.1f} s)"
                  + (f" — {res.error}" if res.error else ""), flush=True)
        if name in PER_DEPOSIT and res.status == "ok" and own.get("per_deposit", True):
            for dep in _deposits(res.params):
                sub = _execute(src, f"{name}__{_slug(dep)}", shared, {**own, "deposit": dep}, base, nb_dir, run_dir)
                sub.headline.setdefault("deposit", dep)
                results.append(sub)
                if progress:
                    print(f"    deposit {dep}: {sub.status} ({sub.seconds:.1f} s)", flush=True)
        if name == SECTIONS and res.status == "ok" and own.get("per_group", True):
            try:
                groups = group_pages(name, _sections_of(res.params))
            except ConfigError as e:
                groups, res.error = [], str(e)
            for kind, value, page in groups:
                sub = _execute(src, page[: -len(".html")], shared, {**own, kind: value}, base, nb_dir, run_dir)
                sub.headline.setdefault(kind, value)
                results.append(sub)
                if progress:
                    print(f"    {kind} {value}: {sub.status} ({sub.seconds:.1f} s)", flush=True)
    index = write_index(run_dir, cfg, results)
    return ReportResult(index=index, stages=results)


def _execute(
    src: Path, name: str, shared: dict[str, Any], own: dict[str, Any], base: Path, nb_dir: Path, run_dir: Path
) -> StageResult:
    """Run one notebook into ``RUN/NAME.ipynb`` and ``RUN/NAME.html``; never raises."""
    import papermill as pm

    t0 = time.perf_counter()
    executed = run_dir / f"{name}.ipynb"
    res = StageResult(name, "ok")
    (run_dir / "headlines" / f"{name}.json").unlink(missing_ok=True)  # an earlier run's figures are not this run's
    try:
        declared = pm.inspect_notebook(str(src))
        own = {k: v for k, v in own.items() if k not in ("per_deposit", "per_group")}
        res.params = _stage_params(declared, shared, own, base)
        tmp = run_dir / f".{name}.partial.ipynb"
        try:
            pm.execute_notebook(
                str(src), str(tmp), parameters=res.params, cwd=str(nb_dir), progress_bar=False, log_output=False
            )
        finally:
            if tmp.exists():
                tmp.replace(executed)
    except Exception as e:  # a failing stage must not lose the others
        res.status = "failed"
        res.error = _short_error(e)
    res.seconds = time.perf_counter() - t0
    if executed.exists():
        try:
            res.html = to_html(executed, run_dir / f"{name}.html").name
        except Exception as e:
            res.error = (res.error or "") + f" (HTML export failed: {_short_error(e)})"
    hl = run_dir / "headlines" / f"{name}.json"
    if hl.exists():
        res.headline = json.loads(hl.read_text())
    return res


def _deposits(params: dict[str, Any]) -> list[str]:
    """Deposits of the images a per-deposit stage reported on (from the dataset's deposits.csv)."""
    from lumenkit.data.datasets import LumenStoneDataset

    try:
        ds = LumenStoneDataset(params["data"], params.get("split", "test"))
    except Exception:
        return []
    return sorted({d for d in map(ds.deposit, ds.names) if d})


def _sections_of(params: dict[str, Any]) -> list[Any]:
    """The sections a sections stage reported on (from its parameters), or none if they cannot be read."""
    from lumenkit.data.sections import read_sections

    try:
        return read_sections(params["sections"], params.get("samples_csv") or None,
                             params.get("pixel_size_um") or None)
    except Exception:
        return []


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


def _has_output(run_dir: Path, stage: str) -> bool:
    return (run_dir / f"{stage}.ipynb").exists()


def _short_error(e: BaseException) -> str:
    name = getattr(e, "ename", type(e).__name__)
    value = getattr(e, "evalue", str(e))
    text = f"{name}: {value}".strip()
    if not value:
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
    return text.splitlines()[0][:400] if text else type(e).__name__


def write_index(run_dir: Path, cfg: dict[str, Any], results: list[StageResult]) -> Path:
    """Write ``RUN/index.html``: run parameters, a row per stage (status, time, link, headline figures, errors)."""
    rows = []
    for r in results:
        link = f'<a href="{html.escape(r.html)}">{html.escape(r.name)}</a>' if r.html else html.escape(r.name)
        figures = "".join(
            f"<li>{html.escape(str(k))}: <b>{html.escape(_fmt(v))}</b></li>" for k, v in r.headline.items()
        )
        err = f'<div class="err">{html.escape(r.error)}</div>' if r.error else ""
        rows.append(
            f'<tr class="{r.status}"><td>{link}</td><td>{r.status}</td><td>{r.seconds:.1f} s</td>'
            f"<td><ul>{figures}</ul>{err}</td></tr>"
        )
    shared = {k: v for k, v in cfg.items() if k != "notebooks"}
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>lumenkit report — {html.escape(str(cfg.get("run")))}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ccc; padding: .4em; text-align: left; vertical-align: top; }}
 tr.failed td {{ background: #fde8e8; }} tr.skipped td {{ color: #888; }}
.err {{ color: #a00; font-family: monospace; white-space: pre-wrap; }} ul {{ margin: 0; padding-left: 1.2em; }}
</style></head><body>
<h1>lumenkit report: {html.escape(str(cfg.get("run")))}</h1>
<p>Generated {time.strftime("%Y-%m-%d %H:%M")} from <code>{html.escape(json.dumps(shared, default=str))}</code></p>
<h2>Stages</h2>
<table><tr><th>notebook</th><th>status</th><th>time</th><th>headline figures</th></tr>
{"".join(rows)}
</table></body></html>
"""
    path = run_dir / "index.html"
    write_text(path, body)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)
