"""Snapshots of an AnnData / MuData, to test that user data is never changed.

mixvi promises not to touch the user's data beyond documented keys (the
registration keys scvi-tools adds at setup and the outputs ``write_to_adata``
writes).  :func:`snapshot` records hashes of every matrix and column;
:func:`assert_unchanged` compares a later state against it and lists every
difference outside the allowed keys.

Example
-------
>>> before = snapshot(adata)
>>> MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
>>> assert_unchanged(before, adata, allowed_obs=("_scvi_*",), allowed_uns=("_scvi_*",))
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["assert_unchanged", "snapshot"]

_CHUNK_ROWS = 4096


def _new() -> Any:
    return hashlib.blake2b(digest_size=16)


def _update_array(h: Any, arr: np.ndarray) -> None:
    arr = np.asarray(arr)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    if arr.dtype.kind == "O":
        h.update(pd.util.hash_pandas_object(pd.Series(arr.ravel()), index=False).values.tobytes())
    elif arr.dtype.kind in "US":
        h.update(np.ascontiguousarray(arr).tobytes())
    else:
        h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))


def _hash_value(value: Any) -> str:
    """A content hash of a matrix, frame, column, array or plain Python value."""
    h = _new()
    if value is None:
        h.update(b"None")
    elif sp.issparse(value):
        m = value if value.format in {"csr", "csc", "coo"} else value.tocsr()
        h.update(f"sparse:{m.format}:{m.shape}:{m.dtype}".encode())
        _update_array(h, m.data)
        if m.format == "coo":
            _update_array(h, m.row)
            _update_array(h, m.col)
        else:
            _update_array(h, m.indices)
            _update_array(h, m.indptr)
    elif isinstance(value, pd.DataFrame):
        h.update(b"frame")
        h.update(repr(list(value.columns)).encode())
        h.update(repr([str(t) for t in value.dtypes]).encode())
        for col in value.columns:
            h.update(_hash_value(value[col]).encode())
        h.update(_hash_value(value.index).encode())
    elif isinstance(value, pd.Series):
        h.update(f"series:{value.dtype}".encode())
        if isinstance(value.dtype, pd.CategoricalDtype):
            h.update(repr(list(value.cat.categories)).encode())
            h.update(repr(value.cat.ordered).encode())
        h.update(pd.util.hash_pandas_object(value, index=False).values.tobytes())
    elif isinstance(value, pd.Index):
        h.update(f"index:{value.dtype}".encode())
        h.update(pd.util.hash_pandas_object(value).values.tobytes())
    elif isinstance(value, np.ndarray):
        _update_array(h, value)
    elif isinstance(value, Mapping):
        h.update(b"mapping")
        for k in sorted(value, key=str):
            h.update(repr(k).encode())
            h.update(_hash_value(value[k]).encode())
    elif isinstance(value, (list, tuple)):
        h.update(type(value).__name__.encode())
        for v in value:
            h.update(_hash_value(v).encode())
    elif hasattr(value, "__getitem__") and len(getattr(value, "shape", ())) >= 1:
        # backed (h5py / anndata sparse dataset) or lazy array: read in row chunks
        n = value.shape[0]
        h.update(f"chunked:{tuple(value.shape)}".encode())
        for start in range(0, n, _CHUNK_ROWS):
            chunk = value[start : start + _CHUNK_ROWS]
            if hasattr(chunk, "compute") and not isinstance(chunk, np.ndarray):
                chunk = chunk.compute()
            h.update(_hash_value(chunk if sp.issparse(chunk) else np.asarray(chunk)).encode())
    else:
        h.update(type(value).__name__.encode())
        h.update(repr(value).encode())
    return h.hexdigest()


def _hash_mapping(mapping: Any) -> dict[str, str]:
    if mapping is None:
        return {}
    return {str(k): _hash_value(mapping[k]) for k in mapping.keys()}


def _snapshot_anndata(adata: Any) -> dict[str, Any]:
    raw = getattr(adata, "raw", None)
    return {
        "kind": "AnnData",
        "shape": tuple(adata.shape),
        "obs_names": _hash_value(adata.obs_names),
        "var_names": _hash_value(adata.var_names),
        "X": _hash_value(adata.X),
        "layers": _hash_mapping(adata.layers),
        "obs": {str(c): _hash_value(adata.obs[c]) for c in adata.obs.columns},
        "var": {str(c): _hash_value(adata.var[c]) for c in adata.var.columns},
        "obsm": _hash_mapping(adata.obsm),
        "varm": _hash_mapping(adata.varm),
        "obsp": _hash_mapping(adata.obsp),
        "varp": _hash_mapping(adata.varp),
        "uns": _hash_mapping(adata.uns),
        "raw": None
        if raw is None
        else _hash_value((raw.X, raw.var_names, raw.var)),
    }


def snapshot(adata: Any) -> dict[str, Any]:
    """Record content hashes of everything in an AnnData or MuData.

    Parameters
    ----------
    adata
        AnnData (in memory or backed) or MuData.

    Returns
    -------
    A dict with hashes of ``X``, every layer, ``obs_names`` / ``var_names``, every
    ``obs`` / ``var`` column, every ``obsm`` / ``varm`` / ``obsp`` / ``varp`` / ``uns``
    entry and ``raw``; for a MuData the same for the global attributes plus one
    such dict per modality under ``"mod"``.
    """
    if hasattr(adata, "mod"):  # MuData
        snap = {
            "kind": "MuData",
            "shape": tuple(adata.shape),
            "obs_names": _hash_value(adata.obs_names),
            "var_names": _hash_value(adata.var_names),
            "obs": {str(c): _hash_value(adata.obs[c]) for c in adata.obs.columns},
            "var": {str(c): _hash_value(adata.var[c]) for c in adata.var.columns},
            "obsm": _hash_mapping(adata.obsm),
            "varm": _hash_mapping(adata.varm),
            "obsp": _hash_mapping(adata.obsp),
            "varp": _hash_mapping(adata.varp),
            "uns": _hash_mapping(adata.uns),
            "mod": {name: _snapshot_anndata(m) for name, m in adata.mod.items()},
        }
        return snap
    return _snapshot_anndata(adata)


def _allowed(key: str, patterns: Iterable[str]) -> bool:
    return any(key == p or fnmatch.fnmatchcase(key, p) for p in patterns)


def _diff_mapping(
    where: str, before: dict[str, str], after: dict[str, str], allowed: Iterable[str]
) -> list[str]:
    allowed = tuple(allowed)
    out = []
    for k in before:
        if _allowed(k, allowed):
            continue
        if k not in after:
            out.append(f"{where}[{k!r}] was removed")
        elif before[k] != after[k]:
            out.append(f"{where}[{k!r}] was changed")
    for k in after:
        if k not in before and not _allowed(k, allowed):
            out.append(f"{where}[{k!r}] was added")
    return out


def _diff(
    prefix: str, before: dict[str, Any], after: dict[str, Any], allowed: dict[str, tuple[str, ...]]
) -> list[str]:
    out: list[str] = []
    if before["kind"] != after["kind"]:
        return [f"{prefix} changed from {before['kind']} to {after['kind']}"]
    if before["shape"] != after["shape"]:
        out.append(f"{prefix}.shape changed from {before['shape']} to {after['shape']}")
    for attr in ("obs_names", "var_names", "X", "raw"):
        if attr in before and before[attr] != after.get(attr):
            out.append(f"{prefix}.{attr} was changed")
    for attr in ("layers", "obs", "var", "obsm", "varm", "obsp", "varp", "uns"):
        if attr in before:
            out += _diff_mapping(f"{prefix}.{attr}", before[attr], after[attr], allowed[attr])
    if "mod" in before:
        for name in before["mod"]:
            if name not in after["mod"]:
                out.append(f"{prefix}.mod[{name!r}] was removed")
            else:
                out += _diff(
                    f"{prefix}[{name!r}]", before["mod"][name], after["mod"][name], allowed
                )
        for name in after["mod"]:
            if name not in before["mod"]:
                out.append(f"{prefix}.mod[{name!r}] was added")
    return out


def assert_unchanged(
    before: dict[str, Any],
    after_adata: Any,
    allowed_obs: Iterable[str] = (),
    allowed_obsm: Iterable[str] = (),
    allowed_uns: Iterable[str] = (),
    allowed_var: Iterable[str] = (),
    allowed_varm: Iterable[str] = (),
    allowed_layers: Iterable[str] = (),
    allowed_obsp: Iterable[str] = (),
    allowed_varp: Iterable[str] = (),
) -> None:
    """Assert that an object still matches a :func:`snapshot`, apart from allowed keys.

    Parameters
    ----------
    before
        The result of :func:`snapshot` taken earlier.
    after_adata
        The AnnData / MuData now (or a second snapshot).
    allowed_obs
        Keys of ``obs`` that may be added, changed or removed. Shell-style patterns are
        accepted (``"_scvi_*"``, ``"mixvi_*"``). For a MuData every ``allowed_*`` applies
        to the global attributes and to every modality.
    allowed_obsm, allowed_uns
        The same for ``obsm`` and ``uns``.
    allowed_var, allowed_varm, allowed_layers
        The same for ``var``, ``varm`` and ``layers``.
    allowed_obsp, allowed_varp
        The same for ``obsp`` and ``varp``.

    Raises
    ------
    AssertionError
        Listing every difference outside the allowed keys: ``X``, ``raw``,
        ``obs_names`` / ``var_names`` or shape changed, any layer / column / entry
        added, changed or removed.
    """
    after = after_adata if isinstance(after_adata, dict) else snapshot(after_adata)
    allowed = {
        "obs": tuple(allowed_obs),
        "obsm": tuple(allowed_obsm),
        "uns": tuple(allowed_uns),
        "var": tuple(allowed_var),
        "varm": tuple(allowed_varm),
        "layers": tuple(allowed_layers),
        "obsp": tuple(allowed_obsp),
        "varp": tuple(allowed_varp),
    }
    diffs = _diff("adata" if before["kind"] == "AnnData" else "mdata", before, after, allowed)
    if diffs:
        raise AssertionError(
            "The user's data was changed beyond the allowed keys:\n  - " + "\n  - ".join(diffs)
        )
