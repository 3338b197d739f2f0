"""The scanpy workflow on an embedding of more than 4,096 cells (the size at which an
incompatible pynndescent / scanpy pair used to crash in ``sc.pp.neighbors``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp


def test_neighbors_umap_leiden_above_4096_cells():
    rng = np.random.default_rng(0)
    n = 10_309  # the size of the shipped SNARE-seq data
    centres = rng.normal(0, 6, (5, 16))
    labels = rng.integers(0, 5, n)
    adata = ad.AnnData(sp.random(n, 50, density=0.05, format="csr", dtype=np.float32, rng=rng))
    adata.obsm["X_mixvi"] = (centres[labels] + rng.normal(0, 1, (n, 16))).astype(np.float32)
    sc.pp.neighbors(adata, use_rep="X_mixvi", random_state=0)
    sc.tl.umap(adata, random_state=0, maxiter=50)
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, resolution=0.1, random_state=0)
    assert adata.obsp["connectivities"].shape == (n, n)
    assert adata.obsm["X_umap"].shape == (n, 2) and np.isfinite(adata.obsm["X_umap"]).all()
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(labels, adata.obs["leiden"]) > 0.9
