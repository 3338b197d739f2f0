"""Tests of the shipped real datasets (mixvi.datasets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from mixvi import datasets
from mixvi.data import check_same_cells, validate_counts


def _assert_raw_counts(adata: AnnData) -> None:
    X = adata.X
    assert sp.issparse(X) and X.format == "csr"
    assert X.dtype == np.float32
    assert np.all(X.data >= 0)
    assert np.all(X.data == np.round(X.data)), "counts must be integer-valued"
    assert "counts" in adata.layers
    assert (X != adata.layers["counts"]).nnz == 0, ".X must equal .layers['counts']"
    validate_counts(adata)
    validate_counts(adata, layer="counts")


@pytest.fixture(scope="module")
def kang() -> AnnData:
    return datasets.kang_pbmc_ifnb()


@pytest.fixture(scope="module")
def snare():
    return datasets.snareseq_mouse_cortex()


def test_kang_shape_and_obs(kang):
    assert kang.shape == (1556, 1267)
    _assert_raw_counts(kang)
    for col in ("cell_type", "condition", "sample_id", "donor", "batch"):
        assert col in kang.obs
    assert kang.obs["batch"].value_counts().to_dict() == {"stim": 806, "ctrl": 750}
    assert kang.obs["cell_type"].nunique() == 5
    assert kang.obs_names.is_unique


def test_snareseq_mudata(snare):
    assert set(snare.mod) == {"rna", "atac"}
    assert snare.n_obs == 10309
    rna, atac = snare["rna"], snare["atac"]
    assert rna.shape == (10309, 1677)
    assert atac.shape == (10309, 25734)
    assert rna.obs_names.equals(atac.obs_names)
    assert snare.obs_names.equals(rna.obs_names)
    check_same_cells(rna, atac)
    for m in (rna, atac):
        _assert_raw_counts(m)
    # global obs as stored: no prefixed copies of the modality columns
    assert list(snare.obs.columns) == ["cell_type", "cell_type_coarse", "batch"]
    assert snare.obs["batch"].nunique() == 12
    assert snare.obs["cell_type"].nunique() == 23
    assert snare.obs["cell_type_coarse"].nunique() == 15
    assert "linked_gene" in atac.var
    assert atac.var["linked_gene"].isin(rna.var_names).all()


def test_snareseq_rna_matches_mudata(snare):
    rna = datasets.snareseq_mouse_cortex_rna()
    assert isinstance(rna, AnnData)
    assert rna.shape == (10309, 1677)
    _assert_raw_counts(rna)
    assert rna.obs_names.equals(snare.obs_names)
    assert rna.var_names.equals(snare["rna"].var_names)
    pd.testing.assert_frame_equal(rna.obs[snare.obs.columns], snare.obs)
    assert (rna.X != snare["rna"].X).nnz == 0


def test_snareseq_atac_matches_mudata(snare):
    atac = datasets.snareseq_mouse_cortex_atac()
    assert atac.shape == (10309, 25734)
    _assert_raw_counts(atac)
    assert atac.obs_names.equals(snare.obs_names)
    pd.testing.assert_frame_equal(atac.obs[snare.obs.columns], snare.obs)


def test_pbmc_multiome_tiny():
    m = datasets.pbmc_multiome_tiny()
    assert set(m.mod) == {"rna", "atac"}
    assert m["rna"].shape == (1000, 45)
    assert m["atac"].shape == (1000, 174)
    assert m["rna"].obs_names.equals(m["atac"].obs_names)
    for mod in m.mod.values():
        _assert_raw_counts(mod)
    assert "batch" in m.obs


@pytest.mark.parametrize(
    "loader",
    [datasets.kang_pbmc_ifnb, datasets.snareseq_mouse_cortex_rna],
)
def test_anndata_loaders_return_fresh_objects(loader):
    a = loader()
    ref_sum = float(a.X.sum())
    ref_cols = list(a.obs.columns)
    a.X.data[:] = -1.0
    a.layers["counts"].data[:] = -1.0
    a.obs["new_column"] = 1
    a.obs["batch"] = "changed"
    del a.layers["counts"]
    b = loader()
    assert b is not a
    assert float(b.X.sum()) == pytest.approx(ref_sum)
    assert "counts" in b.layers
    assert list(b.obs.columns) == ref_cols
    assert (b.obs["batch"] != "changed").all()


@pytest.mark.parametrize(
    "loader",
    [datasets.snareseq_mouse_cortex, datasets.pbmc_multiome_tiny],
)
def test_mudata_loaders_return_fresh_objects(loader):
    m = loader()
    ref = {k: float(v.X.sum()) for k, v in m.mod.items()}
    for v in m.mod.values():
        v.X.data[:] = 0.0
        v.obs["new_column"] = 1
    m.obs["new_column"] = 1
    m2 = loader()
    assert {k: float(v.X.sum()) for k, v in m2.mod.items()} == pytest.approx(ref)
    assert "new_column" not in m2.obs
    assert all("new_column" not in v.obs for v in m2.mod.values())


def test_list_datasets():
    df = datasets.list_datasets()
    assert isinstance(df, pd.DataFrame)
    expected = {
        "kang_pbmc_ifnb",
        "snareseq_mouse_cortex",
        "snareseq_mouse_cortex_rna",
        "snareseq_mouse_cortex_atac",
        "pbmc_multiome_tiny",
    }
    assert set(df.index) == expected
    for name in df.index:
        assert callable(getattr(datasets, name))
    assert df["available"].all()
    assert df.loc["kang_pbmc_ifnb", "n_cells"] == 1556
    assert {"type", "n_cells", "features", "batch_key", "labels_key", "description"} <= set(
        df.columns
    )


def test_missing_file_names_every_place(monkeypatch, tmp_path):
    monkeypatch.setenv("MIXVI_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        datasets.get_data_path("no_such_dataset.h5ad")
    msg = str(err.value)
    assert str(tmp_path / "no_such_dataset.h5ad") in msg
    assert "_data" in msg  # package folder
    assert "MIXVI_DATA_DIR" in msg
    assert "never downloads" in msg


def test_env_var_takes_precedence(monkeypatch, tmp_path):
    src = datasets.get_data_path("kang_pbmc_ifnb.h5ad")
    dst = tmp_path / "kang_pbmc_ifnb.h5ad"
    dst.write_bytes(src.read_bytes())
    monkeypatch.setenv("MIXVI_DATA_DIR", str(tmp_path))
    assert datasets.get_data_path("kang_pbmc_ifnb.h5ad") == dst
    assert datasets.kang_pbmc_ifnb().shape == (1556, 1267)


def test_env_var_missing_file_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("MIXVI_DATA_DIR", str(tmp_path))  # empty folder
    path = datasets.get_data_path("kang_pbmc_ifnb.h5ad")
    assert path.is_file() and path.parent != tmp_path


def test_loaders_have_docstrings():
    for name in datasets.list_datasets().index:
        doc = getattr(datasets, name).__doc__
        assert doc and "cells" in doc and "obs" in doc


def test_empty_cells_and_features_as_shipped(kang, snare):
    """The files are shipped unfiltered: models must handle (or drop) these."""
    from mixvi.data import check_empty

    assert [int(m.sum()) for m in check_empty(kang, warn=False)] == [0, 0]
    assert [int(m.sum()) for m in check_empty(snare["rna"], warn=False)] == [0, 0]
    # 990 of the 25,734 SNARE-seq peaks hold no fragment in any of the 10,309 cells
    assert [int(m.sum()) for m in check_empty(snare["atac"], warn=False)] == [0, 990]
    tiny = datasets.pbmc_multiome_tiny()
    assert [int(m.sum()) for m in check_empty(tiny["rna"], warn=False)] == [0, 0]
    # 19 of the 1,000 tiny-multiome cells have no ATAC fragment in the 174 peaks
    assert [int(m.sum()) for m in check_empty(tiny["atac"], warn=False)] == [19, 2]
