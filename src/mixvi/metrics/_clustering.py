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
