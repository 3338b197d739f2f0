"""scIB scores of an embedding, as the benchmarks compute them (shared by the scripts)."""

from __future__ import annotations

import numpy as np


def scib_scores(adata, latent: np.ndarray, key: str) -> dict:
    """scib-metrics' un-scaled batch correction, bio conservation and total of ``latent``.

    ``adata``: raw counts in ``layers["counts"]``, ``obs["batch"]`` and ``obs["cell_type"]``
    (``Mis`` cells are left out). The pre-integration reference is the PCA (50 components)
    of the log-normalised counts. Returns ``{"scib_batch_correction": ..., ...}``.
    """
    import scanpy as sc

    from mixvi.metrics import integration_scores

    view = adata.copy()
    view.X = view.layers["counts"].copy()
    sc.pp.normalize_total(view)
    sc.pp.log1p(view)
    sc.pp.pca(view, n_comps=50, random_state=0)
    view.obsm[key] = latent
    keep = view.obs["cell_type"].astype(str).to_numpy() != "Mis"
    view = view[keep].copy()
    scores = integration_scores(view, key, "batch", "cell_type", pre_integrated_key="X_pca")
    return {f"scib_{k.lower().replace(' ', '_')}": v for k, v in scores.items()}
