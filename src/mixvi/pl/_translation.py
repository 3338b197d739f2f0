"""How good is a translation? Per-gene correlations, per-cell AUROCs and marker genes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from mixvi.pl._utils import save_or_show


def translation(
    rna_predicted: Any,
    rna_observed: Any,
    rna_floor: Any | None = None,
    atac_predicted: Any | None = None,
    atac_observed: Any | None = None,
    atac_floor: Any | None = None,
    adata=None,
    genes: Sequence[str] | None = None,
    basis: str = "umap",
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> list[Axes] | None:
    """Predicted against observed, each beside the mean-profile floor.

    Panels: the per-gene Pearson r of RNA predicted from ATAC (histogram; the floor, a
    constant prediction, has no per-gene r: its line is at 0), the per-cell Pearson r with
    the floor's, the per-cell AUROC of peaks predicted from RNA with the floor's, and, with
    ``adata`` and ``genes``, each marker gene's observed and predicted expression on the
    embedding (side by side, two genes per row below the summary row).

    Parameters
    ----------
    rna_predicted, rna_observed
        Cells x genes (dense or sparse): e.g. ``model.predict_rna_from_atac(test).X`` and
        the test cells' counts; compared after log-normalisation
        (:func:`mixvi.metrics.rna_translation_metrics`).
    rna_floor
        The floor's prediction (:func:`mixvi.metrics.mean_profile_baseline`).
    atac_predicted, atac_observed, atac_floor
        Cells x peaks: P(open) from ``model.predict_atac_from_rna``, the observed peaks and
        the floor's (training peak frequencies).
    adata
        AnnData of the same cells (in that order) with ``.obsm[f"X_{basis}"]`` and the genes
        as ``var_names``, for the marker panels.
    genes
        Marker genes to show.
    basis
        Embedding of the marker panels.
    ax
        Axes to draw into, one per panel (the number of panels is the length).
    show, save
        As in scanpy: ``save`` writes the figure, ``show=False`` returns the axes.

    Returns
    -------
    The list of Axes (``show=False``), else ``None``.
    """
    from mixvi.metrics import atac_translation_metrics, rna_translation_metrics

    genes = list(genes or []) if adata is not None else []
    n_summary = 2 + (atac_predicted is not None)
    n_panels = n_summary + 2 * len(genes)
    owns = ax is None
    if owns:
        # summary panels on the first row; below, two genes per row, each gene's observed
        # and predicted panels side by side (a pair never wraps across rows)
        ncols = max(n_summary, min(2 * len(genes), 4))
        per_row = ncols // 2
        n_gene_rows = int(np.ceil(len(genes) / per_row)) if genes else 0
        fig, grid = plt.subplots(1 + n_gene_rows, ncols, figsize=(4.2 * ncols, 3.6 * (1 + n_gene_rows)),
                                 squeeze=False)
        axes = list(grid[0, :n_summary])
        for gi in range(len(genes)):
            row, col = 1 + gi // per_row, 2 * (gi % per_row)
            axes += [grid[row, col], grid[row, col + 1]]
        for extra in set(grid.ravel()) - set(axes):
            extra.set_visible(False)
    else:
        axes = list(ax)
        if len(axes) < n_panels:
            raise ValueError(f"translation() draws {n_panels} panels; got {len(axes)} axes.")
        fig = axes[0].figure
    model = rna_translation_metrics(rna_predicted, rna_observed, return_values=True)
    gene_r = model["pearson_gene_values"]
    a = axes[0]
    a.hist(gene_r[np.isfinite(gene_r)], bins=40, color="#1f77b4")
    a.axvline(0.0, color="k", ls="--", lw=1, label="mean profile (floor): no per-gene r")
    a.axvline(np.nanmean(gene_r), color="#d62728", lw=1.5, label=f"mean r = {np.nanmean(gene_r):.3f}")
    a.set(xlabel="per-gene Pearson r, RNA from ATAC", ylabel="genes")
    a.legend(fontsize=7, loc="upper right")
    floor = (None if rna_floor is None
             else rna_translation_metrics(rna_floor, rna_observed, return_values=True))
    _model_vs_floor(axes[1], model, floor, "pearson_cell_values",
                    f"model ({model['pearson_cell']:.3f})",
                    None if floor is None else f"mean profile ({floor['pearson_cell']:.3f})",
                    "per-cell Pearson r, RNA from ATAC")
    i = 2
    if atac_predicted is not None:
        peaks = atac_translation_metrics(atac_predicted, atac_observed, per_cell=True)
        fl = (None if atac_floor is None
              else atac_translation_metrics(atac_floor, atac_observed, per_cell=True))
        _model_vs_floor(axes[i], peaks, fl, "auroc_per_cell_values",
                        f"model (AUROC {peaks['auroc']:.3f})",
                        None if fl is None else f"peak frequency ({fl['auroc']:.3f})",
                        "per-cell AUROC, peaks from RNA")
        i += 1
    if adata is not None and genes:
        xy = np.asarray(adata.obsm[f"X_{basis}"])[:, :2]
        idx = adata.var_names.get_indexer(genes)
        missing = [g for g, j in zip(genes, idx, strict=True) if j < 0]
        if missing:
            raise KeyError(f"genes not in adata.var_names: {missing}.")
        def column(matrix, j):
            col = matrix[:, j]
            col = col.toarray() if hasattr(col, "toarray") else np.asarray(col)
            return np.asarray(col).ravel()

        for g, j in zip(genes, idx, strict=True):
            obs = np.log1p(column(rna_observed, j) / np.maximum(_row_sums(rna_observed), 1) * 1e4)
            pred = np.log1p(column(rna_predicted, j) / np.maximum(_row_sums(rna_predicted), 1e-12) * 1e4)
            for values, what in ((obs, "observed"), (pred, "predicted from ATAC")):
                a = axes[i]
                i += 1
                order = np.argsort(values)
                im = a.scatter(xy[order, 0], xy[order, 1], c=values[order], s=3, cmap="viridis",
                               rasterized=True)
                a.set_title(f"{g}: {what}", fontsize=9)
                a.set_xticks([])
                a.set_yticks([])
                fig.colorbar(im, ax=a, shrink=0.7)
    if owns:
        fig.tight_layout()
    shown = save_or_show(fig, save, show, owns_figure=owns)
    return None if shown else axes


def _row_sums(matrix) -> np.ndarray:
    return np.asarray(matrix.sum(1)).ravel()


def _model_vs_floor(a, model: dict, floor: dict | None, key: str, label: str,
                    floor_label: str | None, xlabel: str) -> None:
    """Histogram of a per-cell score of the model, with the floor's beside it in grey."""
    a.hist(model[key], bins=40, alpha=0.7, label=label)
    if floor is not None:
        a.hist(floor[key], bins=40, alpha=0.5, color="grey", label=floor_label)
    a.set(xlabel=xlabel, ylabel="cells")
    a.legend(fontsize=7)
