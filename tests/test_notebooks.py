"""The tutorial notebooks (``docs/tutorials/*.ipynb``).

Fast: every notebook is stored executed (each code cell run once, in order, from a fresh
kernel, with no error output), has a title, and is listed by the tutorials toctree.

Slow: each notebook is executed from scratch with nbclient on a copy in a temporary folder,
and must run without a cell error. Its last cell prints ``CHECK <name>: <value> (floor
<floor>)`` lines -- each headline number beside the baseline it has to beat, computed in the
notebook (e.g. scIB scores of the unintegrated PCA, the mean-profile translation floor,
scanpy's ``ingest``) -- and asserts them; this test reads the lines back and checks them again,
so a notebook that stops printing its checks fails too.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
NOTEBOOKS = ["kang_integration", "snareseq_translation", "reference_query", "hierarchical_prior"]
#: each notebook's last cell checks at least this many numbers against their floors
MIN_CHECKS = {"kang_integration": 4, "snareseq_translation": 7, "reference_query": 4,
              "hierarchical_prior": 7}
CHECK_LINE = re.compile(r"^CHECK (?P<name>.+): (?P<value>-?[\d.]+) \(floor (?P<floor>-?[\d.]+)\)$")
MAX_BYTES = 1_500_000  # outputs are stored: keep each notebook small (figures at dpi 80)


def _read(path: Path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4)


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _checks(nb) -> list[tuple[str, float, float]]:
    """The ``CHECK`` lines printed by the last code cell: ``(name, value, floor)``."""
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    found = []
    for line in _stdout(last).splitlines():
        m = CHECK_LINE.match(line.strip())
        if m:
            found.append((m["name"], float(m["value"]), float(m["floor"])))
    return found


def _toctree_entries(index: Path) -> tuple[list[str], set[str]]:
    """Entries and options (``glob``, ``hidden``, ...) of the ``{toctree}`` blocks of a MyST
    page."""
    entries, options, inside = [], set(), False
    for line in index.read_text().splitlines():
        if line.startswith("```{toctree}"):
            inside = True
            continue
        if inside and line.startswith("```"):
            inside = False
            continue
        if inside and line.startswith(":"):
            options.add(line.strip(":").split(":")[0])
        elif inside and line.strip():
            entries.append(line.strip())
    return entries, options


# ----------------------------------------------------------------------------------- fast
def test_every_notebook_is_run_by_the_slow_test():
    """A notebook added to docs/tutorials must be added to NOTEBOOKS (and so be executed)."""
    assert sorted(p.stem for p in TUTORIALS.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("path", sorted(TUTORIALS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_stored_executed_without_errors(path):
    nb = _read(path)
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "title cell first"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    counts = [c.get("execution_count") for c in code]
    # run from a fresh kernel, top to bottom, each cell once
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts}"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", (path.name, cell.source[:80])
            assert out.get("name") != "stderr", (path.name, cell.source[:80],
                                                 out.get("text", "")[:300])
    assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), \
        f"{path.name}: no figure stored"
    checks = _checks(nb)
    assert len(checks) >= MIN_CHECKS.get(path.stem, 1), (path.name, checks)
    assert all(value > floor for _, value, floor in checks), (path.name, checks)


def test_notebooks_are_in_the_tutorials_toctree():
    entries, options = _toctree_entries(TUTORIALS / "index.md")
    assert entries, "no toctree in docs/tutorials/index.md"
    assert "glob" in options and "*" in entries, "the toctree globs every page of the folder"
    for name in NOTEBOOKS:
        assert any(fnmatch.fnmatch(name, entry) for entry in entries), (name, entries)
    assert "tutorials/index" in (ROOT / "docs" / "index.md").read_text()


def test_the_old_tutorial_scripts_are_gone():
    """The notebooks replace them (no .py copies that could drift from the notebooks)."""
    assert not (ROOT / "tutorials" / "mixvi_kang.py").exists()
    assert not (ROOT / "tutorials" / "multimixvi_snareseq.py").exists()


def test_check_line_parser():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(...)")
    cell.outputs = [nbformat.v4.new_output(
        "stream", name="stdout",
        text="CHECK iLISI: 0.854 (floor 0.000)\nnoise\nCHECK r: -0.100 (floor -0.200)\n")]
    nb.cells = [cell]
    assert _checks(nb) == [("iLISI", 0.854, 0.0), ("r", -0.1, -0.2)]


# ----------------------------------------------------------------------------------- slow
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_from_scratch(name, tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    copy = tmp_path / f"{name}.ipynb"
    shutil.copy(TUTORIALS / copy.name, copy)
    nb = _read(copy)
    for cell in nb.cells:  # from scratch: drop the stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # the kernel inherits the environment: one thread, the repository's data folder
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MIXVI_DATA_DIR", os.environ.get("MIXVI_DATA_DIR", str(ROOT / "data")))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell (incl. its asserts)

    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not any(o.get("output_type") == "error" for o in cell.outputs)
    checks = _checks(nb)
    assert len(checks) >= MIN_CHECKS[name], checks
    failed = [(n, v, f) for n, v, f in checks if not v > f]
    assert not failed, f"below the floor: {failed}"
