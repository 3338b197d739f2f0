"""The learned tree of the hierarchical mixture prior, as a dendrogram."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

if TYPE_CHECKING:
    from mixvi.model import MixVI

from ._markers import rank_marker_genes
from ._utils import as_str_categories, cluster_palette, new_axes, save_or_show


def _hierarchical_prior(model: Any):
    from mixvi.priors import HierarchicalGaussianMixturePrior

    prior = getattr(getattr(model, "module", None), "prior", None)
    if not isinstance(prior, HierarchicalGaussianMixturePrior):
        kind = type(prior).__name__ if prior is not None else type(model).__name__
        raise ValueError(
            "mixvi.pl.tree needs a model trained with prior='hierarchical' (a "
            f"HierarchicalGaussianMixturePrior); this model has {kind}. For other priors "
            "use mixvi.pl.mixture or mixvi.pl.cluster_confusion."
        )
    return prior


def _leaf_assignments(
    model: Any, adata: AnnData, cluster_key: str | None, leaf_names: list[str]
) -> tuple[np.ndarray, str | None]:
    """Leaf of every cell and the ``.obs`` key it came from (``None``: computed by the model).

    ``adata.obs[cluster_key]`` is used when it holds leaf names only.
    """
    if cluster_key is not None and cluster_key in adata.obs:
        values = np.asarray(as_str_categories(adata.obs[cluster_key]).astype(str))
        if set(values) <= set(leaf_names):
            return values, cluster_key
        warnings.warn(
            f"adata.obs[{cluster_key!r}] holds values that are not leaves of the tree; "
            "computing the finest-level clusters with the model instead.",
            stacklevel=3,
        )
    # A foreign AnnData would be registered (written to) by scvi-tools: use a copy.
    target = adata if adata is model.adata else adata.copy()
    return np.asarray(model.get_cluster_assignments(target)["cluster"].astype(str)), None


def tree(
    model: MixVI,
    adata: AnnData | None = None,
    cluster_key: str | None = "mixvi_cluster",
    n_genes: int = 3,
    *,
    layer: str | None = None,
    gene_symbols: str | None = None,
    rank_method: Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"] = "wilcoxon",
    height: Literal["distance", "depth"] = "distance",
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    figsize: tuple[float, float] | None = None,
) -> Axes | None:
    """Dendrogram of the learned tree of a ``prior="hierarchical"`` model.

    Leaves are the finest mixture components (the clusters); each internal node's
    mean is the average of its children's, and it is drawn at the height where its
    two children merge. Every leaf is labelled with its name, its number of cells and
    its top marker genes; every internal node with its name and the cells below it.
    Marker dots are sized by the component's mixture weight ``pi_k``.

    Parameters
    ----------
    model
        A trained :class:`~mixvi.MixVI` with ``prior="hierarchical"``; any other prior
        raises :class:`ValueError`.
    adata
        Cells to count and to find marker genes in (set up like the training data);
        ``None`` uses the model's training data. Never modified: marker genes are found
        on a log-normalised copy of the counts.
    cluster_key
        ``.obs`` column with each cell's leaf (``model.write_to_adata`` writes
        ``"mixvi_cluster"``); when missing, or ``None``, the clusters are computed with
        :meth:`~mixvi.MixVI.get_cluster_assignments`.
    n_genes
        Marker genes per leaf (:func:`scanpy.tl.rank_genes_groups`, one leaf vs the
        rest); ``0`` for none.
    layer
        Layer with the raw counts; ``None`` uses the layer the model was set up with
        (or ``.X``).
    gene_symbols
        ``.var`` column with the gene names to print (as in scanpy); ``None`` uses the
        var names.
    rank_method
        ``method`` of :func:`scanpy.tl.rank_genes_groups`.
    height
        ``"distance"``: a node sits at the latent distance between its two children's
        means, made monotone (an average of two means can lie closer to its sibling than
        its own children lie to each other; such a node is drawn a small step -- 3% of
        the largest distance -- above its higher child); ``"depth"``: at its number of
        merge steps above the leaves.
    title
        Axes title.
    ax
        Axes to draw into.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        File to write the figure to (``.png`` added when there is no suffix).
    figsize
        Size of a new figure; default grows with the number of leaves.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` when ``show`` is ``False``, else ``None``.

    Examples
    --------
    >>> model = mixvi.MixVI(adata, prior="hierarchical", n_components=8)
    >>> model.train()
    >>> mixvi.pl.tree(model, n_genes=3)
    """
    import torch

    prior = _hierarchical_prior(model)
    if height not in ("distance", "depth"):
        raise ValueError(f"height must be 'distance' or 'depth', got {height!r}.")
    adata = model.adata if adata is None else adata
    L = int(prior.n_leaves)
    children = prior.tree_children.cpu().numpy().astype(int)
    with torch.no_grad():
        log_w, _, _ = prior.component_params()
        means = prior.node_means().detach().cpu().numpy()
    weights = np.exp(log_w.detach().cpu().numpy())
    names = [str(n) for n in model.component_names()]
    leaf_names = names[:L]

    # heights and subtree leaves, children before parents
    h = np.zeros(2 * L - 1)
    below: list[list[int]] = [[i] for i in range(L)] + [[] for _ in range(L - 1)]
    dist = np.array([np.linalg.norm(means[a] - means[b]) for a, b in children], dtype=float)
    gap = 0.03 * max(float(dist.max()), 1e-12)
    for j, (a, b) in enumerate(children):
        node = L + j
        if height == "distance":
            h[node] = max(dist[j], max(h[a], h[b]) + gap)
        else:
            h[node] = 1.0 + max(h[a], h[b])
        below[node] = below[a] + below[b]
    # the tree spans the active leaves only (switched-off leaves have no node)
    root = L + len(children) - 1

    # leaf order: depth-first from the root, so every subtree is contiguous
    order: list[int] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node < L:
            order.append(node)
        else:
            a, b = children[node - L]
            stack.extend([b, a])
    n_shown = len(order)
    y = np.zeros(2 * L - 1)
    y[order] = np.arange(n_shown)[::-1]  # first leaf at the top
    for j, (a, b) in enumerate(children):
        y[L + j] = 0.5 * (y[a] + y[b])

    leaves_of_cells, used_key = _leaf_assignments(model, adata, cluster_key, leaf_names)
    counts = pd.Series(leaves_of_cells).value_counts().reindex(leaf_names, fill_value=0)
    markers = rank_marker_genes(
        adata, leaves_of_cells, n_genes, layer, rank_method, model, gene_symbols
    )

    if figsize is None:
        figsize = (8.0, 1.2 + 0.45 * n_shown)
    owns_figure = ax is None
    fig, ax = new_axes(ax, figsize)
    # colours of the clusters in scanpy plots, if the leaves were read from adata.obs
    palette = cluster_palette(adata if used_key else None, used_key or "", leaf_names)
    wmax = max(float(weights.max()), 1e-12)
    for j, (a, b) in enumerate(children):
        node = L + j
        for c in (a, b):
            ax.plot([h[c], h[node]], [y[c], y[c]], color="black", lw=1.2)
        ax.plot([h[node], h[node]], [y[a], y[b]], color="black", lw=1.2)
        n_below = int(counts.iloc[below[node]].sum())
        ax.scatter(h[node], y[node], s=20 + 280 * weights[node] / wmax, color="grey",
                   edgecolor="black", zorder=3)
        ax.annotate(f"{names[node]} (n={n_below})", (h[node], y[node]), xytext=(3, 4),
                    textcoords="offset points", fontsize=7, color="dimgrey")
    for leaf in order:
        ax.scatter(h[leaf], y[leaf], s=20 + 280 * weights[leaf] / wmax,
                   color=palette[leaf_names[leaf]], edgecolor="black", zorder=3)
    ticks = []
    for leaf in order:
        name = leaf_names[leaf]
        label = f"{name}  n={int(counts[name])}"
        if markers.get(name):
            label += "  " + ", ".join(markers[name])
        ticks.append(label)
    ax.set_yticks(y[order])
    ax.set_yticklabels(ticks, fontsize=8)
    ax.yaxis.tick_right()
    ax.tick_params(axis="y", length=0, pad=8)
    ax.set_ylim(-0.7, n_shown - 0.3)
    ax.invert_xaxis()  # root on the left, leaves (and their labels) on the right
    ax.set_xlabel(
        "distance between the merged means (latent)" if height == "distance" else "merge steps"
    )
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if title is None:
        title = (f"hierarchical mixture: {n_shown} leaves, "
                 f"{int(counts.iloc[order].gt(0).sum())} with cells")
        if n_genes > 0 and markers:
            title += f" (top {n_genes} marker genes)"
    ax.set_title(title, fontsize=10)
    shown = save_or_show(fig, save, show, owns_figure=owns_figure)
    return None if shown else ax
