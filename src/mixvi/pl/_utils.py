"""Shared helpers: figure creation, save / show in scanpy's manner, palettes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

_NON_INTERACTIVE = {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"}


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The figure and Axes to draw into: ``ax`` itself, or a new one of ``figsize``."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def resolve_show(show: bool | None) -> bool:
    """``show=None`` follows scanpy's ``settings.autoshow`` (``True`` without scanpy)."""
    if show is not None:
        return bool(show)
    try:
        import scanpy as sc

        return bool(sc.settings.autoshow)
    except ImportError:  # pragma: no cover - scanpy is a dependency
        return True


def save_or_show(
    fig: Figure,
    save: str | Path | None,
    show: bool | None,
    dpi: int = 150,
    owns_figure: bool = True,
) -> bool:
    """Write ``fig`` to ``save`` and/or show it; returns whether it was shown.

    ``save`` is a file path; without a suffix ``.png`` is added. Parent folders are
    created. ``plt.show()`` is skipped on non-interactive backends such as Agg. A figure
    this package created (``owns_figure``) is closed once saved or shown, as scanpy
    does, so scripts do not pile up open figures; the returned objects stay usable. A
    figure the caller passed in (through ``ax=``) is never closed.
    """
    show = resolve_show(show)
    interactive = matplotlib.get_backend().lower() not in _NON_INTERACTIVE
    if save is not None:
        path = Path(save)
        if not path.suffix:
            path = path.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    if show and interactive:
        plt.show()
    if owns_figure and (save is not None or (show and not interactive)):
        plt.close(fig)
    return show


def cluster_palette(adata, key: str, categories: Sequence[str]) -> dict[str, str]:
    """Colour of each category: ``adata.uns[f"{key}_colors"]`` if it fits, else scanpy's."""
    categories = [str(c) for c in categories]
    colors = None
    if adata is not None:
        stored = adata.uns.get(f"{key}_colors")
        col = adata.obs.get(key)
        if stored is not None and col is not None and isinstance(col.dtype, pd.CategoricalDtype):
            if len(stored) == len(col.cat.categories):
                colors = dict(zip(map(str, col.cat.categories), stored))
    if colors is not None and all(c in colors for c in categories):
        return {c: colors[c] for c in categories}
    try:
        from scanpy.plotting import palettes

        base = palettes.default_20 if len(categories) <= 20 else palettes.default_102
    except ImportError:  # pragma: no cover
        base = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab20").colors]
    return {c: base[i % len(base)] for i, c in enumerate(categories)}


def as_str_categories(values) -> pd.Categorical:
    """Values as a categorical of strings, keeping the category order if there is one."""
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        cat = pd.Categorical(values)
        return cat.rename_categories([str(c) for c in cat.categories])
    arr = np.asarray(values).astype(str)
    return pd.Categorical(arr)
