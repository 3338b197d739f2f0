"""Checks run at setup and model creation so bad input fails early and clearly."""

from __future__ import annotations

from collections.abc import Mapping

from anndata import AnnData

from mixvi.data import (
    check_dense_size,
    check_empty,
    check_n_categories,
    check_n_components,
    check_obs_key,
    validate_counts,
)


def validate_setup(
    adata: AnnData,
    layer: str | None = None,
    obs_keys: Mapping[str, str | None] | None = None,
    labels_key: str | None = None,
    unlabeled_category: str | None = None,
    n_components: int | None = None,
    modality: str = "RNA",
    check_counts: bool = True,
) -> None:
    """Validate an AnnData before registering it or building a model on it.

    Parameters
    ----------
    adata
        The user's AnnData (never modified).
    layer
        Layer with the raw counts (``None`` = ``.X``).
    obs_keys
        ``{argument name: .obs column}``; ``None`` columns are skipped.
    labels_key, unlabeled_category
        A label column must have at least two known categories besides the
        unlabelled one.
    n_components
        Mixture components, checked against the number of cells.
    modality
        Name used in messages (``"RNA"``, ``"ATAC"``).
    check_counts
        Check the matrix holds finite, non-negative integer counts.
    """
    if check_counts:
        check_dense_size(adata, layer)
        validate_counts(adata, layer, modality=modality)
        check_empty(adata, layer, modality=modality)
    for role, key in (obs_keys or {}).items():
        if key is not None:
            check_obs_key(adata, key, role=role)
    if labels_key is not None:
        check_n_categories(
            adata, labels_key, role="labels_key", min_categories=2,
            unlabeled_category=unlabeled_category,
        )
    if n_components is not None:
        check_n_components(n_components, adata.n_obs)
