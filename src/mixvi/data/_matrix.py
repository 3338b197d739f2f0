"""Reading count matrices in bounded chunks (in memory, sparse or backed) and checking their size."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._messages import ValidationKeyError, _did_you_mean, _preview, _where

# Elements read at once when a dense or backed matrix is scanned in row chunks
# (2**24 float32 values = 64 MiB per chunk).
_CHUNK_ELEMENTS = 2**24


# Elements of a sparse ``.data`` array inspected at once (bounds temporaries to ~60 MB).
_DATA_CHUNK = 2**23


class DenseMatrixTooLargeError(ValueError, MemoryError):
    """A dense matrix is too large for memory.

    Both a :class:`ValueError` and a :class:`MemoryError`, so either can be caught.
    """


def _is_backed_sparse(X: Any) -> bool:
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # pragma: no cover - anndata < 0.10
        return type(X).__name__ in {"_CSRDataset", "_CSCDataset", "SparseDataset"}
    return isinstance(X, (CSRDataset, CSCDataset))


def _is_h5_dataset(X: Any) -> bool:
    try:
        import h5py
    except ImportError:  # pragma: no cover
        return False
    return isinstance(X, h5py.Dataset)


def _is_in_memory_dense(X: Any) -> bool:
    return isinstance(X, np.ndarray)


def _to_numpy_chunk(chunk: Any) -> Any:
    """Turn a row chunk into a numpy array or a scipy sparse matrix."""
    if hasattr(chunk, "compute") and not isinstance(chunk, np.ndarray):  # dask
        chunk = chunk.compute()
    if sp.issparse(chunk):
        return chunk
    return np.asarray(chunk)


def _row_chunks(X: Any, chunk_rows: int | None = None) -> Iterator[Any]:
    """Yield row blocks of ``X`` (numpy / scipy sparse), never the whole dense matrix."""
    n_rows = X.shape[0]
    n_cols = max(int(X.shape[1]) if len(X.shape) > 1 else 1, 1)
    if chunk_rows is None:
        chunk_rows = max(1, _CHUNK_ELEMENTS // n_cols)
    for start in range(0, n_rows, chunk_rows):
        yield _to_numpy_chunk(X[start : min(start + chunk_rows, n_rows)])


def _value_chunks(X: Any) -> Iterator[np.ndarray]:
    """Yield 1-d (or row-block) numpy arrays holding every *stored* value of ``X``.

    Sparse matrices yield slices of their ``.data`` (no densification); backed
    sparse matrices read their on-disk ``data`` array in chunks; dense and backed
    dense matrices are read in row chunks.
    """
    if sp.issparse(X):
        if not hasattr(X, "data") or X.format in {"lil", "dok"}:
            X = X.tocsr()
        data = np.asarray(X.data)
        for start in range(0, data.shape[0], _DATA_CHUNK):
            yield data[start : start + _DATA_CHUNK]
        return
    if _is_backed_sparse(X):
        group = getattr(X, "group", None)
        data = None
        if group is not None:
            try:
                data = group["data"]
            except (KeyError, TypeError):  # pragma: no cover - unusual storage
                data = None
        if data is not None and hasattr(data, "shape"):
            n = data.shape[0]
            for start in range(0, n, _DATA_CHUNK):
                yield np.asarray(data[start : min(start + _DATA_CHUNK, n)])
            return
        for chunk in _row_chunks(X):  # pragma: no cover - fallback
            yield np.asarray(chunk.data) if sp.issparse(chunk) else chunk
        return
    if getattr(X, "ndim", 2) < 2 or X.shape[0] == 0:
        yield _to_numpy_chunk(X)
        return
    for chunk in _row_chunks(X):
        yield np.asarray(chunk.data) if sp.issparse(chunk) else chunk


def _dtype_of(X: Any) -> np.dtype:
    dtype = getattr(X, "dtype", None)
    if dtype is None:  # pragma: no cover
        dtype = np.asarray(X[:1]).dtype
    return np.dtype(dtype)


def check_layer(adata: AnnData, layer: str | None) -> None:
    """Check that ``layer`` is ``None`` (meaning ``adata.X``) or a key of ``adata.layers``.

    Parameters
    ----------
    adata
        The AnnData object.
    layer
        Layer name, or ``None`` for ``adata.X``.

    Raises
    ------
    KeyError
        If the layer does not exist; the message lists the available layers and
        the closest match.
    """
    if layer is None:
        if adata.X is None:
            raise ValueError(
                "adata.X is None, so there is no matrix to use. Pass layer=<name> with one of "
                f"the layers {_preview(adata.layers.keys(), 20)}, or set adata.X to the raw "
                "counts."
            )
        return
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a string or None, got {type(layer).__name__}: {layer!r}.")
    if layer in adata.layers:
        return
    available = list(adata.layers.keys())
    hint = _did_you_mean(layer, available)
    msg = (
        f"layer={layer!r} is not in adata.layers.{hint} Available layers: "
        f"{_preview(available, 20) if available else 'none'}."
    )
    if layer == "counts":
        msg += (
            " If adata.X holds the raw counts, pass layer=None, or store them with "
            "adata.layers['counts'] = adata.X.copy() before normalising."
        )
        if getattr(adata, "raw", None) is not None:
            msg += (
                " If the raw counts are in adata.raw, copy them with "
                "adata.layers['counts'] = adata.raw[:, adata.var_names].X."
            )
    else:
        msg += " Pass layer=None to use adata.X."
    raise ValidationKeyError(msg)


def get_matrix(adata: AnnData, layer: str | None = None) -> Any:
    """Return ``adata.X`` (``layer=None``) or ``adata.layers[layer]``, without copying.

    Parameters
    ----------
    adata
        The AnnData object (in memory or backed).
    layer
        Layer name, or ``None`` for ``adata.X``.

    Returns
    -------
    The matrix as stored: numpy array, scipy sparse matrix, or an on-disk dataset
    for backed objects.

    Raises
    ------
    KeyError
        If ``layer`` is not a layer of ``adata`` (the message lists the available ones).
    """
    check_layer(adata, layer)
    return adata.X if layer is None else adata.layers[layer]


def _available_memory_bytes() -> int | None:
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def check_dense_size(
    adata: AnnData,
    layer: str | None = None,
    max_gb: float | None = None,
) -> float:
    """Refuse a dense matrix too large for memory, and advise a sparse or backed one.

    Only in-memory dense (numpy) matrices are checked; sparse and backed
    matrices always pass.  The size is computed from the shape and dtype, so the
    check itself allocates nothing.

    Parameters
    ----------
    adata
        The AnnData object.
    layer
        Layer to check, or ``None`` for ``adata.X``.
    max_gb
        Limit in GB (10^9 bytes). Default: half the memory available now, so that
        the copies made during setup and training still fit.

    Returns
    -------
    The size of the dense matrix in GB (0 for sparse / backed matrices).

    Raises
    ------
    DenseMatrixTooLargeError
        (a :class:`ValueError` and :class:`MemoryError`) if the matrix exceeds the limit.
    """
    X = get_matrix(adata, layer)
    if sp.issparse(X) or _is_backed_sparse(X) or _is_h5_dataset(X):
        return 0.0
    if getattr(adata, "isbacked", False) and layer is None:
        return 0.0
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2 or not hasattr(X, "dtype"):
        return 0.0
    itemsize = np.dtype(getattr(X, "dtype", np.float32)).itemsize
    nbytes = float(np.prod([int(s) for s in shape], dtype=np.float64)) * itemsize
    gb = nbytes / 1e9
    if max_gb is not None:
        limit_gb, limit_what = float(max_gb), f"the limit max_gb={max_gb:g}"
    else:
        avail = _available_memory_bytes()
        if avail is None:  # pragma: no cover
            return gb
        limit_gb = avail / 2 / 1e9
        limit_what = f"half the memory available now ({avail / 1e9:.1f} GB available)"
    if gb > limit_gb:
        where = _where(layer)
        raise DenseMatrixTooLargeError(
            f"{where} is a dense {shape[0]} x {shape[1]} {np.dtype(X.dtype)} matrix of "
            f"{gb:.3g} GB, more than {limit_what}. Count matrices are mostly "
            f"zeros: store it as sparse CSR, e.g. {where} = scipy.sparse.csr_matrix({where}) "
            "(build it sparse from the start to avoid the dense copy), or open the file in "
            "backed mode with anndata.read_h5ad(path, backed='r')."
        )
    return gb
