"""Cross-modal alignment of paired embeddings: FOSCTTM and matching accuracy.

Both metrics need, for every cell, the *rank* of its true partner among all cells of the
other modality. The full (n, n) distance matrix is never built: distances are computed in
row chunks and only the per-cell count of strictly closer cells is kept.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.spatial.distance import cdist

from ._utils import as_embedding, chunk_size_for, iter_row_chunks


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = as_embedding(x, "x")
    y = as_embedding(y, "y")
    if x.shape != y.shape:
        raise ValueError(
            f"`x` and `y` must hold the same cells (row i paired) in spaces of the same "
            f"dimension; got shapes {x.shape} and {y.shape}."
        )
    if x.shape[0] < 2:
        raise ValueError("At least 2 paired cells are needed.")
    return x, y


def _n_closer(query: np.ndarray, target: np.ndarray, chunk_size: int | None) -> np.ndarray:
    """For each i, count cells j != i with ||query_i - target_j|| < ||query_i - target_i||.

    The true distance is read from the same ``cdist`` block as the others so that ties are
    exact (a duplicate of the partner is *not* counted as closer: ties favour the match).
    """
    n = query.shape[0]
    counts = np.empty(n, dtype=np.int64)
    for rows in iter_row_chunks(n, chunk_size_for(n, chunk_size)):
        d = cdist(query[rows], target)  # (chunk, n), exact euclidean, no cancellation
        local = np.arange(rows.stop - rows.start)
        true_d = d[local, rows.start + local]
        # The partner itself is never strictly closer than itself, so no masking needed.
        counts[rows] = np.sum(d < true_d[:, None], axis=1)
    return counts


def foscttm_per_cell(
    x: np.ndarray, y: np.ndarray, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell FOSCTTM in both directions.

    Parameters
    ----------
    x
        Embedding of the cells in modality 1, shape (n_cells, d).
    y
        Embedding of the same cells in modality 2, shape (n_cells, d); row i of ``y`` is
        the partner of row i of ``x``.
    chunk_size
        Rows of the distance matrix computed at once (default: about 64 MiB per block).

    Returns
    -------
    fx, fy
        Arrays of shape (n_cells,). ``fx[i]`` is the fraction of the other n-1 cells of
        ``y`` that are strictly closer (euclidean) to ``x[i]`` than its partner ``y[i]``;
        ``fy[i]`` is the same with the roles of ``x`` and ``y`` swapped. 0 is a perfect
        match, 0.5 is chance.
    """
    x, y = _check_pair(x, y)
    n = x.shape[0]
    fx = _n_closer(x, y, chunk_size) / (n - 1)
    fy = _n_closer(y, x, chunk_size) / (n - 1)
    return fx, fy


def foscttm(x: np.ndarray, y: np.ndarray, chunk_size: int | None = None) -> float:
    """Fraction Of Samples Closer Than the True Match, averaged over both directions.

    Parameters
    ----------
    x
        Embedding of the cells in modality 1, shape (n_cells, d).
    y
        Embedding of the same cells in modality 2, shape (n_cells, d), row i paired with
        row i of ``x``.
    chunk_size
        Rows of the distance matrix computed at once (default: about 64 MiB per block),
        so 20k+ cells never materialise an (n, n) matrix.

    Returns
    -------
    float
        Mean of :func:`foscttm_per_cell` over cells and over the directions x->y and y->x.
        In [0, 1]; 0 = every cell's partner is its nearest cross-modal neighbour, 0.5 =
        chance. Lower is better.
    """
    fx, fy = foscttm_per_cell(x, y, chunk_size=chunk_size)
    return float((fx.mean() + fy.mean()) / 2)


def matching_accuracy(
    x: np.ndarray,
    y: np.ndarray,
    k: int | Iterable[int] = (1, 10),
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Fraction of cells whose true partner is among their k nearest cross-modal neighbours.

    Parameters
    ----------
    x
        Embedding of the cells in modality 1, shape (n_cells, d).
    y
        Embedding of the same cells in modality 2, shape (n_cells, d), row i paired.
    k
        One or several neighbourhood sizes.
    chunk_size
        Rows of the distance matrix computed at once (default: about 64 MiB per block).

    Returns
    -------
    dict[int, float]
        ``{k: accuracy}``, each averaged over the directions x->y and y->x. Chance level
        is k / n_cells. Ties are resolved in favour of the true partner (a cell at exactly
        the partner's distance does not push it out of the top k).
    """
    ks = [int(k)] if np.isscalar(k) else [int(v) for v in k]
    if any(v < 1 for v in ks):
        raise ValueError("`k` values must be >= 1.")
    x, y = _check_pair(x, y)
    # Rank of the partner = number of strictly closer cells; it is in the top k iff rank < k.
    rx = _n_closer(x, y, chunk_size)
    ry = _n_closer(y, x, chunk_size)
    return {v: float(((rx < v).mean() + (ry < v).mean()) / 2) for v in ks}
