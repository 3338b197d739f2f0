"""Integration metrics from scib-metrics: its Benchmarker, run on an exact sklearn kNN.

mixvi carries no scIB formulas of its own. :func:`integration_scores` (one embedding) and
:func:`scib_benchmark` (several) both run :class:`scib_metrics.benchmark.Benchmarker` on
a light AnnData and return its un-scaled numbers under its own column names.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._utils import knn

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from anndata import AnnData

# Benchmarker's largest neighbourhood (its kNN sizes are 15, 50 and 90).
_MAX_NEIGHBORS = 90
Neighbors = Literal["exact", "pynndescent"]


def _import_benchmark() -> tuple[Any, Any, Any]:
    """``(Benchmarker, BioConservation, BatchCorrection)``, imported lazily.

    scib-metrics pulls jax, umap and pynndescent (about 10 s to import on a laptop), which
    ``import mixvi`` should not pay.
    """
    try:
        from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation
    except ImportError as err:
        raise ImportError(
            "mixvi's integration metrics need scib-metrics, a mixvi dependency; reinstall "
            "mixvi or run `pip install scib-metrics`."
        ) from err
    return Benchmarker, BioConservation, BatchCorrection


def _exact_neighbors(x: np.ndarray, n_neighbors: int, n_jobs: int = 1) -> Any:
    """Exact euclidean kNN (sklearn, self included) as scib-metrics' ``NeighborsResults``."""
    from scib_metrics.nearest_neighbors import NeighborsResults

    dist, idx = knn(np.asarray(x), n_neighbors, n_jobs=n_jobs)
    return NeighborsResults(indices=idx, distances=dist)


@contextlib.contextmanager
def _quiet_scib() -> Iterator[None]:
    """Silence scib-metrics' and jax's chatter for the duration of one call only.

    scib-metrics sets its own logger to INFO with a rich handler (kBET then prints a
    line per skipped label), jax logs a "no GPU/TPU found" warning when its backend
    starts, and pandas warns about a ``groupby`` default inside isolated labels. The
    previous logger levels and warning filters are restored afterwards.
    """
    names = ("scib_metrics", "jax._src.xla_bridge")
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"scib_metrics")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"scib_metrics")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _frozen_gc() -> Iterator[None]:
    """Make Benchmarker's ``gc.collect()`` calls cheap for the duration of one call.

    Benchmarker runs ``gc.collect()`` before every metric; with torch, scvi-tools and jax
    loaded each full collection takes most of a second, about 9 of the 11 s a warm
    Kang-sized call would take. :func:`gc.freeze` moves the objects that exist now to
    the permanent generation, so those collections only scan what the benchmark itself
    allocates; :func:`gc.unfreeze` puts them back afterwards. Numbers are unaffected.
    Skipped if the caller has frozen objects already (their freeze is left alone).
    """
    if gc.get_freeze_count() > 0:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _check_inputs(
    adata: AnnData,
    embedding_keys: Sequence[str],
    batch_key: str,
    label_key: str,
    pre_integrated_key: str,
    layer: str | None,
) -> None:
    """Raise ``KeyError`` / ``ValueError`` naming the first bad key, before any heavy work."""
    for key in embedding_keys:
        if key not in adata.obsm:
            raise KeyError(
                f"Embedding {key!r} not found in adata.obsm (keys: {list(adata.obsm)})."
            )
        emb = np.asarray(adata.obsm[key])
        if emb.ndim != 2:
            raise ValueError(f"adata.obsm[{key!r}] must be 2-D, got shape {emb.shape}.")
        if not np.all(np.isfinite(emb)):
            raise ValueError(f"adata.obsm[{key!r}] contains NaN or infinite values.")
    for key in (batch_key, label_key):
        if key not in adata.obs:
            raise KeyError(f"Column {key!r} not found in adata.obs.")
        if adata.obs[key].isna().any():
            raise ValueError(f"Column {key!r} of adata.obs has missing values.")
    if pre_integrated_key not in adata.obsm and layer is not None and layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} (for the PCA fallback of {pre_integrated_key!r}) not found in "
            f"adata.layers (keys: {list(adata.layers)})."
        )
    if adata.n_obs <= _MAX_NEIGHBORS:
        raise ValueError(
            f"scib-metrics' Benchmarker needs more than {_MAX_NEIGHBORS} cells (its largest "
            f"kNN graph), got {adata.n_obs}."
        )


