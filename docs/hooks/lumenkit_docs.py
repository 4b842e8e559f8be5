"""MkDocs hook: pages whose tables and CLI reference are generated at build time, so they cannot drift.

Two markers are replaced in any page's Markdown:

- ``<!-- table: NAME -->`` by the table in ``docs/results/NAME.json``: the figures copied from measured runs, every
  row with the command that reproduces it (one command for every row goes on the line above the table, otherwise it
  is a column, where a row with the command of the row above says "as above");
- ``<!-- cli: PROG -->`` (``lumenkit`` or ``lumenkit-lab``) by each subcommand's usage and help, from the parser the
  command itself uses (``build_parser()`` of :mod:`lumenkit.cli` or :mod:`lumenkit.lab.cli`);
- ``<!-- package-map -->`` by the package's subpackages and modules with the first line of each docstring, and
  ``<!-- import-contracts -->`` by the import-linter contracts of ``pyproject.toml``, so the architecture page
  describes the code as it is.

A marker naming a missing table or program fails the build; a results file no page uses is a warning (an error under
``mkdocs build --strict``). The functions are importable (``tests/test_docs.py``) without MkDocs.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import posixpath
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
TABLE_MARKER = re.compile(r"^<!-- table: ([a-z0-9_]+) -->$", re.MULTILINE)
CLI_MARKER = re.compile(r"^<!-- cli: ([a-z-]+) -->$", re.MULTILINE)
PACKAGE_MARKER = re.compile(r"^<!-- package-map -->$", re.MULTILINE)
CONTRACTS_MARKER = re.compile(r"^<!-- import-contracts -->$", re.MULTILINE)
HELP_WIDTH = 100
"""Columns of the generated help text, whatever the terminal that builds the docs."""

log = logging.getLogger("mkdocs.plugins.lumenkit_docs")
_used_tables: set[str] = set()


class DocsError(Exception):
    """A marker that cannot be rendered: a missing or malformed results file, an unknown program."""


# ----------------------------------------------------------------------------------------------- result tables


def load_table(name: str, results: Path = RESULTS) -> dict[str, Any]:
    """Read and check ``results/NAME.json``: ``title``, ``columns``, and ``rows`` of ``cells`` plus ``command``.

    Raises:
        DocsError: the file is missing, or a row has the wrong number of cells or no command.
    """
    path = results / f"{name}.json"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in results.glob("*.json"))) or "none"
        raise DocsError(f"{path}: no such results table (tables: {have})")
    table = json.loads(path.read_text(encoding="utf-8"))
    columns = table.get("columns")
    rows = table.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list) or not rows:
        raise DocsError(f"{path}: needs a list 'columns' and a non-empty list 'rows'")
    for i, row in enumerate(rows):
        if len(row.get("cells", [])) != len(columns):
            raise DocsError(f"{path}: row {i} has {len(row.get('cells', []))} cells for {len(columns)} columns")
        if not str(row.get("command", "")).strip():
            raise DocsError(f"{path}: row {i} has no command that reproduces it")
    return table


CODE_SPAN = re.compile(r"(`+).+?\1")


def _cell(text: str) -> str:
    """One table cell: on one line, ``|`` escaped outside code spans (Python-Markdown keeps them inside)."""
    text = str(text).replace("\n", " ")
    out, end = [], 0
    for m in CODE_SPAN.finditer(text):
        out += [text[end:m.start()].replace("|", "\\|"), m.group(0)]
        end = m.end()
    out.append(text[end:].replace("|", "\\|"))
    return "".join(out)


def _code(text: str) -> str:
    text = str(text).replace("\n", " ")
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def render_table(name: str, results: Path = RESULTS, data_link: str | None = None) -> str:
    """The Markdown of results table ``name``, with the command that reproduces each row.

    One command for all rows goes above the table; otherwise a ``reproduce`` column names each row's, and a row
    with the same command as the row above says "as above".

    Args:
        name: file stem under ``results``.
        results: folder of the JSON tables.
        data_link: relative link to the JSON file, shown under the table (None: no link).
    """
    table = load_table(name, results)
    columns = list(table["columns"])
    rows = table["rows"]
    commands = [str(r["command"]).strip() for r in rows]
    shared = len(set(commands)) == 1
    out = [f"*{table['title']}*" if table.get("title") else "", ""]
    if shared:
        out += ["Reproduce:", "", "```bash", commands[0], "```", ""]
    else:
        columns.append("reproduce")
    out.append("| " + " | ".join(_cell(c) for c in columns) + " |")
    out.append("|" + "---|" * len(columns))
    for i, (row, command) in enumerate(zip(rows, commands, strict=True)):
        cells = [_cell(c) for c in row["cells"]]
        if not shared:  # a run of rows from one command (a goal per measure) names it once
            cells.append("as above" if i and command == commands[i - 1] else _code(command))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    notes = [table["note"]] if table.get("note") else []
    if data_link:
        notes.append(f"Data: [`{posixpath.basename(data_link)}`]({data_link})")
    if notes:
        out += [" ".join(notes), ""]
    return "\n".join(out).lstrip("\n")


# ------------------------------------------------------------------------------------------------ CLI reference


def _parsers() -> dict[str, argparse.ArgumentParser]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from lumenkit.cli import build_parser as product
    from lumenkit.lab.cli import build_parser as lab

    return {"lumenkit": product(), "lumenkit-lab": lab()}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """``{name: (subparser, one-line help)}`` of a parser's subcommands, in the order the parser lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}
    return {}


