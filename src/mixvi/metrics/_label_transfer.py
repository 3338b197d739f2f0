"""kNN label transfer from a reference embedding to a query embedding."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier

from ._utils import as_embedding, as_labels, keep_mask


def label_transfer(
    ref_emb: np.ndarray,
    ref_labels: Any,
    query_emb: np.ndarray,
    query_labels: Any | None = None,
    n_neighbors: int = 15,
    exclude: Iterable[Any] = (),
) -> dict[str, Any]:
    """Transfer labels from reference to query cells by kNN majority vote.

    Typical use across modalities: ``ref_emb`` = RNA latent of labelled cells,
    ``query_emb`` = ATAC latent of other cells, both in the shared space.

    Parameters
    ----------
    ref_emb
        Reference embedding, shape (n_ref, d).
    ref_labels
        Reference labels, shape (n_ref,).
    query_emb
        Query embedding, shape (n_query, d), in the same space as ``ref_emb``.
    query_labels
        Optional true query labels, shape (n_query,), used for scoring only.
    n_neighbors
        Neighbours voting (clipped to n_ref). Uniform weights; sklearn breaks ties
        towards the label that sorts first.
    exclude
        True labels (e.g. ``"Mis"`` for mis-annotated / unknown cells) whose query cells are
        dropped from the scores. They still receive predictions; the reference is not
        filtered (filter it yourself if those labels must not be predicted).

    Returns
    -------
    dict
        ``predictions`` (n_query,) predicted labels; ``confidence`` (n_query,) fraction of
        the neighbours voting for the prediction. When ``query_labels`` is given, also
        ``accuracy``, ``macro_f1`` (unweighted mean of per-label F1 over the labels present
        in the scored truth or predictions) and ``n_scored`` (cells kept after ``exclude``).
    """
    ref = as_embedding(ref_emb, "ref_emb")
    query = as_embedding(query_emb, "query_emb")
    if ref.shape[1] != query.shape[1]:
        raise ValueError(
            "Reference and query embeddings differ in dimension: "
            f"{ref.shape[1]} vs {query.shape[1]}."
        )
    ref_y = as_labels(ref_labels, ref.shape[0], "ref_labels")

    clf = KNeighborsClassifier(n_neighbors=int(min(n_neighbors, ref.shape[0])))
    clf.fit(ref, ref_y)
    proba = clf.predict_proba(query)  # (n_query, n_classes), columns in clf.classes_ order
    predictions = clf.classes_[np.argmax(proba, axis=1)]
    out: dict[str, Any] = {"predictions": predictions, "confidence": proba.max(axis=1)}

    if query_labels is not None:
        truth = as_labels(query_labels, query.shape[0], "query_labels")
        keep = keep_mask(truth, exclude)
        out["n_scored"] = int(keep.sum())
        if keep.any():
            # Compare as strings: reference and query labels may come as different dtypes
            # (categorical vs object), which sklearn refuses to mix.
            t, p = truth[keep].astype(str), predictions[keep].astype(str)
            out["accuracy"] = float(accuracy_score(t, p))
            out["macro_f1"] = float(f1_score(t, p, average="macro", zero_division=0))
        else:
            out["accuracy"] = out["macro_f1"] = float("nan")
    return out