def _pre_integrated(
    adata: AnnData, key: str, layer: str | None, log_normalize: bool, n_comps: int
) -> np.ndarray:
    """``adata.obsm[key]`` if present, else a PCA computed on a copy (adata untouched).

    The fallback is Benchmarker's own: all genes, arpack, zero-centred, after an optional
    ``normalize_total(target_sum=1e4)`` + ``log1p`` of the counts.
    """
    if key in adata.obsm:
        return np.asarray(adata.obsm[key])
    import anndata as ad
    import scanpy as sc

    data = adata.layers[layer] if layer is not None else adata.X
    if log_normalize:
        tmp = ad.AnnData(X=data.copy() if data.dtype.kind == "f" else data.astype(np.float32))
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
        data = tmp.X
    n_comps = int(min(n_comps, min(data.shape) - 1))
    # Giving scanpy the bare matrix returns the scores and leaves adata untouched.
    return sc.pp.pca(data, n_comps=n_comps, svd_solver="arpack")


def _run_benchmarker(
    adata: AnnData,
    embedding_keys: Sequence[str],
    batch_key: str,
    label_key: str,
    pre_integrated_key: str,
    layer: str | None,
    log_normalize: bool,
    n_comps: int,
    bio_conservation_metrics: Any | None,
    batch_correction_metrics: Any | None,
    neighbors: Neighbors,
    n_jobs: int,
    progress_bar: bool,
) -> pd.DataFrame:
    """Shared body of :func:`scib_benchmark` and :func:`integration_scores`."""
    embedding_keys = list(embedding_keys)
    if neighbors not in ("exact", "pynndescent"):
        raise ValueError(f"`neighbors` must be 'exact' or 'pynndescent', got {neighbors!r}.")
    _check_inputs(adata, embedding_keys, batch_key, label_key, pre_integrated_key, layer)
    Benchmarker, BioConservation, BatchCorrection = _import_benchmark()
    import anndata as ad

    obsm = {k: np.asarray(adata.obsm[k]) for k in embedding_keys}
    obsm[pre_integrated_key] = _pre_integrated(
        adata, pre_integrated_key, layer, log_normalize, n_comps
    )
    light = ad.AnnData(
        X=np.zeros((adata.n_obs, 0), dtype=np.float32),
        obs=adata.obs[list(dict.fromkeys([batch_key, label_key]))].copy(),
        obsm=obsm,
    )
    computer: Callable[[np.ndarray, int], Any] | None = None
    if neighbors == "exact":

        def computer(x: np.ndarray, n: int) -> Any:
            return _exact_neighbors(x, n, n_jobs=n_jobs)

    with _quiet_scib(), _frozen_gc():
        bm = Benchmarker(
            light,
            batch_key=batch_key,
            label_key=label_key,
            embedding_obsm_keys=embedding_keys,
            bio_conservation_metrics=(
                BioConservation() if bio_conservation_metrics is None else bio_conservation_metrics
            ),
            batch_correction_metrics=(
                BatchCorrection() if batch_correction_metrics is None else batch_correction_metrics
            ),
            pre_integrated_embedding_obsm_key=pre_integrated_key,
            n_jobs=n_jobs,
            progress_bar=progress_bar,
        )
        bm.prepare(neighbor_computer=computer)
        bm.benchmark()
        return bm.get_results(min_max_scale=False)


