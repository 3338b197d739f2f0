"""Diagnostics of a trained embedding: can the batch still be told from it?

:func:`batch_predictability` is the cross-validated balanced accuracy of a kNN batch
classifier on the embedding; ``mixvi fit`` and ``mixvi fit-multi`` warn when it says the
batches are not mixed at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def batch_predictability(
    latent: np.ndarray,
    batch: Sequence[Any] | np.ndarray,
    *,
    n_neighbors: int = 15,
    max_cells: int = 3000,
    n_splits: int = 5,
    seed: int = 0,
) -> float:
    """How well the batch of a cell can be predicted from its embedding.

    The balanced accuracy (mean recall over batches; ``1 / n_batches`` is chance) of a
    distance-weighted ``n_neighbors``-nearest-neighbour classifier, ``n_splits``-fold
    stratified cross-validated, on at most ``max_cells`` cells drawn in proportion to the
    batches (at least ``n_splits`` of each; distance weights let a small batch that sits
    apart be recognised although it has fewer cells than ``n_neighbors``).
    Well-mixed batches of the same cell types score near chance; a value above about 0.95
    means the embedding still separates the batches almost perfectly (expected when the
    batches differ in biology, e.g. treated vs control, a failure of integration when they
    are technical replicates).

    Parameters
    ----------
    latent
        Embedding, shape ``(n_cells, n_dims)``.
    batch
        Batch of each cell, shape ``(n_cells,)``.
    n_neighbors
        Neighbours of the kNN classifier.
    max_cells
        Cells used at most (a stratified subsample); a few thousand take seconds.
    n_splits
        Cross-validation folds.
    seed
        Seed of the subsample and of the folds.

    Returns
    -------
    Balanced accuracy in ``[0, 1]``.

    Raises
    ------
    ValueError
        With mismatched lengths, non-finite values, or fewer than two batches of at least
        ``n_splits`` cells each.
    """
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(latent, dtype=np.float64)
    y = np.asarray(batch).astype(str)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"latent must be (n_cells, n_dims) with one batch per cell; got shapes {x.shape} "
            f"and {y.shape}."
        )
    if not np.isfinite(x).all():
        raise ValueError("latent holds NaN or infinite values.")
    names, counts = np.unique(y, return_counts=True)
    keep_batches = names[counts >= n_splits]
    if len(keep_batches) < 2:
        raise ValueError(
            f"batch_predictability needs at least two batches with {n_splits} or more cells; "
            f"got {dict(zip(names.tolist(), counts.tolist()))}."
        )
    keep = np.isin(y, keep_batches)
    x, y = x[keep], y[keep]
    if len(y) > max_cells:  # in proportion to the batches, at least n_splits cells each
        rng = np.random.default_rng(seed)
        chosen = []
        for name in keep_batches:
            members = np.flatnonzero(y == name)
            take = max(n_splits, round(max_cells * len(members) / len(y)))
            chosen.append(rng.choice(members, min(take, len(members)), replace=False))
        rows = np.sort(np.concatenate(chosen))
        x, y = x[rows], y[rows]
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    k = max(1, min(n_neighbors, len(y) - len(y) // n_splits - 1))
    knn = KNeighborsClassifier(n_neighbors=k, weights="distance")
    pred = cross_val_predict(knn, x, y, cv=folds)
    return float(balanced_accuracy_score(y, pred))


__all__ = ["batch_predictability"]
