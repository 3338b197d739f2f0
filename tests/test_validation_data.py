"""Input checks on the data itself: empty cells and genes, large sparse matrices without
densifying, backed AnnData, and the snapshot helpers that prove the input is unchanged."""

from __future__ import annotations

import time
import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from validation_inputs import N_OBS, lognorm, make_adata, make_mudata, with_X

from mixvi.data import (
    _counts,
    _matrix,
    assert_unchanged,
    check_dense_size,
    check_empty,
    check_n_categories,
    drop_empty,
    snapshot,
    validate_counts,
)

# --------------------------------------------------------------------------- empty cells / genes


def test_check_empty_warns_and_drop_empty():
    adata = make_adata()
    X = adata.X.toarray()
    X[3] = 0
    X[7] = 0
    X[:, 4] = 0
    adata.X = sp.csr_matrix(X)
    adata.layers["counts"] = sp.csr_matrix(X)
    adata.layers["counts"].data = np.where(adata.layers["counts"].data > 0, 1.0, 0.0).astype(
        np.float32
    )
    with pytest.warns(UserWarning, match=r"2 of 20 cells have no RNA counts.*1 of 10 features"):
        cells, genes = check_empty(adata)
    assert np.flatnonzero(cells).tolist() == [3, 7]
    assert np.flatnonzero(genes).tolist() == [4]
    with pytest.warns(UserWarning, match=r"sc\.pp\.filter_cells\(adata, min_counts=1\)"):
        check_empty(adata)
    with pytest.warns(UserWarning, match=r"drop_empty\(adata, layer='counts'\)"):
        check_empty(adata, layer="counts")

    before = snapshot(adata)
    out = drop_empty(adata)
    assert out.shape == (18, 9)
    assert "cell3" not in out.obs_names and "gene4" not in out.var_names
    assert_unchanged(before, adata)  # input untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c, g = check_empty(out)
    assert not c.any() and not g.any()


def test_check_empty_explicit_zeros_and_formats():
    X = np.array([[0, 1, 0], [0, 0, 0], [2, 0, 0]], dtype=np.float32)
    csr = sp.csr_matrix(X)
    csr.data[0] = 0.0  # explicit stored zero: row 0 and column 1 are now empty
    expected_cells = [True, True, False]
    expected_genes = [False, True, True]
    for M in (csr, csr.tocsc(), csr.toarray()):
        adata = ad.AnnData(M)
        cells, genes = check_empty(adata, warn=False)
        assert cells.tolist() == expected_cells, type(M)
        assert genes.tolist() == expected_genes, type(M)
    for M in (csr.tocoo(), sp.lil_matrix(csr), sp.dok_matrix(csr)):  # not allowed in AnnData
        rows, cols = _counts._nonzero_counts(M)
        assert (rows == 0).tolist() == expected_cells, type(M)
        assert (cols == 0).tolist() == expected_genes, type(M)


# --------------------------------------------------------------------------- no densification


