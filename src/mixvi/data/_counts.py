"""Checks that a matrix holds raw counts, and finding all-zero cells and features."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from . import _matrix
from ._matrix import _dtype_of, _row_chunks, _value_chunks, get_matrix
from ._messages import _preview, _where

# Sparse indices counted at once (np.bincount makes an int64 copy of its input: 32 MB).
_BINCOUNT_CHUNK = 2**22


# Largest value a log-normalised matrix is expected to hold (log1p of 1e4-scaled data).
_LOGNORM_MAX = 20.0


def validate_counts(
    adata: AnnData,
    layer: str | None = None,
    *,
    modality: str = "RNA",
    allow_non_integer: bool = False,
) -> None:
    """Check that a matrix holds raw counts: numeric, finite, non-negative, integer-valued.

    Sparse matrices are checked through their stored values (``.data``) only;
    dense and backed (on-disk) matrices are scanned in row chunks, so the check
    never densifies or loads a whole backed matrix.

    Parameters
    ----------
    adata
        The AnnData object (in memory or backed).
    layer
        Layer holding the counts, or ``None`` for ``adata.X``.
    modality
        Name of the modality used in messages (``"RNA"``, ``"ATAC"``, ...).
    allow_non_integer
        Skip the integer check (still rejects NaN, inf and negative values).

    Raises
    ------
    KeyError
        If ``layer`` does not exist.
    ValueError
        If the matrix is not numeric, holds NaN / inf / negative values, or holds
        non-integer values (the message then points to ``layer="counts"``).
    """
    X = get_matrix(adata, layer)
    where = _where(layer)
    dtype = _dtype_of(X)
    if dtype == np.bool_:
        return
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(
            f"The {modality} matrix ({where}) has dtype {dtype}, which is not numeric; mixvi "
            f"models expect raw counts. Convert it, e.g. {where} = {where}.astype('float32'), "
            "or point the model to the layer with the raw counts (layer='counts')."
        )
    is_float = np.issubdtype(dtype, np.floating)

    n_nan = n_inf = n_neg = n_frac = 0
    vmin, vmax = np.inf, -np.inf
    frac_example: float | None = None
    for chunk in _value_chunks(X):
        chunk = np.asarray(chunk)
        if chunk.size == 0:
            continue
        if is_float:
            finite = np.isfinite(chunk)
            if not finite.all():
                n_nan += int(np.isnan(chunk).sum())
                n_inf += int(np.isinf(chunk).sum())
                vals = chunk[finite]
            else:
                vals = chunk
        else:
            vals = chunk
        if vals.size == 0:
            continue
        cmin, cmax = vals.min(), vals.max()
        vmin, vmax = min(vmin, float(cmin)), max(vmax, float(cmax))
        if cmin < 0:
            n_neg += int((vals < 0).sum())
        if is_float and not allow_non_integer:
            frac = vals != np.floor(vals)
            if frac.any():
                n_frac += int(frac.sum())
                if frac_example is None:
                    frac_example = float(vals.flat[int(np.argmax(frac))])

    shape = f"{X.shape[0]} x {X.shape[1]}" if len(X.shape) > 1 else str(X.shape)
    layers_txt = _preview(adata.layers.keys(), 20) if len(adata.layers) else "none"
    if layer is None:
        fix_layer = (
            " If the raw counts are stored elsewhere, pass layer='counts' "
            "(adata.layers['counts']) when setting up the model; available layers: "
            f"{layers_txt}."
        )
    else:
        fix_layer = (
            f" Pass the layer that holds the raw counts when setting up the model "
            f"(layer=None for adata.X); available layers: {layers_txt}."
        )
    if n_nan or n_inf:
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN")
        if n_inf:
            parts.append(f"{n_inf} infinite (inf)")
        raise ValueError(
            f"The {modality} matrix ({where}, {shape}) contains {' and '.join(parts)} value(s); "
            "mixvi models expect raw counts, which are always finite. Check how the matrix was "
            "built (e.g. a division by a zero library size) and replace or drop the bad values, "
            f"or use the raw counts.{fix_layer}"
        )
    if n_neg:
        looks = ""
        if is_float and n_frac:
            looks = (
                " The matrix holds negative and fractional values, so it looks scaled or "
                "centred (e.g. sc.pp.scale output), not raw counts."
            )
        raise ValueError(
            f"The {modality} matrix ({where}, {shape}) contains {n_neg} negative value(s) "
            f"(min {vmin:g}); counts cannot be negative and mixvi models expect raw counts.{looks}"
            f"{fix_layer}"
        )
    if n_frac:
        looks = ""
        if vmax < _LOGNORM_MAX:
            looks = (
                f" The values are fractional with max {vmax:g} < {_LOGNORM_MAX:g}, so the matrix "
                "looks log-normalised (sc.pp.normalize_total + sc.pp.log1p), not raw counts."
            )
        else:
            looks = " The matrix looks normalised (e.g. sc.pp.normalize_total), not raw counts."
        raise ValueError(
            f"The {modality} matrix ({where}, {shape}) contains {n_frac} non-integer value(s) "
            f"(e.g. {frac_example:g}); the model expects raw counts.{looks}{fix_layer} "
            "Keep a copy of the counts before normalising with adata.layers['counts'] = "
            "adata.X.copy(). If the values are meant to be non-integer, pass "
            "allow_non_integer=True."
        )


def _chunked_bincount(idx: np.ndarray, n: int) -> np.ndarray:
    """``np.bincount(idx, minlength=n)`` in chunks: bincount copies its input to int64, which
    for the indices of a large sparse matrix would be 8 bytes per stored value at once."""
    out = np.zeros(n, dtype=np.int64)
    for start in range(0, idx.shape[0], _BINCOUNT_CHUNK):
        out += np.bincount(idx[start : start + _BINCOUNT_CHUNK], minlength=n)[:n]
    return out


def _explicit_zeros(data: np.ndarray) -> np.ndarray:
    """Positions of stored zeros in ``data`` (usually none), found chunk by chunk."""
    found = [
        np.flatnonzero(data[start : start + _matrix._DATA_CHUNK] == 0) + start
        for start in range(0, data.shape[0], _matrix._DATA_CHUNK)
    ]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _nonzero_counts(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Number of non-zero entries per row and per column of ``X``, without densifying.

    Sparse matrices are read through their index arrays in chunks, so the temporaries stay
    bounded (a few tens of MB) whatever the number of stored values.
    """
    n_rows, n_cols = X.shape
    if sp.issparse(X):
        fmt = X.format
        if fmt not in {"csr", "csc", "coo"}:
            X = X.tocsr()
            fmt = "csr"
        data = np.asarray(X.data)
        zeros = _explicit_zeros(data)
        if fmt == "coo":
            rows = _chunked_bincount(X.row, n_rows)
            cols = _chunked_bincount(X.col, n_cols)
            if zeros.size:
                rows -= np.bincount(X.row[zeros], minlength=n_rows)[:n_rows]
                cols -= np.bincount(X.col[zeros], minlength=n_cols)[:n_cols]
            return rows, cols
        indptr = np.asarray(X.indptr)
        n_major, n_minor = (n_rows, n_cols) if fmt == "csr" else (n_cols, n_rows)
        major = np.diff(indptr).astype(np.int64)
        minor = _chunked_bincount(X.indices, n_minor)
        if zeros.size:
            owner = np.searchsorted(indptr, zeros, side="right") - 1
            major -= np.bincount(owner, minlength=n_major)[:n_major]
            minor -= np.bincount(X.indices[zeros], minlength=n_minor)[:n_minor]
        return (major, minor) if fmt == "csr" else (minor, major)
    row = np.zeros(n_rows, dtype=np.int64)
    col = np.zeros(n_cols, dtype=np.int64)
    start = 0
    for chunk in _row_chunks(X):
        stop = start + chunk.shape[0]
        if sp.issparse(chunk):
            r, c = _nonzero_counts(chunk)
        else:
            nzc = chunk != 0
            r, c = nzc.sum(axis=1), nzc.sum(axis=0)
        row[start:stop] = np.asarray(r).ravel()
        col += np.asarray(c).ravel()
        start = stop
    return row, col


