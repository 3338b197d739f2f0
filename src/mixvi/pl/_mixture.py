"""The mixture drawn on an embedding (UMAP by default)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

if TYPE_CHECKING:
    from mixvi.model import MixVI

from ._utils import as_str_categories, cluster_palette, legend_columns, new_axes, save_or_show


def _embedding(adata: AnnData, basis: str) -> np.ndarray:
    for key in (basis, f"X_{basis}"):
        if key in adata.obsm:
            emb = np.asarray(adata.obsm[key])[:, :2]
            if emb.shape[1] < 2:
                raise ValueError(f"adata.obsm[{key!r}] has fewer than 2 dimensions.")
            return emb
    raise KeyError(
        f"No embedding {basis!r} in adata.obsm (looked for {basis!r} and 'X_{basis}'); "
        "run e.g. sc.pp.neighbors(adata, use_rep='X_mixvi') and sc.tl.umap(adata)."
    )


def _component_names(adata: AnnData, model: Any, probs_key: str | None, clusters) -> list[str]:
    """Every component of the clustering: prob columns, else the model's, else the clusters.

    A candidate list is used only if it contains every observed cluster (so the
    probabilities of another tree level, say, are not mistaken for this one's).
    """
    observed = {str(c) for c in clusters.categories}
    probs = adata.obsm.get(probs_key) if probs_key else None
    if isinstance(probs, pd.DataFrame):
        cols = [str(c) for c in probs.columns]
        if all(c.startswith("prob_") for c in cols):
            names = [c[len("prob_") :] for c in cols]
            if observed <= set(names):
                return names
    if model is not None and not getattr(model, "cluster_levels", []):
        names = [str(n) for n in model.component_names()]
        if observed <= set(names):
            return names
    return [str(c) for c in clusters.categories]


def _model_weights(model: Any, names: list[str]) -> dict[str, float] | None:
    """Mixture weight pi_k of each named component, from ``model.module.prior``."""
    prior = getattr(getattr(model, "module", None), "prior", None)
    if prior is None or not hasattr(prior, "component_params") or not hasattr(model, "component_names"):
        return None
    import torch

    with torch.no_grad():
        log_w = prior.component_params()[0].detach().cpu().numpy()
    index = {n: i for i, n in enumerate(model.component_names())}
    if not all(n in index for n in names):
        return None
    return {n: float(np.exp(log_w[index[n]])) for n in names}


def mixture(
    adata: AnnData,
    model: MixVI | None = None,
    basis: str = "umap",
    cluster_key: str = "mixvi_cluster",
    probs_key: str | None = "mixvi_cluster_probs",
    *,
    size_by: Literal["auto", "weight", "count"] = "auto",
    position: Literal["median", "mean"] = "median",
    point_size: float | None = None,
    max_marker_size: float = 900.0,
    legend: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    figsize: tuple[float, float] = (6.0, 5.0),
) -> Axes | None:
    """The mixture components on an embedding.

    Cells are coloured by their mixture cluster. Each component is drawn at the
    median (or mean) embedding position of its cells as a circle whose area is
    proportional to its mixture weight ``pi_k`` (with ``model``) or to its number of
    cells, and labelled with its name. Components that no cell is assigned to cannot be
    placed on the embedding; they are listed in the title.

    Parameters
    ----------
    adata
        AnnData with ``.obsm[f"X_{basis}"]`` and ``.obs[cluster_key]`` (e.g. after
        ``model.write_to_adata(adata)``, ``sc.pp.neighbors(adata, use_rep="X_mixvi")``
        and ``sc.tl.umap(adata)``). Not modified.
    model
        The trained model; gives the mixture weights ``pi_k``. Optional.
    basis
        Embedding in ``.obsm`` (``"umap"`` reads ``X_umap``).
    cluster_key
        ``.obs`` column with the cluster of each cell.
    probs_key
        ``.obsm`` DataFrame of component probabilities (columns ``prob_<name>``); its
        columns name every component, so the empty ones can be listed. ``None`` or a
        missing key falls back to the model's components, then to the cluster categories.
    size_by
        ``"weight"`` (mixture weight, needs ``model``), ``"count"`` (cells) or
        ``"auto"`` (weight when a model is given).
    position
        Where a component sits: ``"median"`` (robust) or ``"mean"`` of its cells.
    point_size
        Size of the cell dots; default ``120000 / n_cells`` clipped to ``[2, 30]`` as in scanpy.
    max_marker_size
        Marker area (points^2) of the largest component.
    legend
        Draw a legend of clusters with cell counts and weights.
    title
        Axes title; default names the basis and lists the empty components.
    ax
        Axes to draw into.
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        File to write the figure to (``.png`` added when there is no suffix).
    figsize
        Size of a new figure.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes` when ``show`` is ``False``, else ``None``.

    Examples
    --------
    >>> model.write_to_adata(adata)
    >>> sc.pp.neighbors(adata, use_rep="X_mixvi"); sc.tl.umap(adata)
    >>> mixvi.pl.mixture(adata, model)
    """
    if cluster_key not in adata.obs:
        raise KeyError(
            f"adata.obs has no {cluster_key!r}; call model.write_to_adata(adata) first."
        )
    if size_by not in ("auto", "weight", "count"):
        raise ValueError(f"size_by must be 'auto', 'weight' or 'count', got {size_by!r}.")
    if position not in ("median", "mean"):
        raise ValueError(f"position must be 'median' or 'mean', got {position!r}.")
    emb = _embedding(adata, basis)
    clusters = as_str_categories(adata.obs[cluster_key])
    names = _component_names(adata, model, probs_key, clusters)
    assigned = np.asarray(clusters.codes) >= 0  # cells without a cluster are drawn grey
    labels = np.where(assigned, np.asarray(clusters.astype(str)), "")
    counts = pd.Series(labels[assigned]).value_counts().reindex(names, fill_value=0)
    used = [n for n in names if counts[n] > 0]
    empty = [n for n in names if counts[n] == 0]

    weights = _model_weights(model, names) if model is not None else None
    if size_by == "weight" and weights is None:
        raise ValueError("size_by='weight' needs the model whose prior made the clusters.")
    by_weight = size_by == "weight" or (size_by == "auto" and weights is not None)
    size_value = (
        pd.Series(weights) if by_weight else counts.astype(float)
    ).reindex(used).fillna(0.0)

    palette = cluster_palette(adata, cluster_key, names)
    owns_figure = ax is None
    fig, ax = new_axes(ax, figsize)
    if point_size is None:
        point_size = float(np.clip(120000 / max(adata.n_obs, 1), 2, 30))
    order = np.random.default_rng(0).permutation(adata.n_obs)  # no cluster drawn on top
    ax.scatter(
        emb[order, 0],
        emb[order, 1],
        c=[palette.get(x, "lightgrey") for x in labels[order]],
        s=point_size,
        linewidths=0,
        alpha=0.6,
        rasterized=True,
    )
    top = max(float(size_value.max()), 1e-12) if len(size_value) else 1.0
    handles = []
    for name in used:
        pts = emb[labels == name]
        centre = np.median(pts, axis=0) if position == "median" else pts.mean(axis=0)
        area = max(max_marker_size * float(size_value[name]) / top, 30.0)
        ax.scatter(
            *centre,
            s=area,
            facecolor=palette[name],
            edgecolor="black",
            linewidths=1.2,
            alpha=0.85,
            zorder=3,
        )
        ax.annotate(
            name,
            centre,
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold",
            zorder=4,
        )
        extra = f", π={weights[name]:.2f}" if weights is not None else ""
        handles.append(
            Line2D([], [], marker="o", ls="", color=palette[name], mec="black",
                   label=f"{name} (n={counts[name]}{extra})")
        )
    for name in empty:
        extra = f", π={weights[name]:.2f}" if weights is not None else ""
        handles.append(
            Line2D([], [], marker="o", ls="", mfc="none", mec="grey",
                   label=f"{name} (no cells{extra})")
        )
    short = basis.removeprefix("X_")
    if title is None:
        title = f"mixture on {short}: {len(used)} of {len(names)} components used"
        if empty:
            listed = ", ".join(empty[:12]) + (", ..." if len(empty) > 12 else "")
            title += f"\nno cells: {listed}"
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    axis_name = short.upper() if short.lower() in ("umap", "pca", "tsne") else short
    ax.set_xlabel(f"{axis_name}1")
    ax.set_ylabel(f"{axis_name}2")
    if legend and handles:
        size = "weight π" if by_weight else "cell count"
        ax.legend(
            handles=handles,
            title=f"component (marker area ∝ {size})",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=legend_columns(len(handles)),
            frameon=False,
            fontsize="small",
            title_fontsize="small",
        )
    shown = save_or_show(fig, save, show, owns_figure=owns_figure)
    return None if shown else ax
