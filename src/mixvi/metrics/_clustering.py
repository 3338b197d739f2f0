"""Agreement between a clustering and reference labels (ARI / NMI)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ._utils import as_labels, keep_mask


def cluster_agreement(pred: Any, truth: Any, exclude: Iterable[Any] = ()) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information of a clustering.

    Parameters
    ----------
    pred
        Cluster assignments, shape (n_cells,) (e.g. ``adata.obs["mixvi_cluster"]``).
    truth
        Reference labels, shape (n_cells,).
    exclude
        Reference labels whose cells are dropped before scoring (e.g. ``"Mis"``).

    Returns
    -------
    dict
        ``ari`` (adjusted for chance, 1 = identical partitions, ~0 = random), ``nmi``
        (arithmetic normalisation, as scib) and ``n_scored``.
    """
    truth = np.asarray(truth)
    pred = as_labels(pred, truth.shape[0], "pred")
    truth = as_labels(truth, truth.shape[0], "truth")
    keep = keep_mask(truth, exclude)
    # String labels: categorical clusters and integer clusters compare alike.
    p, t = pred[keep].astype(str), truth[keep].astype(str)
    return {
        "ari": float(adjusted_rand_score(t, p)),
        "nmi": float(normalized_mutual_info_score(t, p, average_method="arithmetic")),
        "n_scored": int(keep.sum()),
    }


def cluster_calibration(
    confidence: Any,
    clusters: Any,
    truth: Any,
    n_bins: int = 10,
    exclude: Iterable[Any] = (),
) -> dict[str, Any]:
    """Does a cluster confidence mean what it says? Reliability of cluster probabilities.

    A cell is *right* when its reference label is the majority label of its cluster. Cells
    are binned by confidence; in a calibrated clustering the fraction of right cells in a
    bin equals the bin's mean confidence.

    Parameters
    ----------
    confidence
        Probability of each cell's cluster, shape (n_cells,) (e.g.
        ``adata.obs["mixvi_cluster_confidence"]``).
    clusters
        Cluster of each cell, shape (n_cells,).
    truth
        Reference labels, shape (n_cells,).
    n_bins
        Equal-width confidence bins on [0, 1].
    exclude
        Reference labels whose cells are dropped first (e.g. ``"Mis"``).

    Returns
    -------
    dict
        ``ece`` (expected calibration error: the cell-weighted mean of
        ``|accuracy - confidence|`` over bins; 0 is perfect), ``mean_confidence``,
        ``accuracy`` (fraction of right cells: the purity of the clustering) and ``bins``
        (a DataFrame with ``mean_confidence``, ``accuracy``, ``n_cells`` per non-empty bin).
    """
    import pandas as pd

    truth = np.asarray(truth)
    conf = np.asarray(confidence, dtype=float)
    clusters = as_labels(clusters, truth.shape[0], "clusters").astype(str)
    truth = as_labels(truth, truth.shape[0], "truth").astype(str)
    if conf.shape != truth.shape:
        raise ValueError(f"confidence must have shape {truth.shape}, got {conf.shape}.")
    keep = keep_mask(truth, exclude)
    conf, clusters, truth = conf[keep], clusters[keep], truth[keep]
    majority = pd.crosstab(clusters, truth).idxmax(axis=1)
    right = truth == majority.reindex(clusters).to_numpy()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = which == b
        if m.any():
            rows.append({"mean_confidence": conf[m].mean(), "accuracy": right[m].mean(),
                         "n_cells": int(m.sum())})
    bins = pd.DataFrame(rows)
    ece = float((bins["n_cells"] * (bins["accuracy"] - bins["mean_confidence"]).abs()).sum()
                / max(len(conf), 1))
    return {"ece": ece, "mean_confidence": float(conf.mean()), "accuracy": float(right.mean()),
            "bins": bins}
