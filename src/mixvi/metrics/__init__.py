"""Evaluation metrics for integration, clustering and cross-modal translation.

Pure numpy / scipy / scikit-learn (no torch, no jax), so they can score any method's
output. Only :func:`scib_benchmark` needs the optional ``scib-metrics`` dependency.

Cross-modal alignment (paired cells, row i of ``x`` is the partner of row i of ``y``)
    :func:`foscttm`, :func:`foscttm_per_cell`, :func:`matching_accuracy`
Label transfer
    :func:`label_transfer`
Translation quality (always report beside :func:`mean_profile_baseline`)
    :func:`rna_translation_metrics`, :func:`atac_translation_metrics`,
    :func:`mean_profile_baseline`
Clustering
    :func:`cluster_agreement`
Batch mixing / bio conservation (lightweight scIB formulas)
    :func:`silhouette_batch`, :func:`silhouette_label`, :func:`isolated_labels`,
    :func:`ilisi`, :func:`clisi`, :func:`lisi_from_knn`, :func:`graph_connectivity`,
    :func:`integration_scores`
Reference benchmark (scib-metrics)
    :func:`scib_benchmark`
"""

from ._alignment import foscttm, foscttm_per_cell, matching_accuracy
from ._clustering import cluster_agreement
from ._graph_connectivity import graph_connectivity
from ._integration import integration_scores
from ._label_transfer import label_transfer
from ._lisi import clisi, ilisi, lisi_from_knn
from ._scib import scib_benchmark
from ._silhouette import isolated_labels, silhouette_batch, silhouette_label
from ._translation import atac_translation_metrics, mean_profile_baseline, rna_translation_metrics

__all__ = [
    "foscttm",
    "foscttm_per_cell",
    "matching_accuracy",
    "label_transfer",
    "rna_translation_metrics",
    "atac_translation_metrics",
    "mean_profile_baseline",
    "cluster_agreement",
    "silhouette_batch",
    "silhouette_label",
    "isolated_labels",
    "ilisi",
    "clisi",
    "lisi_from_knn",
    "graph_connectivity",
    "integration_scores",
    "scib_benchmark",
]
