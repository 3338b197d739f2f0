"""Test helpers: tiny synthetic count data and quiet training options."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

FAST_TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def lognormalize(adata: ad.AnnData) -> ad.AnnData:
    """The scanpy layout: ``.X`` = normalize_total + log1p of ``layers["counts"]`` (in place)."""
    import scanpy as sc

    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    adata.uns.pop("log1p", None)
    return adata


def tfidf(adata: ad.AnnData) -> ad.AnnData:
    """The usual ATAC ``.X``: TF-IDF of ``layers["counts"]`` (non-integer), in place."""
    counts = sp.csr_matrix(adata.layers["counts"], dtype=np.float32)
    tf = sp.diags(1.0 / np.maximum(np.asarray(counts.sum(1)).ravel(), 1)) @ counts
    idf = np.log1p(counts.shape[0] / np.maximum(np.asarray((counts > 0).sum(0)).ravel(), 1))
    adata.X = sp.csr_matrix(tf @ sp.diags(idf), dtype=np.float32)
    return adata


def make_counts(
    n_cells: int = 240,
    n_genes: int = 60,
    n_types: int = 3,
    n_batches: int = 2,
    seed: int = 0,
    batch_shift: float = 0.5,
    layout: str = "scanpy",
) -> ad.AnnData:
    """Negative-binomial-like counts with cell-type programs and a multiplicative batch effect.

    Returns an AnnData with integer float32 CSR counts in ``.layers["counts"]`` and, with
    ``layout="scanpy"`` (the default, what most users hold), a log-normalised ``.X``; with
    ``layout="counts"``, ``.X`` holds the counts too. ``obs["batch"]`` and
    ``obs["cell_type"]`` are categorical.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    batches = rng.integers(0, n_batches, n_cells)
    programs = rng.gamma(0.6, 1.0, (n_types, n_genes)) * 3
    batch_effect = np.exp(rng.normal(0, batch_shift, (n_batches, n_genes)))
    size = rng.lognormal(0, 0.3, n_cells)[:, None]
    mean = programs[types] * batch_effect[batches] * size
    counts = rng.poisson(rng.gamma(4.0, mean / 4.0)).astype(np.float32)
    counts[:, 0] += 1  # no empty cells
    X = sp.csr_matrix(counts)
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(
            {
                "batch": pd.Categorical([f"b{b}" for b in batches]),
                "cell_type": pd.Categorical([f"t{t}" for t in types]),
            },
            index=[f"cell{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
    )
    adata.layers["counts"] = X.copy()
    if layout == "scanpy":
        lognormalize(adata)
    elif layout != "counts":
        raise ValueError(f"layout must be 'scanpy' or 'counts', got {layout!r}.")
    return adata


def history(model, key: str) -> np.ndarray:
    """One logged metric per epoch from ``model.history`` as a float array."""
    return np.asarray(model.history[key][key].to_numpy(), dtype=float)


def tiny_multimixvi(md=None, layout: str = "counts", **model_kwargs):
    """A small MultiMixVI on ``pbmc_multiome_tiny`` (or ``md``), set up and untrained.

    ``layout="scanpy"`` keeps the counts in ``layers["counts"]`` (registered) with a
    log-normalised RNA ``.X`` and a TF-IDF ATAC ``.X``, as users hold them; ``"counts"``
    registers ``.X`` (= counts). Returns ``(model, md)``; scvi's seed is set to 0.
    """
    import scvi

    import mixvi

    scvi.settings.seed = 0
    md = mixvi.datasets.pbmc_multiome_tiny() if md is None else md
    layers = {}
    if layout == "scanpy":
        lognormalize(md["rna"])
        tfidf(md["atac"])
        layers = {"rna_layer": "counts", "atac_layer": "counts"}
    mixvi.MultiMixVI.setup_mudata(md, batch_key="batch", **layers)
    kwargs = {"n_latent": 8, "n_components": 5, "n_hidden": 32, **model_kwargs}
    return mixvi.MultiMixVI(md, **kwargs), md
