"""Silhouette-based scIB metrics (label ASW, batch ASW, isolated labels), numpy/sklearn only.

Formulas follow scib-metrics 0.5 (``silhouette_label``, ``silhouette_batch``,
``isolated_labels``) with euclidean distances; sklearn's ``silhouette_samples`` (chunked
internally) replaces the jax kernel. Results agree with scib-metrics to float precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import silhouette_samples

from ._utils import as_embedding, as_labels


def _silhouette_samples(emb: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per-cell silhouette, shape (n_cells,); 0 for singleton groups, as sklearn/scib."""
    codes = np.unique(groups.astype(str), return_inverse=True)[1]
    # scib-metrics turns 0/0 (all points identical) into 0 with nan_to_num; do the same.
    return np.nan_to_num(silhouette_samples(emb, codes, metric="euclidean"))


def silhouette_label(emb: np.ndarray, labels: Any, rescale: bool = True) -> float:
    """Average silhouette width of cell-type labels (bio conservation).

    Parameters
    ----------
    emb
        Embedding, shape (n_cells, d).
    labels
        Cell-type labels, shape (n_cells,); at least 2 distinct labels.
    rescale
        Return (ASW + 1) / 2, in [0, 1], as scib.

    Returns
    -------
    float
        Higher = labels better separated.
    """
    emb = as_embedding(emb, "emb")
    labels = as_labels(labels, emb.shape[0])
    asw = float(np.mean(_silhouette_samples(emb, labels)))
    return (asw + 1) / 2 if rescale else asw


def silhouette_batch(emb: np.ndarray, batch: Any, labels: Any, rescale: bool = True) -> float:
    """Batch ASW within each cell-type label (batch correction), as scib.

    For each label, the silhouette of every cell is computed with *batches* as the
    clusters, using only the cells of that label; the score is ``1 - |s|`` averaged over
    the label's cells, then averaged over labels. Labels present in a single batch (or
    with one cell per batch) are skipped.

    Parameters
    ----------
    emb
        Embedding, shape (n_cells, d).
    batch
        Batch of each cell, shape (n_cells,).
    labels
        Cell-type labels, shape (n_cells,).
    rescale
        If True return ``1 - |s|`` (1 = perfectly mixed); if False the mean of ``|s|``
        (0 = perfectly mixed; this is what scib-metrics returns with ``rescale=False``).

    Returns
    -------
    float
        In [0, 1]; NaN when every label is seen in a single batch.
    """
    emb = as_embedding(emb, "emb")
    batch = as_labels(batch, emb.shape[0], "batch").astype(str)
    labels = as_labels(labels, emb.shape[0]).astype(str)
    per_label = []
    for lab in np.unique(labels):
        mask = labels == lab
        n_b = np.unique(batch[mask]).size
        if n_b == 1 or n_b == mask.sum():
            continue  # silhouette undefined; scib skips these labels too
        s = np.abs(_silhouette_samples(emb[mask], batch[mask]))
        per_label.append(np.mean(1 - s) if rescale else np.mean(s))
    return float(np.mean(per_label)) if per_label else float("nan")


def isolated_labels(emb: np.ndarray, labels: Any, batch: Any, rescale: bool = True) -> float:
    """Isolated-label score, ASW variant (as scib-metrics, not scib's F1 variant).

    Isolated labels are those present in the fewest batches; the score is the mean over
    them of the average (rescaled) label silhouette of their cells.

    Parameters
    ----------
    emb
        Embedding, shape (n_cells, d).
    labels
        Cell-type labels, shape (n_cells,).
    batch
        Batch of each cell, shape (n_cells,).
    rescale
        Map silhouettes to [0, 1] with (s + 1) / 2.

    Returns
    -------
    float
        Higher = rare (batch-specific) cell types stay separated.
    """
    emb = as_embedding(emb, "emb")
    labels = as_labels(labels, emb.shape[0]).astype(str)
    batch = as_labels(batch, emb.shape[0], "batch").astype(str)
    return _isolated_from_samples(_silhouette_samples(emb, labels), labels, batch, rescale)


def _isolated_from_samples(
    sil: np.ndarray, labels: np.ndarray, batch: np.ndarray, rescale: bool = True
) -> float:
    """Isolated-label score from precomputed label silhouettes (shared with the ASW)."""
    if rescale:
        sil = (sil + 1) / 2
    uniq = np.unique(labels)
    n_batches = np.array([np.unique(batch[labels == lab]).size for lab in uniq])
    isolated = uniq[n_batches <= n_batches.min()]
    return float(np.mean([sil[labels == lab].mean() for lab in isolated]))
