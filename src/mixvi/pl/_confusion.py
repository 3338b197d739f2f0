"""Mixture clusters against reference labels (cell types)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from ._utils import as_str_categories, new_axes, save_or_show


def _order_clusters(counts: np.ndarray, order: str | None) -> np.ndarray:
    """Row order that puts each cluster beside the label it matches (block diagonal).

    ``"hungarian"``: a one-to-one assignment of clusters to labels maximising the
    matched cells; every other cluster goes with its most frequent label. Within a
    label the matched cluster comes first, then the others by cell count.
    ``"argmax"``: every cluster goes with its most frequent label.
    """
    n_rows = counts.shape[0]
    if order is None:
        return np.arange(n_rows)
    target = counts.argmax(1)
    matched = np.zeros(n_rows, dtype=bool)
    if order == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-counts)
        target[rows] = cols
        matched[rows] = True
    elif order != "argmax":
        raise ValueError(f"order must be 'hungarian', 'argmax' or None, got {order!r}.")
    in_target = counts[np.arange(n_rows), target]
    return np.lexsort((-in_target, ~matched, target))


def cluster_confusion(
    adata: AnnData,
    cluster_key: str = "mixvi_cluster",
    label_key: str = "cell_type",
    normalize: Literal["cluster", "label"] | None = "cluster",
    *,
    order: Literal["hungarian", "argmax"] | None = "hungarian",
    annotate: bool = True,
    cmap: str = "Blues",
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    figsize: tuple[float, float] | None = None,
) -> Axes | None:
    """Heatmap of clusters (rows) against reference labels (columns).

    Parameters
    ----------
    adata
        AnnData with both ``.obs`` columns. Not modified.
    cluster_key
        ``.obs`` column with the clusters (e.g. ``"mixvi_cluster"`` or
        ``"mixvi_cluster_l2"``).
    label_key
        ``.obs`` column with the reference labels.
    normalize
        ``"cluster"``: each row sums to 1 (which labels make up a cluster -- its
        purity); ``"label"``: each column sums to 1 (where the cells of a label went --
        how much it is split); ``None``: cell counts.
    order
        Row order for a readable diagonal: ``"hungarian"`` (one-to-one best matching of
        clusters to labels, the remaining clusters beside their majority label),
        ``"argmax"`` (every cluster beside its majority label) or ``None`` (category
        order). Labels keep their category order.
    annotate
        Write the value in every non-zero cell.
    cmap
        Colormap.
    title
        Axes title; default names the two keys and the normalisation.
    ax
        Axes to draw into.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        File to write the figure to (``.png`` added when there is no suffix).
    figsize
        Size of a new figure; default grows with the table.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` when ``show`` is ``False``, else ``None``. The
    table drawn is in ``ax.confusion_table`` (a DataFrame, rows and columns in the
    plotted order).
    """
    for key in (cluster_key, label_key):
        if key not in adata.obs:
            raise KeyError(f"adata.obs has no column {key!r}.")
    if normalize not in ("cluster", "label", None):
        raise ValueError(f"normalize must be 'cluster', 'label' or None, got {normalize!r}.")
    clusters = as_str_categories(adata.obs[cluster_key])
    labels = as_str_categories(adata.obs[label_key])
    keep = ~(pd.isna(np.asarray(adata.obs[cluster_key], dtype=object)) | pd.isna(
        np.asarray(adata.obs[label_key], dtype=object)
    ))
    table = pd.crosstab(
        pd.Series(clusters[keep], name=cluster_key), pd.Series(labels[keep], name=label_key),
        dropna=False,
    )
    table = table.loc[table.sum(1) > 0, table.sum(0) > 0]
    counts = table.to_numpy()
    rows = _order_clusters(counts.astype(float), order)
    table = table.iloc[rows]
    counts = table.to_numpy()
    if normalize == "cluster":
        values = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    elif normalize == "label":
        values = counts / np.clip(counts.sum(0, keepdims=True), 1, None)
    else:
        values = counts.astype(float)
    shown = pd.DataFrame(values, index=table.index, columns=table.columns)

    n_rows, n_cols = values.shape
    if figsize is None:
        figsize = (2.2 + 0.75 * n_cols, 1.4 + 0.42 * n_rows)
    owns_figure = ax is None
    fig, ax = new_axes(ax, figsize)
    vmax = 1.0 if normalize else max(values.max(), 1.0)
    im = ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cbar.set_label({"cluster": "fraction of cluster", "label": f"fraction of {label_key}",
                    None: "cells"}[normalize])
    if annotate:
        for i in range(n_rows):
            for j in range(n_cols):
                if counts[i, j] == 0:
                    continue
                v = values[i, j]
                text = f"{int(v)}" if normalize is None else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if v > 0.6 * vmax else "black")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([str(c) for c in table.columns], rotation=45, ha="right")
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([f"{c} (n={n})" for c, n in zip(table.index, counts.sum(1))])
    ax.set_xlabel(label_key)
    ax.set_ylabel(cluster_key)
    if title is None:
        how = {"cluster": "rows sum to 1", "label": "columns sum to 1", None: "cell counts"}
        title = f"{cluster_key} vs {label_key} ({how[normalize]})"
    ax.set_title(title, fontsize=10)
    ax.confusion_table = shown
    shown = save_or_show(fig, save, show, owns_figure=owns_figure)
    return None if shown else ax
