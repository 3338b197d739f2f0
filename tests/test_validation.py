"""Tests of mixvi.data input validation: every bad input fails early with a useful message."""

from __future__ import annotations

import functools
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from validation_inputs import N_OBS, N_VARS, lognorm, make_adata, make_mudata, with_X

from mixvi.data import (
    DenseMatrixTooLargeError,
    _matrix,
    check_dense_size,
    check_empty,
    check_layer,
    check_mudata_modalities,
    check_n_categories,
    check_n_components,
    check_obs_key,
    check_same_cells,
    check_var_names,
    get_matrix,
    validate_counts,
)

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
