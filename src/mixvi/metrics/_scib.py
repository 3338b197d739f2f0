"""Thin wrapper over scib-metrics' Benchmarker, the reference integration benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from anndata import AnnData


def scib_benchmark(
    adata: AnnData,
    embedding_keys: Sequence[str],
    batch_key: str,
    label_key: str,
    pre_integrated_embedding_obsm_key: str = "X_pca",
    n_jobs: int = 1,
    layer: str | None = None,
    n_comps: int = 50,
    bio_conservation_metrics: Any | None = None,
    batch_correction_metrics: Any | None = None,
    progress_bar: bool = False,
) -> pd.DataFrame:
    """Run :class:`scib_metrics.benchmark.Benchmarker` on embeddings stored in ``adata.obsm``.

    ``adata`` is not modified: Benchmarker runs on a light AnnData holding only the two
    ``.obs`` columns and the needed ``.obsm`` arrays.

    Parameters
    ----------
    adata
        AnnData with ``n_cells`` cells; each ``adata.obsm[key]`` has shape (n_cells, d_key).
    embedding_keys
        ``.obsm`` keys of the integrated embeddings to compare (e.g. ``["X_mixvi",
        "X_scVI", "X_pca"]``).
    batch_key, label_key
        ``.obs`` columns with the batch and the cell-type label.
    pre_integrated_embedding_obsm_key
        ``.obsm`` key of an unintegrated embedding, shape (n_cells, d), used by the PCR
        comparison metric. If absent from ``adata.obsm``, a PCA (``n_comps`` components,
        arpack, all genes, as Benchmarker does) of ``adata.X`` (or ``layer``) is computed
        for the benchmark only; that matrix should be normalised and log-transformed.
    n_jobs
        Threads for pynndescent's neighbour search.
    layer
        Layer used for the fallback PCA instead of ``adata.X``.
    n_comps
        Components of the fallback PCA.
    bio_conservation_metrics, batch_correction_metrics
        ``scib_metrics.benchmark.BioConservation`` / ``BatchCorrection`` instances; default:
        scib-metrics' defaults.
    progress_bar
        Show Benchmarker's progress bars.

    Returns
    -------
    pandas.DataFrame
        ``Benchmarker.get_results(min_max_scale=False)``: one row per embedding plus a
        ``"Metric Type"`` row, one column per metric plus the aggregate
        ``Batch correction``, ``Bio conservation`` and ``Total`` scores (un-scaled).

    Raises
    ------
    ImportError
        If scib-metrics is not installed (``pip install "mixvi[bench]"``).
    """
    try:  # lazy: scib-metrics pulls jax, which the rest of mixvi does not need
        from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation
    except ImportError as err:
        raise ImportError(
            'scib_benchmark needs scib-metrics; install it with `pip install "mixvi[bench]"`.'
        ) from err
    import anndata as ad
    import scanpy as sc

    missing = [k for k in embedding_keys if k not in adata.obsm]
    if missing:
        raise KeyError(f"Embeddings not found in adata.obsm: {missing}.")
    for key in (batch_key, label_key):
        if key not in adata.obs:
            raise KeyError(f"Column {key!r} not found in adata.obs.")

    obsm = {k: np.asarray(adata.obsm[k]) for k in embedding_keys}
    if pre_integrated_embedding_obsm_key in adata.obsm:
        obsm[pre_integrated_embedding_obsm_key] = np.asarray(
            adata.obsm[pre_integrated_embedding_obsm_key]
        )
    else:
        # Giving scanpy the bare matrix returns the scores and leaves adata untouched.
        data = adata.layers[layer] if layer is not None else adata.X
        n_comps = int(min(n_comps, min(data.shape) - 1))
        obsm[pre_integrated_embedding_obsm_key] = sc.pp.pca(
            data, n_comps=n_comps, svd_solver="arpack"
        )
    light = ad.AnnData(
        X=np.zeros((adata.n_obs, 0), dtype=np.float32),
        obs=adata.obs[[batch_key, label_key]].copy(),
        obsm=obsm,
    )

    bm = Benchmarker(
        light,
        batch_key=batch_key,
        label_key=label_key,
        embedding_obsm_keys=list(embedding_keys),
        bio_conservation_metrics=bio_conservation_metrics or BioConservation(),
        batch_correction_metrics=batch_correction_metrics or BatchCorrection(),
        pre_integrated_embedding_obsm_key=pre_integrated_embedding_obsm_key,
        n_jobs=n_jobs,
        progress_bar=progress_bar,
    )
    bm.benchmark()
    return bm.get_results(min_max_scale=False)
