"""Early input validation for mixvi models.

Every check raises as soon as the input is known to be wrong, with a message that
names the problem *and* the fix.  The checks are used by the models at
``setup_anndata`` / ``setup_mudata`` / model creation / ``load``, so that a user
sees a clear error instead of a NaN loss or a shape mismatch deep inside torch.

None of the checks densifies a sparse matrix, and matrices that are backed on
disk (``adata.isbacked``) or dense are scanned in row chunks.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

__all__ = [
    "DenseMatrixTooLargeError",
    "ValidationKeyError",
    "check_dense_size",
    "check_empty",
    "check_layer",
    "check_mudata_modalities",
    "check_n_categories",
    "check_n_components",
    "check_obs_key",
    "check_same_cells",
    "check_var_names",
    "drop_empty",
    "get_matrix",
    "nonzero_counts",
    "validate_counts",
]

# Elements read at once when a dense or backed matrix is scanned in row chunks
# (2**24 float32 values = 64 MiB per chunk).
_CHUNK_ELEMENTS = 2**24
# Elements of a sparse ``.data`` array inspected at once (bounds temporaries to ~60 MB).
_DATA_CHUNK = 2**23
# Sparse indices counted at once (np.bincount makes an int64 copy of its input: 32 MB).
_BINCOUNT_CHUNK = 2**22
# Largest value a log-normalised matrix is expected to hold (log1p of 1e4-scaled data).
_LOGNORM_MAX = 20.0


class ValidationKeyError(KeyError):
    """A :class:`KeyError` whose message prints without the extra quotes of ``KeyError``.

    ``str(KeyError("a\\nb"))`` shows the ``repr`` of the message; this subclass
    shows the message itself, so the hint in it stays readable.
    """

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


class DenseMatrixTooLargeError(ValueError, MemoryError):
    """A dense matrix is too large for memory.

    Both a :class:`ValueError` and a :class:`MemoryError`, so either can be caught.
    """


# --------------------------------------------------------------------------- helpers


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def _preview(items: Iterable[Any], n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:n])
    if len(items) > n:
        shown += f", ... ({len(items)} in all)"
    return f"[{shown}]"


def _suggest(key: str, options: Sequence[str]) -> str | None:
    """Closest match of ``key`` among ``options`` (case-insensitive first), or None."""
    options = [str(o) for o in options]
    lower = {o.lower(): o for o in options}
    if str(key).lower() in lower:
        return lower[str(key).lower()]
    close = difflib.get_close_matches(str(key), options, n=1, cutoff=0.6)
    if close:
        return close[0]
    close = difflib.get_close_matches(str(key).lower(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def _eg(items: Sequence[Any]) -> str:
    return f" (e.g. {_preview(items, 3)})" if len(items) else ""


def _did_you_mean(key: str, options: Sequence[str]) -> str:
    best = _suggest(key, options)
    return f" Did you mean {best!r}?" if best is not None else ""


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


# --------------------------------------------------------------------------- keys / layers


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


def check_obs_key(adata: AnnData, key: str | None, role: str = "batch_key") -> None:
    """Check that ``key`` is a column of ``adata.obs``.

    Parameters
    ----------
    adata
        The AnnData (or MuData) object.
    key
        Column name; ``None`` passes (the argument is optional).
    role
        Name of the argument the key was passed as (``"batch_key"``, ``"labels_key"``,
        ...), used in the message.

    Raises
    ------
    KeyError
        If the column does not exist; the message lists the available columns and
        suggests the closest one ("Did you mean 'batch'?").
    """
    if key is None:
        return
    columns = [str(c) for c in adata.obs.columns]
    if key in adata.obs.columns:
        return
    hint = _did_you_mean(key, columns)
    raise ValidationKeyError(
        f"{role}={key!r} is not a column of adata.obs.{hint} Available columns: "
        f"{_preview(columns, 30) if columns else 'none'}. Pass {role}=<one of these> "
        f"(or {role}=None), or add the column to adata.obs first."
    )


def check_n_categories(
    adata: AnnData,
    key: str,
    role: str = "labels_key",
    min_categories: int = 2,
    *,
    unlabeled_category: str | None = None,
    allow_nan: bool = False,
) -> int:
    """Check that ``adata.obs[key]`` has no missing values and enough categories.

    Parameters
    ----------
    adata
        The AnnData (or MuData) object.
    key
        Column of ``adata.obs``.
    role
        Argument name the key was passed as, used in the message.
    min_categories
        Fewest distinct (observed) values needed.
    unlabeled_category
        A value that marks unlabelled cells (semi-supervised label prior); it is not
        counted as a category.
    allow_nan
        Accept missing values (they are not counted as a category).

    Returns
    -------
    The number of distinct observed values (excluding ``unlabeled_category``).

    Raises
    ------
    KeyError
        If ``key`` is not a column of ``adata.obs``.
    ValueError
        If the column holds NaN values (unless ``allow_nan``) or has fewer than
        ``min_categories`` distinct values.
    """
    check_obs_key(adata, key, role)
    col = adata.obs[key]
    n_nan = int(col.isna().sum())
    if n_nan and not allow_nan:
        fill = unlabeled_category if unlabeled_category is not None else "unknown"
        raise ValueError(
            f"{role}={key!r}: adata.obs[{key!r}] has {n_nan} missing (NaN) value(s) out of "
            f"{len(col)}. Fill them with an explicit category, e.g. "
            f"adata.obs[{key!r}] = adata.obs[{key!r}].astype(object).fillna({fill!r})"
            f".astype('category'), or drop those cells with "
            f"adata = adata[adata.obs[{key!r}].notna()].copy()."
        )
    values = pd.unique(col.dropna().astype(object))
    if unlabeled_category is not None:
        values = [v for v in values if v != unlabeled_category]
    n = len(values)
    if n < min_categories:
        found = f"only {n} categor{'y' if n == 1 else 'ies'}"
        if n:
            found += f" ({_preview(values)})"
        extra = ""
        if unlabeled_category is not None:
            extra = f" besides the unlabelled category {unlabeled_category!r}"
        noun = {"batch_key": "batch", "labels_key": "label"}.get(role, "category")
        raise ValueError(
            f"{role}={key!r}: adata.obs[{key!r}] has {found}{extra}, but at least "
            f"{min_categories} are needed. Pick another column, or pass {role}=None if the "
            f"data has a single {noun}."
        )
    return n


# --------------------------------------------------------------------------- counts


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


# --------------------------------------------------------------------------- empty cells/features


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
        np.flatnonzero(data[start : start + _DATA_CHUNK] == 0) + start
        for start in range(0, data.shape[0], _DATA_CHUNK)
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


# --------------------------------------------------------------------------- multi-modal


def check_same_cells(a: AnnData, b: AnnData, names: tuple[str, str] = ("rna", "atac")) -> None:
    """Check that two modalities hold the same cells in the same order.

    Parameters
    ----------
    a, b
        The two AnnData objects (e.g. ``mdata["rna"]`` and ``mdata["atac"]``).
    names
        Names of the two modalities, used in the message.

    Raises
    ------
    ValueError
        If obs names are duplicated, if the cells differ (the message says how many
        are missing on each side), or if they are the same cells in another order
        (the message suggests ``b = b[a.obs_names]``).
    """
    na, nb = names
    for obj, name in ((a, na), (b, nb)):
        if not obj.obs_names.is_unique:
            dup = obj.obs_names[obj.obs_names.duplicated()].unique()
            raise ValueError(
                f"{name} has {len(dup)} duplicated cell name(s) ({_preview(dup)}); cells are "
                f"matched across modalities by name. Make them unique with "
                f"{name}.obs_names_make_unique() (in both modalities, consistently)."
            )
    ia, ib = a.obs_names, b.obs_names
    if ia.equals(ib):
        return
    only_a = ia.difference(ib, sort=False)
    only_b = ib.difference(ia, sort=False)
    if len(only_a) or len(only_b):
        n_common = len(ia) - len(only_a)
        raise ValueError(
            f"The modalities hold different cells: {len(only_a)} of {len(ia)} {na} cells are "
            f"missing from {nb}{_eg(only_a)}, and {len(only_b)} of {len(ib)} "
            f"{nb} cells are missing from {na}{_eg(only_b)}; {n_common} are "
            f"shared. Keep the shared cells in the same order with "
            f"common = {na}.obs_names.intersection({nb}.obs_names); {na} = {na}[common]; "
            f"{nb} = {nb}[common] (or mudata.MuData.intersect_obs())."
        )
    n_moved = int((ia != ib).sum())
    raise ValueError(
        f"{na} and {nb} hold the same {len(ia)} cells but in a different order "
        f"({n_moved} positions differ). Reorder {nb} to match {na} with "
        f"{nb} = {nb}[{na}.obs_names].copy()."
    )


def check_mudata_modalities(mdata: Any, modalities: Mapping[str, str | None]) -> None:
    """Check that a MuData holds the named modalities.

    Parameters
    ----------
    mdata
        The MuData object.
    modalities
        Maps the role of each modality to its name in ``mdata.mod``, e.g.
        ``{"rna": "rna", "atac": "atac"}`` or ``{"rna_layer": "rna", "batch_key": "rna"}``.
        ``None`` values are skipped.

    Raises
    ------
    TypeError
        If ``mdata`` is not a MuData (no ``.mod``).
    KeyError
        If a named modality is missing; the message lists ``mdata.mod`` keys, the
        closest match, and how to pass other names.
    """
    if not hasattr(mdata, "mod"):
        raise TypeError(
            f"Expected a MuData object, got {type(mdata).__name__}. Build one with "
            "mudata.MuData({'rna': rna_adata, 'atac': atac_adata}), or use a single-modality "
            "model (mixvi.MixVI) for an AnnData."
        )
    available = list(mdata.mod.keys())
    missing = {
        role: name
        for role, name in modalities.items()
        if name is not None and name not in mdata.mod
    }
    if not missing:
        return
    lines = []
    for role, name in missing.items():
        lines.append(f"{role} -> {name!r}{_did_you_mean(name, available)}")
    example = {
        role: (_suggest(name, available) or "<name>") if role in missing else name
        for role, name in modalities.items()
    }
    rebuild = ", ".join(
        f"{n!r}: mdata[{(_suggest(n, available) or '<name>')!r}]" for n in missing.values()
    )
    raise ValidationKeyError(
        f"The MuData has no modality {', '.join(repr(n) for n in missing.values())} "
        f"({'; '.join(lines)}). Available modalities (mdata.mod): {_preview(available, 20)}. "
        f"Pass the names of your modalities, e.g. modalities={example!r}, or rebuild the "
        "MuData with the expected names, e.g. mudata.MuData({"
        + rebuild
        + ", ...})."
    )


def check_var_names(
    reference: pd.Index | Sequence[str],
    adata: AnnData,
    *,
    what: str = "genes",
) -> None:
    """Check that ``adata`` has the same features, in the same order, as ``reference``.

    Used when a trained model is loaded onto new data.

    Parameters
    ----------
    reference
        The feature names the model was trained on.
    adata
        The new data.
    what
        What the features are (``"genes"``, ``"peaks"``), used in the message.

    Raises
    ------
    ValueError
        If the features differ (the message says how many are missing / extra) or
        are in another order (the message shows how to reorder).
    """
    ref = pd.Index(reference)
    new = adata.var_names
    if ref.equals(new):
        return
    if not new.is_unique:
        dup = new[new.duplicated()].unique()
        raise ValueError(
            f"adata has {len(dup)} duplicated {what} name(s) ({_preview(dup)}); {what} are "
            "matched to the model by name. Make them unique with adata.var_names_make_unique() "
            "(as was done for the training data)."
        )
    missing = ref.difference(new, sort=False)
    extra = new.difference(ref, sort=False)
    if len(missing) or len(extra):
        msg = (
            f"adata does not have the model's {what}: {len(missing)} of the {len(ref)} {what} the "
            f"model was trained on are missing{_eg(missing)} and adata has "
            f"{len(extra)} extra {what}{_eg(extra)}."
        )
        if len(missing) == 0:
            msg += (
                f" Subset and order adata like the training data with "
                f"adata = adata[:, reference_var_names].copy() (reference_var_names = the "
                f"model's var_names, e.g. model.adata.var_names)."
            )
        else:
            msg += (
                f" Add the missing {what} as all-zero columns and order them like the training "
                f"data (scvi-tools' prepare_query_anndata(adata, model) does this), then subset "
                f"with adata = adata[:, reference_var_names].copy()."
            )
        raise ValueError(msg)
    n_moved = int((ref != new).sum())
    raise ValueError(
        f"adata has the model's {len(ref)} {what} but in a different order ({n_moved} positions "
        f"differ). Reorder with adata = adata[:, reference_var_names].copy() "
        f"(reference_var_names = the model's var_names, e.g. model.adata.var_names)."
    )


# --------------------------------------------------------------------------- sizes


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


def check_n_components(n_components: int, n_cells: int) -> None:
    """Check the number of mixture components against the number of cells.

    Parameters
    ----------
    n_components
        Number of mixture components of the prior.
    n_cells
        Number of cells in the data.

    Raises
    ------
    ValueError
        If ``n_components`` is not a positive integer or exceeds ``n_cells``.
    """
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
        raise ValueError(
            f"n_components must be a positive integer, got {n_components!r} "
            f"({type(n_components).__name__})."
        )
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components}.")
    if n_components > n_cells:
        raise ValueError(
            f"n_components={n_components} exceeds the number of cells ({n_cells}); each "
            f"mixture component needs cells to describe. Use n_components <= {n_cells}, "
            "e.g. about the number of cell types you expect (10-30 for most data)."
        )
