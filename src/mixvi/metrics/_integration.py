"""All lightweight scIB-style integration metrics in one call (no jax needed).

These approximate scib-metrics' :class:`~scib_metrics.benchmark.Benchmarker` defaults;
use :func:`mixvi.metrics.scib_benchmark` for the reference numbers. Differences:

- kNN graphs are exact (sklearn) instead of approximate (pynndescent): iLISI, cLISI and
  graph connectivity can differ slightly on large data, identical on the same graph.
- k-means NMI/ARI use sklearn's ``KMeans`` (k = number of labels, fixed seed, 10 inits)
  instead of scib-metrics' jax k-means (one init); values may differ by a few hundredths.
- Batch metrics differ in kind: scib-metrics 0.5.10's Benchmarker scores BRAS, iLISI,
  kBET, graph connectivity and PCR comparison (no batch ASW); here ``batch_score`` is the
  mean of batch ASW, iLISI and graph connectivity, so it is *not* Benchmarker's "Batch
  correction" number. The five bio metrics are the Benchmarker defaults, so ``bio_score``
  tracks its "Bio conservation" closely. Neither score is min-max scaled across methods.
  Compare methods with the same function, never across the two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from ._clustering import cluster_agreement
from ._graph_connectivity import _graph_connectivity_from_knn
from ._lisi import _clisi_from_knn, _ilisi_from_knn
from ._silhouette import _isolated_from_samples, _silhouette_samples, silhouette_batch
from ._utils import as_embedding, as_labels, knn

BATCH_METRICS = ("silhouette_batch", "ilisi", "graph_connectivity")
BIO_METRICS = ("silhouette_label", "clisi", "isolated_labels", "nmi_kmeans", "ari_kmeans")


def integration_scores(
    emb: np.ndarray,
    batch: Any,
    labels: Any,
    n_neighbors: int = 90,
    random_state: int = 0,
) -> dict[str, float]:
    """Batch-correction and bio-conservation scores of one embedding, scIB style.

    Parameters
    ----------
    emb
        Integrated embedding, shape (n_cells, d) (e.g. ``adata.obsm["X_mixvi"]``).
    batch
        Batch of each cell, shape (n_cells,).
    labels
        Cell-type labels, shape (n_cells,).
    n_neighbors
        kNN size for the LISI scores (scib-metrics: 90, clipped to n_cells); graph
        connectivity uses the first 15 of these neighbours, as scib-metrics does.
    random_state
        Seed of the k-means used for NMI/ARI.

    Returns
    -------
    dict
        Batch metrics ``silhouette_batch``, ``ilisi``, ``graph_connectivity``; bio metrics
        ``silhouette_label``, ``clisi``, ``isolated_labels``, ``nmi_kmeans``,
        ``ari_kmeans``; ``batch_score`` and ``bio_score`` (unweighted means of each group,
        NaN-skipping) and ``total`` = 0.4 * batch + 0.6 * bio (scIB weighting). All in
        [0, 1] (ARI can dip below 0), higher is better.
    """
    emb = as_embedding(emb, "emb")
    batch = as_labels(batch, emb.shape[0], "batch").astype(str)
    labels = as_labels(labels, emb.shape[0]).astype(str)

    # One kNN search serves LISI (k) and graph connectivity (first 15), as in Benchmarker.
    dist, idx = knn(emb, n_neighbors)
    # Label silhouettes are shared by the label ASW and the isolated-label score.
    sil = _silhouette_samples(emb, labels)
    n_labels = np.unique(labels).size
    km = KMeans(n_clusters=n_labels, n_init=10, random_state=random_state).fit(emb)
    agreement = cluster_agreement(km.labels_, labels)

    scores = {
        "silhouette_batch": silhouette_batch(emb, batch, labels),
        "ilisi": _ilisi_from_knn(dist, idx, batch, scale=True),
        "graph_connectivity": _graph_connectivity_from_knn(idx[:, :15], labels),
        "silhouette_label": float((np.mean(sil) + 1) / 2),
        "clisi": _clisi_from_knn(dist, idx, labels, scale=True),
        "isolated_labels": _isolated_from_samples(sil, labels, batch),
        "nmi_kmeans": agreement["nmi"],
        "ari_kmeans": agreement["ari"],
    }
    scores["batch_score"] = float(np.nanmean([scores[m] for m in BATCH_METRICS]))
    scores["bio_score"] = float(np.nanmean([scores[m] for m in BIO_METRICS]))
    scores["total"] = 0.4 * scores["batch_score"] + 0.6 * scores["bio_score"]
    return scores
