"""Tiny AnnData / MuData inputs for the validation tests."""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

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
