"""The documentation: every public object has a docstring and a place in the API reference
(fast, parses ``docs/api/*.rst``), and the Sphinx build passes with warnings as errors
(slow; needs the ``docs`` extra: ``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import mixvi

DOCS = Path(__file__).resolve().parents[1] / "docs"
API = DOCS / "api"
MODULES = [
    "mixvi", "mixvi.priors", "mixvi.module", "mixvi.train", "mixvi.metrics", "mixvi.pl",
    "mixvi.data", "mixvi.dataloaders", "mixvi.datasets",
]
MODELS = ("MixVI", "MultiMixVI")
_DIRECTIVE = re.compile(r"^\.\. (auto\w+|py:\w+|currentmodule)::\s*(\S+)\s*$")
_OPTION = re.compile(r"^\s+:(\w[\w-]*):\s*(.*)$")


def documented() -> tuple[dict[str, str], dict[str, set[str]], dict[str, str]]:
    """From the API pages: ``{full name: directive}``, the ``:members:`` of each class, and
    the text body of each ``py:data`` entry."""
    names: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    bodies: dict[str, str] = {}
    for page in sorted(API.glob("*.rst")):
        module = None
        current = None
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            m = _DIRECTIVE.match(line)
            if m:
                kind, target = m.groups()
                if kind == "currentmodule":
                    module, current = target, None
                    continue
                full = target if (kind == "automodule" or "." in target or module is None) \
                    else f"{module}.{target}"
                names[full] = kind
                current = full
                if kind == "py:data":
                    body = []
                    for nxt in lines[i + 1:]:
                        if nxt and not nxt.startswith(" "):
                            break
                        if nxt.strip() and not _OPTION.match(nxt):
                            body.append(nxt.strip())
                    bodies[full] = " ".join(body)
                continue
            opt = _OPTION.match(line)
            if opt and current is not None and opt.group(1) == "members":
                value = [opt.group(2)]
                for nxt in lines[i + 1:]:
                    if not nxt.startswith("      ") or _OPTION.match(nxt):
                        break
                    value.append(nxt.strip())
                members[current] = {v.strip() for v in " ".join(value).split(",") if v.strip()}
    return names, members, bodies


def public_objects() -> list[tuple[str, str, object]]:
    """``(module, name, object)`` for everything in the ``__all__`` of the public modules."""
    out = []
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in mod.__all__:
            out.append((modname, name, getattr(mod, name)))
    return out


def own_public_members(cls: type) -> dict[str, object]:
    """Public attributes defined in a mixvi class of ``cls``'s MRO (not scvi-tools')."""
    found = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next(k for k in cls.__mro__ if name in vars(k))
        if owner.__module__.startswith("mixvi"):
            found[name] = vars(owner)[name]
    return found


def _doc(obj) -> str:
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    return (getattr(obj, "__doc__", None) or "").strip()


def test_every_public_object_has_a_docstring():
    missing = []
    for modname, name, obj in public_objects():
        if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj):
            if not _doc(obj):
                missing.append(f"{modname}.{name}")
    for model in MODELS:
        for name, member in own_public_members(getattr(mixvi, model)).items():
            if not _doc(member):
                missing.append(f"mixvi.{model}.{name}")
    assert not missing, f"no docstring: {missing}"


def test_every_public_object_is_in_the_api_reference():
    names, members, bodies = documented()
    missing = []
    for modname, name, obj in public_objects():
        if inspect.ismodule(obj):
            if names.get(obj.__name__) != "automodule":
                missing.append(f"{obj.__name__} (automodule)")
            continue
        full = f"{modname}.{name}"
        kind = names.get(full)
        if inspect.isclass(obj):
            ok = kind == "autoclass"
        elif inspect.isroutine(obj):
            ok = kind == "autofunction"
        else:  # constants, type aliases, the settings object: described in words
            ok = kind in ("autodata", "py:data") and (kind == "autodata" or bool(bodies.get(full)))
        if not ok:
            missing.append(f"{full} (found: {kind})")
    assert not missing, f"not in docs/api/*.rst: {missing}"
    for model in MODELS:
        listed = members.get(f"mixvi.{model}", set())
        wanted = set(own_public_members(getattr(mixvi, model)))
        assert wanted <= listed, f"mixvi.{model} methods missing from :members:: {wanted - listed}"
        assert listed <= set(dir(getattr(mixvi, model))), f"unknown members {listed - set(dir(getattr(mixvi, model)))}"


def test_api_parser_sees_what_is_there():
    """The parser above finds the entries (so the two tests can fail)."""
    names, members, bodies = documented()
    assert names["mixvi.MixVI"] == "autoclass"
    assert names["mixvi.pl.embedding"] == "autofunction"
    assert names["mixvi.priors"] == "automodule"
    assert {"train", "setup_anndata", "write_to_adata"} <= members["mixvi.MixVI"]
    assert "make_prior" in bodies["mixvi.priors.PRIORS"]
    assert "mixvi.pl.not_a_function" not in names


def test_every_api_page_is_in_the_toctree_and_pages_exist():
    index = (API / "index.rst").read_text()
    for page in API.glob("*.rst"):
        if page.stem != "index":
            assert re.search(rf"^\s+{page.stem}$", index, re.MULTILINE), page.stem
    for path in ("index.md", "cli.md", "user_guide/model.md", "user_guide/choosing_k.md",
                 "user_guide/batch_balance.md", "user_guide/translation.md",
                 "user_guide/reliability.md", "user_guide/training.md", "scaling.md",
                 "tutorials/scripts.md"):
        assert (DOCS / path).stat().st_size > 500, path


def test_conf_offline_and_notebooks_not_executed(monkeypatch):
    monkeypatch.delenv("MIXVI_DOCS_INTERSPHINX", raising=False)
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert conf["nb_execution_mode"] == "off"
    assert conf["intersphinx_mapping"] == {}  # offline by default: nothing to fetch
    assert {"anndata", "scanpy", "scvi", "torch", "numpy", "python"} <= set(conf["INTERSPHINX"])
    monkeypatch.setenv("MIXVI_DOCS_INTERSPHINX", "1")
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert conf["intersphinx_mapping"] == conf["INTERSPHINX"]


def test_cli_help_directive_matches_the_parser():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from mixvi_cli_help import cli_help
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    text = cli_help("fit-multi")
    assert text.startswith("usage: mixvi fit-multi") and "--translate" in text
    assert max(len(line) for line in text.splitlines()) <= 90


@pytest.mark.slow
def test_sphinx_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    pytest.importorskip("myst_nb")
    from sphinx.util.inventory import InventoryFile

    out = tmp_path / "html"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MIXVI_DOCS_INTERSPHINX", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
         str(out)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr[-5000:]
    with open(out / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    py_names = {name for kind, entries in inventory.data.items() if kind.startswith("py:")
                for name in entries} if hasattr(inventory, "data") else {
        name for kind, entries in inventory.items() if kind.startswith("py:") for name in entries}
    missing = [f"{m}.{n}" for m, n, obj in public_objects()
               if not inspect.ismodule(obj) and f"{m}.{n}" not in py_names]
    assert not missing, f"not in the built inventory: {missing}"
    for model in MODELS:
        for name in own_public_members(getattr(mixvi, model)):
            assert f"mixvi.{model}.{name}" in py_names, (model, name)
    models = (out / "api" / "models.html").read_text()
    assert "write_to_adata" in models and "predict_rna_from_atac" in models
    cli_page = (out / "cli.html").read_text()
    assert "--translate" in cli_page and "usage: mixvi fit" in cli_page
    assert (out / "user_guide" / "model.html").exists() and (out / "scaling.html").exists()
