"""Shared helpers: figure creation, save / show in scanpy's manner, palettes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

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


PaletteKind = Literal["cluster", "batch", "label"]

# Each kind of panel has its own colours, so that cluster 0, the first batch and the first
# cell type are never drawn alike (a shared default palette suggests a match that is not
# there). Clusters: scanpy's 20-colour default (tab20, dark shades first); batches: Dark2
# reordered (purple and mustard first); cell types / labels: eight colours of scanpy's long
# palettes picked greedily to be far from the first ten cluster colours in CIELAB (colour
# difference >= 33, against 2-4 for Set1's blue and orange: a cluster panel beside a cell-type
# panel must not look like a match) and from each other (>= 37), ordered so that the first five
# differ in hue by >= 38 degrees (a 5-type panel drew lime, teal and dark green side by side in
# the greedy order). Longer lists continue with
# tab20b (batches), zeileis_28 (labels), then godsnot_102 (all, without its yellow).
_CLUSTER = [
    "#1f77b4", "#ff7f0e", "#279e68", "#d62728", "#aa40fc", "#8c564b", "#e377c2", "#b5bd61",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5", "#ad494a", "#8c6d31",
]
_BATCH = ["#7570b3", "#e6ab02", "#1b9e77", "#e7298a", "#66a61e", "#a6761d", "#666666", "#d95f02"]
_LABEL = ["#B903AA", "#4FC601", "#023FA5", "#FF8A9A", "#004D43", "#8E063B", "#336600", "#4A3B53"]
_TAB20B = [
    "#393b79", "#5254a3", "#6b6ecf", "#9c9ede", "#637939", "#8ca252", "#b5cf6b", "#cedb9c",
    "#8c6d31", "#bd9e39", "#e7ba52", "#e7cb94", "#843c39", "#ad494a", "#d6616b", "#e7969c",
    "#7b4173", "#a55194", "#ce6dbd", "#de9ed6",
]
PALETTE_KINDS = ("cluster", "batch", "label")


def _long_tail() -> list[str]:
    try:
        from scanpy.plotting import palettes

        return [c for c in palettes.godsnot_102 if c.upper() != "#FFFF00"]
    except ImportError:  # pragma: no cover - scanpy is a dependency
        return [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab20c").colors]


def palette(kind: PaletteKind, n: int) -> list[str]:
    """``n`` colours for one kind of categorical panel.

    Cluster, batch and label (cell-type) panels get different palettes, so colours never
    suggest that cluster 0, the first batch and the first cell type belong together.

    Parameters
    ----------
    kind
        ``"cluster"`` (scanpy's 20-colour default), ``"batch"`` (Dark2) or ``"label"``
        (eight colours far from the first ten cluster colours, so a cluster panel beside a
        cell-type panel does not suggest a match); longer lists continue with further
        qualitative palettes.
    n
        Number of colours.

    Returns
    -------
    ``n`` hex colours; they repeat only beyond about 120 categories.

    Examples
    --------
    >>> sc.pl.umap(adata, color="batch", palette=mixvi.pl.palette("batch", 2))
    """
    if kind not in PALETTE_KINDS:
        raise ValueError(f"kind must be one of {PALETTE_KINDS}, got {kind!r}.")
    if isinstance(n, bool) or int(n) < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}.")
    n = int(n)
    head = {"cluster": _CLUSTER, "batch": _BATCH + _TAB20B, "label": _LABEL}[kind]
    if kind == "label":
        try:
            from scanpy.plotting import palettes

            head = head + [c for c in palettes.zeileis_28 if c not in head]
        except ImportError:  # pragma: no cover
            pass
    colors = head + [c for c in _long_tail() if c not in head]
    return [colors[i % len(colors)] for i in range(n)]


def palette_kind(key: str, batch_key: str | None = None) -> PaletteKind:
    """The kind of panel an ``.obs`` column makes, from its name.

    ``"cluster"`` for names with ``cluster``, ``leiden`` or ``louvain``; ``"batch"`` for
    ``batch_key`` and names with ``batch``, ``sample``, ``donor``, ``library`` or
    ``replicate``; ``"label"`` otherwise (cell types and other annotations).
    """
    name = str(key).lower()
    if any(w in name for w in ("cluster", "leiden", "louvain")):
        return "cluster"
    if key == batch_key or any(w in name for w in ("batch", "sample", "donor", "library", "replicate")):
        return "batch"
    return "label"


def cluster_palette(
    adata, key: str, categories: Sequence[str], kind: PaletteKind = "cluster"
) -> dict[str, str]:
    """Colour of each category: ``adata.uns[f"{key}_colors"]`` if it fits, else the
    :func:`palette` of ``kind`` (so mixvi's figures match the user's scanpy colours)."""
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
    return dict(zip(categories, palette(kind, len(categories))))


def legend_columns(n: int) -> int:
    """Columns of a legend of ``n`` entries beside the axes (scanpy's rule): 1 up to 14,
    2 up to 30, then 3."""
    return 1 if n <= 14 else 2 if n <= 30 else 3


def as_str_categories(values) -> pd.Categorical:
    """Values as a categorical of strings, keeping the category order if there is one."""
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        cat = pd.Categorical(values)
        return cat.rename_categories([str(c) for c in cat.categories])
    arr = np.asarray(values).astype(str)
    return pd.Categorical(arr)
