"""Marker genes of the mixture clusters: ranking (scanpy) and a dot plot."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

if TYPE_CHECKING:
    from mixvi.model import MixVI

from ._utils import as_str_categories, new_axes, save_or_show

RankMethod = Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"]


def _counts_matrix(model: Any, adata: AnnData, layer: str | None):
    if layer is None:
        registered = (getattr(model, "registry_", {}) or {}).get("setup_args", {}).get("layer")
        layer = registered if registered in adata.layers else None
    elif layer not in adata.layers:
        raise KeyError(f"adata.layers has no {layer!r}; available: {sorted(adata.layers.keys())}.")
    return adata.layers[layer] if layer is not None else adata.X


def _log_normalised(adata: AnnData, layer: str | None, model: Any, rows: np.ndarray) -> sp.csr_matrix:
    """normalize_total(1e4) + log1p of (a copy of) the counts of ``rows``."""
    X = sp.csr_matrix(_counts_matrix(model, adata, layer)[rows], dtype=np.float32, copy=True)
    totals = np.asarray(X.sum(1)).ravel()
    X = sp.diags((1e4 / np.clip(totals, 1e-12, None)).astype(np.float32)) @ X
    X.data = np.log1p(X.data)
    return sp.csr_matrix(X)


def _rank(
    adata: AnnData, groups: np.ndarray, n_genes: int, layer: str | None, method: str, model: Any
) -> dict[str, list[str]]:
    """Top ``n_genes`` var names per group (one vs rest, up in the group)."""
    import scanpy as sc

    sizes = pd.Series(groups).value_counts()
    ok = sizes.index[sizes >= 2]
    if n_genes <= 0 or len(ok) < 2:
        return {}
    keep = np.isin(groups, ok)
    tmp = AnnData(
        X=_log_normalised(adata, layer, model, np.flatnonzero(keep)),
        obs=pd.DataFrame({"group": pd.Categorical(groups[keep])},
                         index=np.arange(int(keep.sum())).astype(str)),
        var=pd.DataFrame(index=adata.var_names.astype(str).copy()),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(tmp, "group", method=method, use_raw=False)
    out = {}
    for g in ok:
        df = sc.get.rank_genes_groups_df(tmp, group=str(g))
        df = df[df["logfoldchanges"] > 0] if "logfoldchanges" in df else df
        out[str(g)] = list(df["names"].astype(str).head(n_genes))
    return out


def _symbols(adata: AnnData, gene_symbols: str | None) -> dict[str, str]:
    if gene_symbols is None:
        return {}
    if gene_symbols not in adata.var:
        raise KeyError(
            f"adata.var has no column {gene_symbols!r} (gene_symbols=); available: "
            f"{sorted(map(str, adata.var.columns))}."
        )
    return dict(zip(adata.var_names.astype(str), adata.var[gene_symbols].astype(str)))


def rank_marker_genes(
    adata: AnnData,
    groups: np.ndarray,
    n_genes: int = 3,
    layer: str | None = None,
    method: RankMethod = "wilcoxon",
    model: Any = None,
    gene_symbols: str | None = None,
) -> dict[str, list[str]]:
    """Top marker genes of each group, on a log-normalised copy of the counts.

    ``adata`` is not modified: a new AnnData is built from (a copy of) the counts,
    normalised to 10,000 per cell, log1p-transformed and ranked with
    :func:`scanpy.tl.rank_genes_groups` (one group vs the rest). Groups with fewer than 2
    cells get no markers; genes must be up in the group (positive log fold change).

    Parameters
    ----------
    adata
        AnnData with raw counts in ``layer`` (or the model's registered layer, or ``.X``).
    groups
        Group of each cell, shape ``(n_cells,)``.
    n_genes
        Markers per group; ``0`` gives ``{}``.
    layer
        Layer with the counts; ``None``: the layer ``model`` was set up with, else ``.X``.
    method
        ``method`` of :func:`scanpy.tl.rank_genes_groups`.
    model
        Trained model, only to find the registered counts layer.
    gene_symbols
        ``.var`` column with the names to report instead of the var names.

    Returns
    -------
    ``{group: [gene, ...]}`` for the groups with at least 2 cells (when there are 2 such
    groups or more).
    """
    groups = np.asarray(groups).astype(str)
    symbol = _symbols(adata, gene_symbols)
    ranked = _rank(adata, groups, n_genes, layer, method, model)
    return {g: [symbol.get(n, n) for n in genes] for g, genes in ranked.items()}


def marker_genes(
    adata: AnnData,
    cluster_key: str = "mixvi_cluster",
    n_genes: int = 3,
    *,
    model: MixVI | None = None,
    layer: str | None = None,
    gene_symbols: str | None = None,
    method: RankMethod = "wilcoxon",
    cmap: str = "Reds",
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    figsize: tuple[float, float] | None = None,
) -> Axes | None:
    """Dot plot of the top marker genes of every cluster.

    Genes are ranked per cluster against the rest (:func:`rank_marker_genes`, on a
    log-normalised copy of the counts; ``adata`` is not modified). Each dot is one
    cluster (row) and gene (column): its area is the fraction of the cluster's cells in
    which the gene is detected, its colour the cluster's mean log-normalised expression
    divided by the gene's largest cluster mean (so every gene spans 0-1).

    Parameters
    ----------
    adata
        AnnData with raw counts and ``.obs[cluster_key]`` (e.g. after
        ``model.write_to_adata(adata)``).
    cluster_key
        ``.obs`` column with the clusters.
    n_genes
        Markers per cluster (at least 1).
    model
        The trained model, to read the counts from the layer it was set up with.
    layer
        Layer with the raw counts (overrides the model's).
    gene_symbols
        ``.var`` column with the gene names to print.
    method
        ``method`` of :func:`scanpy.tl.rank_genes_groups`.
    cmap
        Colormap of the scaled mean expression.
    title
        Axes title.
    ax
        Axes to draw into.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        File to write the figure to (``.png`` added when there is no suffix).
    figsize
        Size of a new figure; default grows with the genes and clusters.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` when ``show`` is ``False``, else ``None``. The
    markers are in ``ax.marker_genes`` (``{cluster: [gene, ...]}``) and the plotted values
    in ``ax.marker_table`` (a DataFrame of mean log expression, clusters x genes) and
    ``ax.marker_fraction`` (fraction of cells detected).

    Examples
    --------
    >>> model.write_to_adata(adata)
    >>> mixvi.pl.marker_genes(adata, "mixvi_cluster", n_genes=3, model=model)
    """
    if cluster_key not in adata.obs:
        raise KeyError(
            f"adata.obs has no {cluster_key!r}; call model.write_to_adata(adata) first "
            f"(available: {sorted(map(str, adata.obs.columns))})."
        )
    if n_genes < 1:
        raise ValueError(f"n_genes must be at least 1, got {n_genes}.")
    cats = as_str_categories(adata.obs[cluster_key])
    groups = np.asarray(cats.astype(str), dtype=object)
    assigned = np.asarray(cats.codes) >= 0
    groups = np.where(assigned, groups, "").astype(str)
    ranked = _rank(adata, groups, n_genes, layer, method, model)
    if not ranked:
        raise ValueError(
            f"Marker genes need at least two clusters with 2 or more cells in "
            f"adata.obs[{cluster_key!r}]."
        )
    order = [str(c) for c in cats.categories if str(c) in ranked]
    genes: list[str] = []
    for g in order:
        genes += [n for n in ranked[g] if n not in genes]
    symbol = _symbols(adata, gene_symbols)
    columns = adata.var_names.astype(str).get_indexer(genes)
    X = _log_normalised(adata, layer, model, np.flatnonzero(assigned))[:, columns]
    g_cells = groups[assigned]
    mean = np.vstack([np.asarray(X[g_cells == g].mean(0)).ravel() for g in order])
    frac = np.vstack([np.asarray((X[g_cells == g] > 0).mean(0)).ravel() for g in order])
    scaled = mean / np.clip(mean.max(0, keepdims=True), 1e-12, None)
    names = [symbol.get(n, n) for n in genes]

    n_rows, n_cols = len(order), len(genes)
    if figsize is None:
        figsize = (2.8 + 0.32 * n_cols, 1.2 + 0.34 * n_rows)
    owns_figure = ax is None
    fig, ax = new_axes(ax, figsize)
    max_area = 160.0
    yy, xx = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    dots = ax.scatter(xx.ravel(), yy.ravel(), s=np.clip(frac.ravel(), 0, 1) * max_area,
                      c=scaled.ravel(), cmap=cmap, vmin=0, vmax=1, edgecolors="grey",
                      linewidths=0.3)
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    counts = pd.Series(g_cells).value_counts()
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([f"{g} (n={int(counts.get(g, 0))})" for g in order], fontsize=8)
    ax.set_xlim(-0.6, n_cols - 0.4)
    ax.set_ylim(n_rows - 0.4, -0.6)
    ax.set_ylabel(cluster_key)
    cbar = fig.colorbar(dots, ax=ax, fraction=0.04, pad=0.02, shrink=0.8)
    cbar.set_label("mean expression\n(scaled per gene)", fontsize=8)
    sizes = [0.25, 0.5, 1.0]
    handles = [Line2D([], [], marker="o", ls="", mfc="lightgrey", mec="grey",
                      ms=np.sqrt(f * max_area), label=f"{int(f * 100)}%") for f in sizes]
    ax.legend(handles=handles, title="cells detected", loc="upper left",
              bbox_to_anchor=(1.12 + 0.2 * 6 / max(n_cols, 6), 1.0), frameon=False,
              fontsize="small", title_fontsize="small", labelspacing=1.0)
    ax.set_title(title or f"top {n_genes} marker genes per {cluster_key}", fontsize=10)
    ax.marker_genes = {g: [symbol.get(n, n) for n in ranked[g]] for g in order}
    ax.marker_table = pd.DataFrame(mean, index=order, columns=names)
    ax.marker_fraction = pd.DataFrame(frac, index=order, columns=names)
    shown = save_or_show(fig, save, show, owns_figure=owns_figure)
    return None if shown else ax