def test_matrix_counts_does_not_densify_large_sparse():
    n_obs, n_vars, nnz = 10**5, 10**4, 2 * 10**5  # dense float32 would be 4 GB
    rng = np.random.default_rng(0)
    rows = rng.integers(0, n_obs, nnz)
    cols = rng.integers(0, n_vars, nnz)
    vals = rng.integers(1, 50, nnz).astype(np.float32)
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n_obs, n_vars))
    adata = ad.AnnData(X)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        validate_counts(adata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_empty(adata)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert peak < 50e6, f"peak {peak / 1e6:.0f} MB: the matrix was densified"
    assert elapsed < 5.0
    X.data[-1] = 0.5
    with pytest.raises(ValueError, match="non-integer"):
        validate_counts(adata)


def test_chunked_scan_finds_bad_value_in_last_chunk(monkeypatch):
    monkeypatch.setattr(_matrix, "_CHUNK_ELEMENTS", 30)  # 3 rows of 10 genes per chunk
    monkeypatch.setattr(_matrix, "_DATA_CHUNK", 7)
    for dense in (True, False):
        adata = make_adata(dense=dense)
        validate_counts(adata)
        X = adata.X.toarray() if not dense else adata.X.copy()
        X[-1, -1] = 2.5
        adata.X = X if dense else sp.csr_matrix(X)
        with pytest.raises(ValueError, match=r"1 non-integer value"):
            validate_counts(adata)


# --------------------------------------------------------------------------- backed


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_backed_anndata(tmp_path, monkeypatch, dense):
    monkeypatch.setattr(_matrix, "_CHUNK_ELEMENTS", 30)  # several row chunks
    monkeypatch.setattr(_matrix, "_DATA_CHUNK", 7)
    good = make_adata(dense=dense)
    X = good.X.toarray() if not dense else good.X.copy()
    X[2] = 0  # one empty cell
    good.X = X if dense else sp.csr_matrix(X)
    good.write_h5ad(tmp_path / "good.h5ad")
    backed = ad.read_h5ad(tmp_path / "good.h5ad", backed="r")
    try:
        assert backed.isbacked
        assert not isinstance(backed.X, (np.ndarray, sp.spmatrix))
        validate_counts(backed)
        with pytest.warns(UserWarning, match="1 of 20 cells"):
            cells, _ = check_empty(backed)
        assert np.flatnonzero(cells).tolist() == [2]
        assert check_dense_size(backed) == 0.0
        before = snapshot(backed)
        assert_unchanged(before, backed)
        out = drop_empty(backed)
        assert out.shape[0] == 19 and not out.isbacked
    finally:
        backed.file.close()

    bad = make_adata(dense=dense)
    bad.X = with_X(lognorm(bad), sparse=not dense).X
    bad.write_h5ad(tmp_path / "bad.h5ad")
    backed = ad.read_h5ad(tmp_path / "bad.h5ad", backed="r")
    try:
        with pytest.raises(ValueError, match=r"raw counts.*log-normalised.*layer='counts'"):
            validate_counts(backed)
        validate_counts(backed, layer="counts")  # layers are loaded in memory
    finally:
        backed.file.close()


# --------------------------------------------------------------------------- snapshot helpers


def test_snapshot_detects_changes_outside_allowed_keys():
    adata = make_adata()
    adata.obsm["X_pca"] = np.zeros((N_OBS, 2))
    adata.uns["user"] = {"a": 1}
    before = snapshot(adata)
    assert_unchanged(before, adata)

    # documented outputs are allowed (patterns accepted)
    adata.obs["mixvi_cluster"] = 0
    adata.obs["_scvi_batch"] = 0
    adata.obsm["X_mixvi"] = np.ones((N_OBS, 3))
    adata.uns["_scvi_uuid"] = "x"
    assert_unchanged(
        before,
        adata,
        allowed_obs=("mixvi_cluster", "_scvi_*"),
        allowed_obsm=("X_mixvi",),
        allowed_uns=("_scvi_*",),
    )
    with pytest.raises(AssertionError, match=r"adata\.obsm\['X_mixvi'\] was added"):
        assert_unchanged(before, adata, allowed_obs=("*",), allowed_uns=("*",))

    cases = {
        r"adata\.X was changed": lambda a: setattr(a.X, "data", a.X.data + 1),
        r"adata\.layers\['counts'\] was changed": lambda a: a.layers["counts"].data.__setitem__(
            0, 99
        ),
        r"adata\.layers\['new'\] was added": lambda a: a.layers.__setitem__("new", a.X.copy()),
        r"adata\.obs\['batch'\] was changed": lambda a: a.obs.__setitem__(
            "batch", a.obs["batch"].cat.add_categories("z")
        ),
        r"adata\.obs\['cell_type'\] was removed": lambda a: a.obs.pop("cell_type"),
        r"adata\.obsm\['X_pca'\] was changed": lambda a: a.obsm["X_pca"].__setitem__(
            (0, 0), 1.0
        ),
        r"adata\.uns\['user'\] was changed": lambda a: a.uns["user"].__setitem__("a", 2),
        r"adata\.var\['g'\] was added": lambda a: a.var.__setitem__("g", 1),
        r"adata\.obs_names was changed": lambda a: setattr(
            a, "obs_names", [f"c{i}" for i in range(N_OBS)]
        ),
    }
    for match, mutate in cases.items():
        a = make_adata()
        a.obsm["X_pca"] = np.zeros((N_OBS, 2))
        a.uns["user"] = {"a": 1}
        b = snapshot(a)
        mutate(a)
        with pytest.raises(AssertionError, match=match):
            assert_unchanged(b, a)


def test_snapshot_mudata():
    mdata = make_mudata()
    before = snapshot(mdata)
    assert_unchanged(before, mdata)
    mdata["rna"].obs["mixvi_cluster"] = 1
    mdata.obsm["X_mixvi"] = np.zeros((mdata.n_obs, 2))
    assert_unchanged(before, mdata, allowed_obs=("mixvi_*",), allowed_obsm=("X_mixvi",))
    mdata["atac"].X.data[:] = 7
    with pytest.raises(AssertionError, match=r"mdata\['atac'\]\.X was changed"):
        assert_unchanged(before, mdata, allowed_obs=("mixvi_*",), allowed_obsm=("X_mixvi",))


def test_validation_does_not_change_input():
    adata = make_adata()
    before = snapshot(adata)
    validate_counts(adata)
    validate_counts(adata, layer="counts")
    check_empty(adata)
    check_n_categories(adata, "batch", "batch_key")
    check_dense_size(adata)
    drop_empty(adata)
    assert_unchanged(before, adata)
