"""Cells on an embedding (UMAP), one panel per ``.obs`` column, each kind with its palette."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from ._utils import (
    PaletteKind,
    as_str_categories,
    legend_columns,
    palette,
    palette_kind,
    save_or_show,
)

_MISSING = "NA"


def _coordinates(adata: AnnData, basis: str) -> np.ndarray:
    for key in (basis, f"X_{basis}"):
        if key in adata.obsm:
            emb = np.asarray(adata.obsm[key])
            if emb.ndim != 2 or emb.shape[1] < 2:
                raise ValueError(f"adata.obsm[{key!r}] has fewer than 2 dimensions.")
            return emb[:, :2]
    raise KeyError(
        f"No embedding {basis!r} in adata.obsm (looked for {basis!r} and 'X_{basis}'; "
        f"available: {sorted(adata.obsm.keys())}); run e.g. "
        "sc.pp.neighbors(adata, use_rep='X_mixvi') and sc.tl.umap(adata)."
    )


def _is_categorical(values: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(values) or isinstance(
        values.dtype, pd.CategoricalDtype
    ) or pd.api.types.is_bool_dtype(values)


def _categorical_panel(
    ax: Axes, xy: np.ndarray, values: pd.Series, colors: list[str], order: np.ndarray,
    size: float, legend: bool,
) -> dict[str, str]:
    cats = as_str_categories(values)
    names = [str(c) for c in cats.categories]
    lut = dict(zip(names, colors))
    labels = np.asarray(cats.astype(str), dtype=object)
    labels[np.asarray(cats.codes) < 0] = _MISSING
    point_colors = np.array([lut.get(v, "lightgrey") for v in labels], dtype=object)
    ax.scatter(xy[order, 0], xy[order, 1], c=list(point_colors[order]), s=size, linewidths=0,
               rasterized=True)
    if legend:
        present = [n for n in names if (labels == n).any()]
        handles = [Line2D([], [], marker="o", ls="", color=lut[n], label=n) for n in present]
        if (labels == _MISSING).any():
            handles.append(Line2D([], [], marker="o", ls="", color="lightgrey", label=_MISSING))
        ax.legend(
            handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
            fontsize="small", ncol=legend_columns(len(handles)), handletextpad=0.2,
            columnspacing=0.8, borderaxespad=0.0,
        )
    return lut


def embedding(
    adata: AnnData,
    color: str | Sequence[str],
    basis: str = "umap",
    *,
    kinds: Mapping[str, PaletteKind] | None = None,
    batch_key: str | None = None,
    palettes: Mapping[str, Sequence[str]] | None = None,
    point_size: float | None = None,
    legend: bool = True,
    titles: Mapping[str, str] | None = None,
    cmap: str = "viridis",
    ncols: int = 3,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    panel_size: tuple[float, float] = (4.6, 4.0),
) -> Axes | list[Axes] | None:
    """Cells on an embedding, one panel per ``.obs`` column, legends beside the panels.

    Like :func:`scanpy.pl.embedding`, but every kind of categorical panel has a palette
    of its own (:func:`mixvi.pl.palette`): clusters, batches and cell types never share
    colours, so cluster 0, the first batch and the first cell type do not look alike.
    Legends sit to the right of each panel, in several columns for many categories, so
    they never cover cells. Numeric columns are drawn with ``cmap`` and a colour bar.
    Cells are drawn in a fixed random order, so no category hides another. ``adata`` is
    not modified (no ``uns[<key>_colors]`` is written).

    Parameters
    ----------
    adata
        AnnData with ``.obsm[f"X_{basis}"]``.
    color
        One ``.obs`` column or a list of them.
    basis
        Embedding in ``.obsm`` (``"umap"`` reads ``X_umap``).
    kinds
        Kind of each categorical panel, ``{"mixvi_cluster": "cluster", "sample": "batch"}``;
        columns not given are guessed from their names (:func:`mixvi.pl.palette_kind`).
    batch_key
        Column to treat as the batch whatever its name.
    palettes
        Colours of some columns, overriding their kind's palette.
    point_size
        Dot size; default ``120000 / n_cells`` clipped to ``[1, 30]``, as in scanpy.
    legend
        Draw the legends of categorical panels.
    titles
        Panel titles; default the column name.
    cmap
        Colormap of numeric columns.
    ncols
        Panels per row of a new figure.
    ax
        Axes to draw into: one (for one column) or one per column.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        File to write the figure to (``.png`` added when there is no suffix).
    panel_size
        Width and height of one panel in inches (a new figure leaves room for legends).

    Returns
    -------
    With ``show=False``: the :class:`~matplotlib.axes.Axes` when ``color`` is one column,
    else the list of Axes (one per column); ``None`` when shown. Each Axes carries
    ``ax.mixvi_palette``, the ``{category: colour}`` used (``None`` for numeric columns).

    Examples
    --------
    >>> mixvi.pl.embedding(adata, ["mixvi_cluster", "batch", "cell_type"], batch_key="batch")
    """
    single = isinstance(color, str)
    keys = [color] if single else list(color)
    if not keys:
        raise ValueError("color is empty: name at least one .obs column.")
    for key in keys:
        if key not in adata.obs:
            raise KeyError(
                f"adata.obs has no column {key!r}; available: {sorted(map(str, adata.obs.columns))}."
            )
    xy = _coordinates(adata, basis)
    kinds, palettes, titles = dict(kinds or {}), dict(palettes or {}), dict(titles or {})
    owns_figure = ax is None
    if owns_figure:
        n = len(keys)
        cols = max(1, min(int(ncols), n))
        rows = int(np.ceil(n / cols))
        fig, grid = plt.subplots(
            rows, cols, figsize=(panel_size[0] * 1.45 * cols, panel_size[1] * rows), squeeze=False
        )
        axes = list(grid.flat)
        for extra in axes[n:]:
            extra.set_visible(False)
        axes = axes[:n]
    else:
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) != len(keys):
            raise ValueError(f"Got {len(axes)} Axes for {len(keys)} columns.")
        fig = axes[0].figure
    size = point_size if point_size is not None else float(
        np.clip(120000 / max(adata.n_obs, 1), 1, 30)
    )
    order = np.random.default_rng(0).permutation(adata.n_obs)
    short = basis.removeprefix("X_")
    axis_name = short.upper() if short.lower() in ("umap", "pca", "tsne") else short
    for axis, key in zip(axes, keys):
        values = adata.obs[key]
        if _is_categorical(values):
            n_cats = len(as_str_categories(values).categories)
            kind = kinds.get(key) or palette_kind(key, batch_key)
            colors = list(palettes.get(key) or palette(kind, n_cats))
            if len(colors) < n_cats:
                raise ValueError(f"palettes[{key!r}] has {len(colors)} colours for {n_cats} categories.")
            axis.mixvi_palette = _categorical_panel(axis, xy, values, colors, order, size, legend)
        else:
            v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            sc_ = axis.scatter(xy[order, 0], xy[order, 1], c=v[order], cmap=cmap, s=size,
                               linewidths=0, rasterized=True, plotnonfinite=True)
            fig.colorbar(sc_, ax=axis, fraction=0.05, pad=0.02)
            axis.mixvi_palette = None
        axis.set_title(titles.get(key, key), fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(f"{axis_name}1")
        axis.set_ylabel(f"{axis_name}2")
    if owns_figure:
        fig.tight_layout()
    shown = save_or_show(fig, save, show, owns_figure=owns_figure)
    if shown:
        return None
    return axes[0] if single else axes
