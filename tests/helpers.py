"""Test helpers: tiny synthetic count data and quiet training options."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

FAST_TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def make_counts(
    n_cells: int = 240,
    n_genes: int = 60,
    n_types: int = 3,
    n_batches: int = 2,
    seed: int = 0,
    batch_shift: float = 0.5,
) -> ad.AnnData:
    """Negative-binomial-like counts with cell-type programs and a multiplicative batch effect.

    Returns an AnnData with integer float32 CSR counts in ``.X`` and ``.layers["counts"]``,
    ``obs["batch"]`` and ``obs["cell_type"]`` (categorical).
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
    return adata


def history(model, key: str) -> np.ndarray:
    """One logged metric per epoch from ``model.history`` as a float array."""
    return np.asarray(model.history[key][key].to_numpy(), dtype=float)
