"""Graph connectivity (scIB batch-correction metric), scipy only."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ._utils import as_embedding, as_labels, knn


def graph_connectivity(emb: np.ndarray, labels: Any, n_neighbors: int = 15) -> float:
    """Mean over labels of the fraction of a label's cells in its largest kNN component.

    As scib-metrics: the directed kNN graph (k neighbours per cell, self included) is
    restricted to the cells of each label, and the largest *strongly* connected component
    is used. 1 = every label forms one connected piece (batches of a cell type are
    linked); low = a label is split, typically by batch. Because components must be
    *strongly* connected, a cell that no other cell of its label lists as a neighbour is a
    component of its own, so scores sit slightly below those of the original scib, which
    used the symmetrised (weakly connected) graph.

    Parameters
    ----------
    emb
        Embedding, shape (n_cells, d).
    labels
        Cell-type labels, shape (n_cells,).
    n_neighbors
        Neighbours per cell including itself (scib-metrics: 15), clipped to n_cells.

    Returns
    -------
    float
        In (0, 1]; higher is better.
    """
    emb = as_embedding(emb, "emb")
    labels = as_labels(labels, emb.shape[0])
    _, idx = knn(emb, n_neighbors)
    return _graph_connectivity_from_knn(idx, labels)


def _graph_connectivity_from_knn(idx: np.ndarray, labels: np.ndarray) -> float:
    n, k = idx.shape
    # Unit weights rather than distances: a zero distance (duplicate cells) must stay an edge.
    graph = sp.csr_matrix((np.ones(n * k), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    labels = np.asarray(labels).astype(str)
    fractions = []
    for lab in np.unique(labels):
        mask = labels == lab
        sub = graph[mask][:, mask]
        _, comp = connected_components(sub, directed=True, connection="strong")
        fractions.append(np.bincount(comp).max() / mask.sum())
    return float(np.mean(fractions))
