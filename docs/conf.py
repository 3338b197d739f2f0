"""Sphinx configuration of the mixvi documentation.

Build (offline, warnings as errors)::

    pip install -e ".[docs]"
    sphinx-build -W -b html docs docs/_build/html

Cross-links to other projects' documentation (intersphinx: Python, NumPy, anndata, scanpy,
scvi-tools, PyTorch, ...) need their ``objects.inv`` from the web, which an offline build
cannot fetch (and a failed fetch is a warning, so ``-W`` would fail). They are therefore off
by default and switched on with ``MIXVI_DOCS_INTERSPHINX=1``; without them a reference such
as :class:`anndata.AnnData` renders as plain code instead of a link. Notebooks under
``tutorials/`` are rendered as saved, never executed (``nb_execution_mode = "off"``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE / "_ext"))

import mixvi  # noqa: E402

project = "mixvi"
author = "mixvi developers"
copyright = "mixvi developers"  # noqa: A001
release = mixvi.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "myst_nb",
    "mixvi_cli_help",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# -- MyST / notebooks --------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # notebooks are shown as saved, never run during the build

# -- API reference -----------------------------------------------------------------------------
autosummary_generate = False  # tables only; the entries are documented on the same pages
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": False}
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True

# -- cross-links to other projects (off unless MIXVI_DOCS_INTERSPHINX=1, see above) ------------
INTERSPHINX = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "scipy": ("https://docs.scipy.org/doc/scipy", None),
    "pandas": ("https://pandas.pydata.org/docs", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable", None),
    "mudata": ("https://mudata.readthedocs.io/en/latest", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable", None),
    "torch": ("https://pytorch.org/docs/stable", None),
    "lightning": ("https://lightning.ai/docs/pytorch/stable", None),
    "matplotlib": ("https://matplotlib.org/stable", None),
}
intersphinx_mapping = INTERSPHINX if os.environ.get("MIXVI_DOCS_INTERSPHINX") == "1" else {}
intersphinx_timeout = 10

# -- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"mixvi {release}"
html_theme_options = {
    "source_repository": "",
    "navigation_with_keys": True,
}
pygments_style = "sphinx"