def integration_scores(
    adata: AnnData,
    embedding_key: str = "X_mixvi",
    batch_key: str = "batch",
    label_key: str = "cell_type",
    pre_integrated_key: str = "X_pca",
    layer: str | None = None,
    log_normalize: bool = False,
    n_comps: int = 50,
    bio_conservation_metrics: Any | None = None,
    batch_correction_metrics: Any | None = None,
    neighbors: Neighbors = "exact",
    n_jobs: int = 1,
) -> dict[str, float]:
    """scib-metrics' integration scores of one embedding, under Benchmarker's names.

    Runs :class:`scib_metrics.benchmark.Benchmarker` (default ``BioConservation()`` and
    ``BatchCorrection()`` metric sets) on ``adata.obsm[embedding_key]`` and returns its
    row of ``get_results(min_max_scale=False)``: the same numbers Benchmarker reports
    for this embedding, **not min-max scaled** across methods, so they do not depend on
    which other methods are compared. The kNN graphs (15, 50 and 90 neighbours) come
    from an exact sklearn search passed to ``Benchmarker.prepare(neighbor_computer=...)``,
    so results are deterministic; ``neighbors="pynndescent"`` uses Benchmarker's own
    approximate search instead. ``adata`` is never modified.

    Parameters
    ----------
    adata
        AnnData with ``n_cells`` > 90 cells.
    embedding_key
        ``.obsm`` key of the integrated embedding, shape (n_cells, d).
    batch_key, label_key
        ``.obs`` columns with the batch and the cell-type label of each cell.
    pre_integrated_key
        ``.obsm`` key of an unintegrated embedding, shape (n_cells, d_pre), needed by
        "PCR comparison" (e.g. PCA of log-normalised expression). If the key is absent, a
        PCA with ``n_comps`` components (arpack, all genes, as Benchmarker does) of
        ``adata.X`` or ``layer`` is computed on a copy; nothing is written back.
    layer
        Layer used by the PCA fallback instead of ``adata.X``.
    log_normalize
        The fallback's matrix holds counts: normalise each cell to 10,000 counts and
        ``log1p`` it (on a copy) before the PCA. Leave ``False`` if it is already
        log-normalised.
    n_comps
        Components of the fallback PCA (clipped to ``min(n_cells, n_genes) - 1``).
    bio_conservation_metrics, batch_correction_metrics
        ``scib_metrics.benchmark.BioConservation`` / ``BatchCorrection`` instances to run
        other metric sets; default: scib-metrics' defaults.
    neighbors
        ``"exact"`` (sklearn) or ``"pynndescent"`` (Benchmarker's default search).
    n_jobs
        Threads of the neighbour search.

    Returns
    -------
    dict
        ``{name: float}`` in Benchmarker's column order. With the default metric sets
        (scib-metrics 0.5.10): bio conservation ``"Isolated labels"``, ``"KMeans NMI"``,
        ``"KMeans ARI"``, ``"Silhouette label"``, ``"cLISI"``; batch correction
        ``"BRAS"``, ``"iLISI"``, ``"KBET"``, ``"Graph connectivity"``,
        ``"PCR comparison"``; aggregates ``"Batch correction"`` and
        ``"Bio conservation"`` (means of each group, NaN-skipping) and ``"Total"``
        (0.4 * batch + 0.6 * bio). Higher is better; all in [0, 1] except that ARI can dip
        below 0. A metric scib-metrics cannot compute is NaN.

    Raises
    ------
    KeyError
        If ``embedding_key``, ``batch_key``, ``label_key`` or (for the fallback) ``layer``
        is missing; the message names it.
    ValueError
        If the embedding has NaNs, a column has missing values or there are <= 90 cells.

    Notes
    -----
    Runtime is dominated by one-off compilation (jax for the metrics, numba for umap's
    and pynndescent's code inside kBET): the first call in a Python process took 65-80 s
    on Kang-sized data (1,556 cells, 5 labels) on 2 shared CPU cores, about 10 s of it
    importing scib-metrics. Later calls in the same process took 3 s (same embedding
    width) to 6 s (a new width: jax recompiles per array shape). For 10,309 cells and 20
    labels (SNARE-seq-sized, synthetic) the first call took 150 s and later ones 30 s.

    Examples
    --------
    >>> scores = mixvi.metrics.integration_scores(
    ...     adata, "X_mixvi", "batch", "cell_type", layer="counts", log_normalize=True
    ... )
    >>> scores["Batch correction"], scores["Bio conservation"], scores["Total"]
    """
    df = _run_benchmarker(
        adata,
        [embedding_key],
        batch_key,
        label_key,
        pre_integrated_key,
        layer,
        log_normalize,
        n_comps,
        bio_conservation_metrics,
        batch_correction_metrics,
        neighbors,
        n_jobs,
        progress_bar=False,
    )
    row = df.loc[embedding_key]
    return {str(name): float(value) for name, value in row.items()}


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
    log_normalize: bool = False,
    neighbors: Neighbors = "exact",
) -> pd.DataFrame:
    """Run :class:`scib_metrics.benchmark.Benchmarker` on embeddings stored in ``adata.obsm``.

    ``adata`` is not modified: Benchmarker runs on a light AnnData holding only the two
    ``.obs`` columns and the needed ``.obsm`` arrays. Each embedding's row equals
    :func:`integration_scores` of that embedding (same kNN search, no scaling).

    Parameters
    ----------
    adata
        AnnData with ``n_cells`` > 90 cells; each ``adata.obsm[key]`` has shape
        (n_cells, d_key).
    embedding_keys
        ``.obsm`` keys of the integrated embeddings to compare (e.g. ``["X_mixvi",
        "X_scVI", "X_pca"]``).
    batch_key, label_key
        ``.obs`` columns with the batch and the cell-type label.
    pre_integrated_embedding_obsm_key
        ``.obsm`` key of an unintegrated embedding, shape (n_cells, d), used by the PCR
        comparison metric. If absent from ``adata.obsm``, a PCA (``n_comps`` components,
        arpack, all genes, as Benchmarker does) of ``adata.X`` (or ``layer``) is computed
        for the benchmark only; that matrix should be normalised and log-transformed, or
        pass ``log_normalize=True`` for counts.
    n_jobs
        Threads of the neighbour search.
    layer
        Layer used for the fallback PCA instead of ``adata.X``.
    n_comps
        Components of the fallback PCA.
    bio_conservation_metrics, batch_correction_metrics
        ``scib_metrics.benchmark.BioConservation`` / ``BatchCorrection`` instances; default:
        scib-metrics' defaults.
    progress_bar
        Show Benchmarker's progress bars.
    log_normalize
        Normalise (10,000 counts per cell) and ``log1p`` the fallback's matrix first.
    neighbors
        ``"exact"`` (sklearn kNN, deterministic; default) or ``"pynndescent"``
        (Benchmarker's own approximate search).

    Returns
    -------
    pandas.DataFrame
        ``Benchmarker.get_results(min_max_scale=False)``: one row per embedding plus a
        ``"Metric Type"`` row, one column per metric (names as in
        :func:`integration_scores`) plus the aggregate ``Batch correction``,
        ``Bio conservation`` and ``Total`` scores (un-scaled).

    Raises
    ------
    KeyError
        If an embedding, ``batch_key``, ``label_key`` or the fallback ``layer`` is missing.
    ImportError
        If scib-metrics is not installed.
    """
    return _run_benchmarker(
        adata,
        embedding_keys,
        batch_key,
        label_key,
        pre_integrated_embedding_obsm_key,
        layer,
        log_normalize,
        n_comps,
        bio_conservation_metrics,
        batch_correction_metrics,
        neighbors,
        n_jobs,
        progress_bar,
    )