@contextmanager
def _help_width(columns: int) -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def cli_reference(prog: str, heading: str = "##") -> str:
    """Markdown reference of program ``prog`` (``lumenkit`` or ``lumenkit-lab``): its help, then each subcommand's.

    Raises:
        DocsError: ``prog`` is not one of the two programs.
    """
    parsers = _parsers()
    if prog not in parsers:
        raise DocsError(f"unknown program {prog!r} in a cli marker (known: {', '.join(parsers)})")
    parser = parsers[prog]
    with _help_width(HELP_WIDTH):
        out = [f"{heading} `{prog}`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, (sub, help_line) in subcommands(parser).items():
            out += [f"{heading} `{prog} {name}`", ""]
            if help_line:
                out += [help_line[0].upper() + help_line[1:] + ("" if help_line.endswith(".") else "."), ""]
            out += ["```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- architecture


def _summary(path: Path) -> str:
    doc = (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()
    first = doc.split("\n")[0] if doc else ""
    first = re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", first)  # Sphinx roles → code
    return _cell(re.sub(r"``([^`]+)``", r"`\1`", first))


def package_map(package: Path = ROOT / "lumenkit") -> str:
    """Markdown table of the package's modules, grouped by subpackage, with each docstring's first line.

    Read from the source files (no import), private modules (``_name``) and ``__main__`` left out.
    """
    out = ["| subpackage | module | what it holds |", "|---|---|---|"]
    top = sorted(p for p in package.glob("*.py") if not p.stem.startswith("_"))
    for path in top:
        out.append(f"| `lumenkit` | `{path.stem}` | {_summary(path)} |")
    for sub in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        out.append(f"| **`lumenkit.{sub.name}`** | | {_summary(sub / '__init__.py')} |")
        for path in sorted(sub.glob("*.py")):
            if path.stem.startswith("_"):
                continue
            out.append(f"| | `{path.stem}` | {_summary(path)} |")
    return "\n".join(out) + "\n"


def import_contracts(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """Markdown of the import-linter contracts in ``pyproject.toml`` (what ``lint-imports`` checks)."""
    import tomllib

    contracts = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    out: list[str] = []
    for c in contracts:
        out += [f"**{c['name']}** (`{c['type']}`)", ""]
        if c["type"] == "layers":
            out += ["| layer (upper first) |", "|---|"]
            out += [f"| {' · '.join(f'`{m.strip()}`' for m in layer.split('|'))} |" for layer in c["layers"]]
        else:
            src = ", ".join(f"`{m}`" for m in c.get("source_modules", []))
            bad = ", ".join(f"`{m}`" for m in c.get("forbidden_modules", []))
            out += [f"- modules: {src}", f"- may not import: {bad}"]
        out.append("")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------- MkDocs hooks


def on_pre_build(config: Any) -> None:
    """Forget which tables the previous build used (``mkdocs serve`` rebuilds in one process)."""
    _used_tables.clear()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the table and CLI markers of one page by their generated Markdown."""
    page_dir = posixpath.dirname(page.file.src_uri)
    docs_dir = Path(config["docs_dir"]).resolve()
    results_rel = posixpath.relpath(RESULTS.relative_to(docs_dir).as_posix(), page_dir or ".")

    def table(match: re.Match[str]) -> str:
        name = match.group(1)
        _used_tables.add(name)
        try:
            return render_table(name, data_link=f"{results_rel}/{name}.json")
        except DocsError as e:
            raise _plugin_error(f"{page.file.src_uri}: {e}") from e

    def cli(match: re.Match[str]) -> str:
        try:
            return cli_reference(match.group(1))
        except DocsError as e:
            raise _plugin_error(f"{page.file.src_uri}: {e}") from e

    markdown = CLI_MARKER.sub(cli, TABLE_MARKER.sub(table, markdown))
    markdown = PACKAGE_MARKER.sub(lambda m: package_map(), markdown)
    return CONTRACTS_MARKER.sub(lambda m: import_contracts(), markdown)


def on_post_build(config: Any) -> None:
    """Warn about results files that no page shows (numbers nobody can see are numbers nobody checks)."""
    unused = sorted({p.stem for p in RESULTS.glob("*.json")} - _used_tables)
    if unused:
        log.warning("docs/results tables not shown on any page (add a <!-- table: NAME --> marker): %s",
                    ", ".join(unused))


def _plugin_error(message: str) -> Exception:
    try:
        from mkdocs.exceptions import PluginError
    except ImportError:  # pragma: no cover - only without MkDocs
        return DocsError(message)
    return PluginError(message)