def nonzero_counts(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Number of non-zero entries in every row and every column of a matrix.

    Sparse matrices are read through their index arrays in chunks and dense or backed
    matrices in row chunks, so no copy of the matrix is made (temporaries stay under
    ~60 MB). Stored zeros are not counted.

    Parameters
    ----------
    X
        numpy array, scipy sparse matrix, or a backed (on-disk) matrix.

    Returns
    -------
    per_row, per_column
        Integer arrays of length ``X.shape[0]`` and ``X.shape[1]``.
    """
    return _nonzero_counts(X)


def check_empty(
    adata: AnnData,
    layer: str | None = None,
    *,
    modality: str = "RNA",
    warn: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Find cells and features whose counts are all zero, and warn about them.

    All-zero cells have a library size of zero (a problem for count likelihoods
    and size factors); all-zero features carry no information.

    Parameters
    ----------
    adata
        The AnnData object (in memory or backed).
    layer
        Layer holding the counts, or ``None`` for ``adata.X``.
    modality
        Name of the modality used in the warning.
    warn
        Emit a :class:`UserWarning` when empty cells or features are found.

    Returns
    -------
    empty_cells, empty_features
        Boolean masks of length ``n_obs`` and ``n_vars``.
    """
    X = get_matrix(adata, layer)
    row, col = _nonzero_counts(X)
    empty_cells = np.asarray(row == 0).ravel()
    empty_features = np.asarray(col == 0).ravel()
    n_c, n_f = int(empty_cells.sum()), int(empty_features.sum())
    if warn and (n_c or n_f):
        parts = []
        if n_c:
            parts.append(f"{n_c} of {adata.n_obs} cells have no {modality} counts")
        if n_f:
            parts.append(f"{n_f} of {adata.n_vars} features are zero in every cell")
        where = _where(layer)
        how = []
        if layer is None:
            if n_c:
                how.append("sc.pp.filter_cells(adata, min_counts=1)")
            if n_f:
                how.append("sc.pp.filter_genes(adata, min_counts=1)")
        layer_arg = "" if layer is None else f", layer={layer!r}"
        how.append(f"adata = mixvi.data.drop_empty(adata{layer_arg})")
        warnings.warn(
            f"{' and '.join(parts)} ({where}). Drop them before training with "
            + " / ".join(how)
            + ".",
            UserWarning,
            stacklevel=2,
        )
    return empty_cells, empty_features


def drop_empty(adata: AnnData, layer: str | None = None) -> AnnData:
    """Return a copy of ``adata`` without all-zero cells and all-zero features.

    A single pass is exact: removing all-zero cells does not change any feature's
    counts, and removing all-zero features does not change any cell's counts.

    Parameters
    ----------
    adata
        The AnnData object (in memory or backed; a backed object is loaded into memory
        after subsetting).
    layer
        Layer holding the counts, or ``None`` for ``adata.X``.

    Returns
    -------
    A new in-memory AnnData; ``adata`` itself is not modified.
    """
    empty_cells, empty_features = check_empty(adata, layer, warn=False)
    sub = adata[~empty_cells, ~empty_features]
    if adata.isbacked:
        return sub.to_memory()
    return sub.copy()
