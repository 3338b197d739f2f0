"""Evaluation metrics for integration, clustering and cross-modal translation.

Integration (batch correction / bio conservation) is scored by scib-metrics itself:
mixvi has no scIB formulas of its own. The other metrics are what scib-metrics lacks;
they are pure numpy / scipy / scikit-learn and score any method's output.

Integration benchmark (scib-metrics' ``Benchmarker``, exact sklearn kNN, un-scaled)
    :func:`integration_scores` (one embedding, a dict keyed by Benchmarker's column
    names: ``"iLISI"``, ``"KBET"``, ..., ``"Batch correction"``, ``"Bio conservation"``,
    ``"Total"``), :func:`scib_benchmark` (several embeddings, a DataFrame)
Cross-modal alignment (paired cells, row i of ``x`` is the partner of row i of ``y``)
    :func:`foscttm`, :func:`foscttm_per_cell`, :func:`matching_accuracy`
Label transfer
    :func:`label_transfer`
Translation quality (always report beside :func:`mean_profile_baseline`)
    :func:`rna_translation_metrics`, :func:`atac_translation_metrics`,
    :func:`mean_profile_baseline`
Clustering (e.g. mixture clusters against cell types)
    :func:`cluster_agreement`

scib-metrics (and jax) is imported only when an integration metric is first called.
"""

from ._alignment import foscttm, foscttm_per_cell, matching_accuracy
from ._clustering import cluster_agreement, cluster_calibration
from ._label_transfer import label_transfer
from ._scib import integration_scores, scib_benchmark
from ._translation import atac_translation_metrics, mean_profile_baseline, rna_translation_metrics

__all__ = [
    "atac_translation_metrics",
    "cluster_agreement",
    "cluster_calibration",
    "foscttm",
    "foscttm_per_cell",
    "integration_scores",
    "label_transfer",
    "matching_accuracy",
    "mean_profile_baseline",
    "rna_translation_metrics",
    "scib_benchmark",
]
