"""Small shared helpers for :mod:`mixvi.metrics` (input checks, chunking, exact kNN)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

# Row chunks are sized so one chunk holds about this many float64 entries (~64 MiB):
# large enough to amortise Python overhead, small enough for a laptop with 20k+ cells.
_CHUNK_ENTRIES = 2**23


def as_embedding(x: Any, name: str = "x") -> np.ndarray:
    """Return ``x`` as a 2-D float64 array of shape (n_cells, d)."""
    if sp.issparse(x):
        x = x.toarray()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (n_cells, n_dims), got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return arr


def as_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """Return a 1-D label array of length ``n`` (pandas Series / Categorical accepted)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"`{name}` must be 1-D of length {n}, got shape {arr.shape}.")
    return arr


def keep_mask(truth: np.ndarray, exclude: Iterable[Any]) -> np.ndarray:
    """Boolean mask of cells whose true label is not in ``exclude`` (shape (n_cells,))."""
    exclude = list(exclude)
    if not exclude:
        return np.ones(truth.shape[0], dtype=bool)
    # Compare as strings so categorical / object / str labels all behave alike.
    return ~np.isin(truth.astype(str), np.asarray([str(e) for e in exclude]))


def chunk_size_for(n_cols: int, chunk_size: int | None) -> int:
    """Number of rows per chunk so that a (rows, n_cols) block stays around 64 MiB."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError("`chunk_size` must be >= 1.")
        return int(chunk_size)
    return max(1, _CHUNK_ENTRIES // max(1, n_cols))


def iter_row_chunks(n_rows: int, chunk_size: int) -> Iterator[slice]:
    """Yield consecutive row slices covering ``range(n_rows)``."""
    for start in range(0, n_rows, chunk_size):
        yield slice(start, min(start + chunk_size, n_rows))


def dense_rows(m: Any, rows: slice) -> np.ndarray:
    """Dense float64 copy of ``m[rows]`` for a dense array, a broadcast view or a sparse matrix."""
    block = m[rows]
    if sp.issparse(block):
        return block.toarray().astype(np.float64, copy=False)
    return np.asarray(block, dtype=np.float64)


def matrix_shape(m: Any, name: str) -> tuple[int, int]:
    """Shape of a 2-D dense or sparse matrix, with a clear error otherwise."""
    shape = getattr(m, "shape", None)
    if shape is None:
        m = np.asarray(m)
        shape = m.shape
    if len(shape) != 2:
        raise ValueError(f"`{name}` must be 2-D (n_cells, n_features), got shape {shape}.")
    return int(shape[0]), int(shape[1])


def row_indexable(m: Any) -> Any:
    """Return ``m`` in a form that supports cheap row slicing (CSR for sparse input)."""
    if sp.issparse(m):
        return sp.csr_matrix(m) if m.format != "csr" else m
    if isinstance(m, np.ndarray):
        return m
    return np.asarray(m)


def knn(emb: np.ndarray, n_neighbors: int, n_jobs: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact euclidean kNN of every cell among all cells, **self included**.

    Used as the neighbour search of scib-metrics' Benchmarker (see :mod:`._scib`), whose
    default pynndescent graph also lists each cell as its own first neighbour.

    Parameters
    ----------
    emb
        Embedding, shape (n_cells, d).
    n_neighbors
        Neighbours per cell including the cell itself (clipped to n_cells).
    n_jobs
        Threads of sklearn's search.

    Returns
    -------
    distances, indices
        Both of shape (n_cells, k) with k = min(n_neighbors, n_cells), sorted by distance.
    """
    k = int(min(n_neighbors, emb.shape[0]))
    nn = NearestNeighbors(n_neighbors=k, n_jobs=n_jobs).fit(emb)
    dist, idx = nn.kneighbors(emb)
    return dist, idx
