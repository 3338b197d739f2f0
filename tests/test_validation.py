"""Tests of mixvi.data input validation: every bad input fails early with a useful message."""

from __future__ import annotations

import functools
import time
import tracemalloc
import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mixvi.data import (
    DenseMatrixTooLargeError,
    assert_unchanged,
    check_dense_size,
    check_empty,
    check_layer,
    check_mudata_modalities,
    check_n_categories,
    check_n_components,
    check_obs_key,
    check_same_cells,
    check_var_names,
    drop_empty,
    get_matrix,
    snapshot,
    validate_counts,
)
from mixvi.data import _counts, _matrix

N_OBS, N_VARS = 20, 10


def make_adata(n_obs: int = N_OBS, n_vars: int = N_VARS, seed: int = 0, dense: bool = False):
    """Tiny AnnData with integer counts (no all-zero cell or gene), batch and labels."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.0, size=(n_obs, n_vars)).astype(np.float32)
    counts[:, 0] += 1  # no empty cell
    counts[0, :] += 1  # no empty gene
    X = counts if dense else sp.csr_matrix(counts)
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(
            {
                "batch": pd.Categorical(["a", "b"] * (n_obs // 2)),
                "cell_type": pd.Categorical(["T", "B", "NK", "Mono"] * (n_obs // 4)),
                "one": pd.Categorical(["x"] * n_obs),
            },
            index=[f"cell{i}" for i in range(n_obs)],
        ),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_vars)]),
    )
    adata.layers["counts"] = X.copy()
    return adata


def with_X(values, sparse: bool = True) -> ad.AnnData:
    adata = make_adata()
    values = np.asarray(values, dtype=np.float32)
    adata.X = sp.csr_matrix(values) if sparse else values
    return adata


def lognorm(adata: ad.AnnData) -> np.ndarray:
    c = adata.layers["counts"]
    c = c.toarray() if sp.issparse(c) else np.asarray(c)
    return np.log1p(c / c.sum(1, keepdims=True) * 1e4)


def make_mudata(atac_names=None, mods=("rna", "atac")):
    rna = make_adata()
    atac = make_adata(n_vars=30, seed=1)
    atac.var_names = [f"chr1:{i * 100}-{i * 100 + 50}" for i in range(30)]
    if atac_names is not None:
        atac = atac[atac_names].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.MuData(dict(zip(mods, (rna, atac))))


# --------------------------------------------------------------------------- bad inputs

BAD_INPUTS = [
    pytest.param(
        lambda: validate_counts(with_X(lognorm(make_adata()))),
        ValueError,
        r"non-integer.*expects raw counts.*log-normalised.*layer='counts'",
        id="non-integer-lognorm-sparse",
    ),
    pytest.param(
        lambda: validate_counts(with_X(lognorm(make_adata()), sparse=False)),
        ValueError,
        r"non-integer.*raw counts.*adata\.layers\['counts'\]",
        id="non-integer-lognorm-dense",
    ),
    pytest.param(
        lambda: validate_counts(with_X(make_adata().layers["counts"].toarray() * 123.4567)),
        ValueError,
        r"non-integer.*looks normalised",
        id="non-integer-normalised",
    ),
    pytest.param(
        lambda: validate_counts(with_X(np.full((N_OBS, N_VARS), -1.0))),
        ValueError,
        r"negative value.*raw counts",
        id="negative",
    ),
    pytest.param(
        lambda: validate_counts(with_X(np.where(np.eye(N_OBS, N_VARS) > 0, -0.5, 1.5))),
        ValueError,
        r"negative.*looks scaled",
        id="negative-scaled",
    ),
    pytest.param(
        lambda: validate_counts(with_X(np.where(np.eye(N_OBS, N_VARS) > 0, np.nan, 1.0))),
        ValueError,
        r"10 NaN",
        id="nan",
    ),
    pytest.param(
        lambda: validate_counts(
            with_X(np.where(np.eye(N_OBS, N_VARS) > 0, np.inf, 1.0), sparse=False)
        ),
        ValueError,
        r"infinite \(inf\)",
        id="inf",
    ),
    pytest.param(
        lambda: validate_counts(ad.AnnData(np.array([["a", "b"]] * 3, dtype=object))),
        ValueError,
        r"not numeric",
        id="non-numeric",
    ),
    pytest.param(
        lambda: validate_counts(make_adata(), layer="count", modality="ATAC"),
        KeyError,
        r"layer='count' is not in adata\.layers\. Did you mean 'counts'\?",
        id="missing-layer-validate",
    ),
    pytest.param(
        lambda: get_matrix(make_adata(), "raw_counts"),
        KeyError,
        r"Available layers: \['counts'\]",
        id="missing-layer-get-matrix",
    ),
    pytest.param(
        lambda: check_layer(ad.AnnData(np.ones((3, 2), dtype=np.float32)), "counts"),
        KeyError,
        r"Available layers: none.*pass layer=None",
        id="missing-counts-layer-hint",
    ),
    pytest.param(
        lambda: check_obs_key(make_adata(), "Batch"),
        KeyError,
        r"batch_key='Batch' is not a column of adata\.obs\. Did you mean 'batch'\?",
        id="misspelt-key-case",
    ),
    pytest.param(
        lambda: check_obs_key(make_adata(), "celltype", role="labels_key"),
        KeyError,
        r"labels_key='celltype'.*Did you mean 'cell_type'\?.*Available columns",
        id="misspelt-key-typo",
    ),
    pytest.param(
        lambda: check_n_categories(make_adata(), "one", "labels_key"),
        ValueError,
        r"labels_key='one'.*only 1 category \(\['x'\]\).*at least 2",
        id="single-category",
    ),
    pytest.param(
        lambda: check_n_categories(make_adata(), "one", "batch_key", min_categories=2),
        ValueError,
        r"batch_key=None",
        id="single-batch-hint",
    ),
    pytest.param(
        lambda: check_n_categories(
            _set_obs(make_adata(), "cell_type", ["T", "Unknown"] * 10),
            "cell_type",
            "labels_key",
            unlabeled_category="Unknown",
        ),
        ValueError,
        r"only 1 category.*besides the unlabelled category 'Unknown'",
        id="single-category-plus-unlabelled",
    ),
    pytest.param(
        lambda: check_n_categories(
            _set_obs(make_adata(), "cell_type", ["T", None] * 10), "cell_type", "labels_key"
        ),
        ValueError,
        r"10 missing \(NaN\) value.*fillna\('unknown'\)",
        id="nan-in-labels",
    ),
    pytest.param(
        lambda: check_same_cells(make_adata(), make_adata()[2:].copy()),
        ValueError,
        r"different cells: 2 of 20 rna cells are missing from atac \(e\.g\. \['cell0', "
        r"'cell1'\]\), and 0 of 18 atac cells are missing from rna; 18 are shared",
        id="differing-cells",
    ),
    pytest.param(
        lambda: check_same_cells(make_adata(), make_adata()[::-1].copy()),
        ValueError,
        r"same 20 cells but in a different order.*atac = atac\[rna\.obs_names\]",
        id="reordered-cells",
    ),
    pytest.param(
        lambda: check_same_cells(
            make_adata(), _dup_names(make_adata()), names=("rna", "prot")
        ),
        ValueError,
        r"prot has 1 duplicated cell name.*obs_names_make_unique",
        id="duplicated-cells",
    ),
    pytest.param(
        lambda: check_mudata_modalities(
            make_mudata(mods=("rna", "ATAC_peaks")), {"rna": "rna", "atac": "atac"}
        ),
        KeyError,
        r"no modality 'atac'.*Available modalities \(mdata\.mod\): \['rna', 'ATAC_peaks'\]"
        r".*modalities=\{'rna': 'rna', 'atac': '<name>'\}",
        id="missing-modality",
    ),
    pytest.param(
        lambda: check_mudata_modalities(
            make_mudata(mods=("rna", "atak")), {"rna": "rna", "atac": "atac"}
        ),
        KeyError,
        r"Did you mean 'atak'\?.*mudata\.MuData\(\{'atac': mdata\['atak'\]",
        id="misspelt-modality",
    ),
    pytest.param(
        lambda: check_mudata_modalities(make_adata(), {"rna": "rna"}),
        TypeError,
        r"Expected a MuData object, got AnnData",
        id="not-a-mudata",
    ),
    pytest.param(
        lambda: check_var_names(
            [f"gene{j}" for j in range(5, 15)], make_adata(), what="genes"
        ),
        ValueError,
        r"5 of the 10 genes the model was trained on are missing.*5 extra genes",
        id="other-genes",
    ),
    pytest.param(
        lambda: check_var_names([f"gene{j}" for j in range(8)], make_adata()),
        ValueError,
        r"0 of the 8 genes the model was trained on are missing and adata has 2 extra genes"
        r".*adata\[:, reference_var_names\]",
        id="extra-genes",
    ),
    pytest.param(
        lambda: check_var_names([f"gene{j}" for j in reversed(range(10))], make_adata()),
        ValueError,
        r"different order.*adata\[:, reference_var_names\]",
        id="reordered-genes",
    ),
    pytest.param(
        lambda: check_dense_size(_huge_dense_adata(), max_gb=16),
        DenseMatrixTooLargeError,
        r"dense 1000000 x 10000 float32 matrix of 40 GB.*scipy\.sparse\.csr_matrix.*backed",
        id="huge-dense",
    ),
    pytest.param(
        lambda: check_dense_size(make_adata(dense=True), max_gb=1e-7),
        MemoryError,
        r"more than the limit max_gb=1e-07",
        id="dense-over-limit",
    ),
    pytest.param(
        lambda: check_n_components(50, 20),
        ValueError,
        r"n_components=50 exceeds the number of cells \(20\).*n_components <= 20",
        id="n-components-gt-n-cells",
    ),
    pytest.param(
        lambda: check_n_components(0, 20),
        ValueError,
        r"at least 1",
        id="n-components-zero",
    ),
]


def _set_obs(adata, key, values):
    adata.obs[key] = pd.Categorical(values)
    return adata


def _dup_names(adata):
    names = list(adata.obs_names)
    names[1] = names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.obs_names = names
    return adata


@functools.lru_cache(maxsize=1)
def _huge_dense_adata():
    # 10^6 x 10^4 float32 = 40 GB, but a broadcast view of one scalar: no memory used.
    X = np.broadcast_to(np.float32(0), (10**6, 10**4))
    return ad.AnnData(X=X)


@pytest.mark.parametrize(("make_error", "error", "match"), BAD_INPUTS)
def test_bad_input_raises_with_fix(make_error, error, match):
    with pytest.raises(error, match=match):
        make_error()


def test_key_error_message_is_readable():
    with pytest.raises(KeyError) as err:
        check_obs_key(make_adata(), "Batch")
    assert str(err.value).startswith("batch_key='Batch'")  # not wrapped in quotes


def test_huge_dense_error_is_valueerror_and_memoryerror():
    with pytest.raises(ValueError, match="40 GB, more than the limit max_gb=1"):
        check_dense_size(_huge_dense_adata(), max_gb=1)
    with pytest.raises(MemoryError):
        check_dense_size(_huge_dense_adata(), max_gb=1)


def test_huge_dense_against_available_memory(monkeypatch):
    monkeypatch.setattr(_matrix, "_available_memory_bytes", lambda: 32 * 10**9)
    with pytest.raises(MemoryError, match=r"more than half the memory available now \(32\.0 GB"):
        check_dense_size(_huge_dense_adata())


def test_available_memory_is_known():
    avail = _matrix._available_memory_bytes()
    assert avail is None or avail > 0


def test_dense_size_under_limit_returns_size():
    assert check_dense_size(_huge_dense_adata(), max_gb=100) == pytest.approx(40.0)
    assert check_dense_size(make_adata()) == 0.0  # sparse: always fine
    assert 0 < check_dense_size(make_adata(dense=True)) < 1e-5


# --------------------------------------------------------------------------- valid inputs


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda c: sp.csr_matrix(c), id="csr"),
        pytest.param(lambda c: sp.csc_matrix(c), id="csc"),
        pytest.param(lambda c: sp.csr_array(c), id="csr_array"),
        pytest.param(lambda c: c, id="dense-float32"),
        pytest.param(lambda c: c.astype(np.int64), id="dense-int64"),
        pytest.param(lambda c: c > 0, id="dense-bool"),
    ],
)
def test_valid_counts_pass(convert):
    adata = make_adata(dense=True)
    adata.X = convert(adata.X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_counts(adata)
        validate_counts(adata, layer="counts")
        cells, genes = check_empty(adata)
    assert not cells.any() and not genes.any()


def test_valid_inputs_pass():
    adata = make_adata()
    check_layer(adata, None)
    check_layer(adata, "counts")
    assert get_matrix(adata, "counts") is adata.layers["counts"]
    assert get_matrix(adata, None) is adata.X
    check_obs_key(adata, "batch")
    check_obs_key(adata, None)
    assert check_n_categories(adata, "batch", "batch_key") == 2
    assert check_n_categories(adata, "cell_type", "labels_key", min_categories=4) == 4
    check_same_cells(adata, adata.copy())
    check_var_names(adata.var_names, adata)
    check_var_names(list(adata.var_names), adata)
    check_mudata_modalities(make_mudata(), {"rna": "rna", "atac": "atac", "protein": None})
    check_n_components(20, 20)
    check_n_components(np.int64(3), 20)


def test_allow_non_integer():
    adata = with_X(lognorm(make_adata()))
    validate_counts(adata, allow_non_integer=True)
    bad = with_X(np.where(np.eye(N_OBS, N_VARS) > 0, np.nan, 0.5))
    with pytest.raises(ValueError, match="NaN"):
        validate_counts(bad, allow_non_integer=True)


def test_non_integer_in_layer_names_layer():
    adata = make_adata()
    adata.layers["lognorm"] = sp.csr_matrix(lognorm(adata))
    with pytest.raises(ValueError, match=r"adata\.layers\['lognorm'\]"):
        validate_counts(adata, layer="lognorm")
    validate_counts(adata, layer="counts")


# --------------------------------------------------------------------------- empty cells / genes


def test_check_empty_warns_and_drop_empty():
    adata = make_adata()
    X = adata.X.toarray()
    X[3] = 0
    X[7] = 0
    X[:, 4] = 0
    adata.X = sp.csr_matrix(X)
    adata.X.data  # explicit zeros: also count as empty
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
            cells, genes = check_empty(backed)
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
