"""Cluster assignments from the mixture prior, shared by MixVI and MultiMixVI."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from mixvi.model._validation import check_int, check_real
from mixvi.module._keys import QZ_KEY
from mixvi.priors import HierarchicalGaussianMixturePrior

logger = logging.getLogger(__name__)

#: Defaults of the neighbour smoothing of the cluster probabilities (see
#: :func:`smooth_over_neighbours`): scanpy's 15 neighbours; the neighbourhood weighs 4x a cell's
#: own responsibilities (benchmarks/clustering/results.md: 0.7 gains less, 0.9 starts to cost
#: small data its small clusters)
SMOOTHING_NEIGHBORS = 15
SMOOTHING = 0.8
#: With fewer cells than this many times ``n_neighbors`` each cell is left alone: a handful of
#: cells from several types has no neighbourhoods to speak of (measured on Kang: subsets of
#: 10-30 cells, smoothed, disagreed with the full-data clusters for 27 % of the cells against
#: 4-8 % alone; at 300 cells the two were level)
MIN_CELLS_PER_NEIGHBOR = 20
_TOLERANCE = 1e-6
#: Above this many cells the neighbours come from pynndescent's approximate search, as in
#: scanpy (measured on 100,000 cells in 16 dimensions: 6x faster than the exact search, 98 %
#: of the exact neighbours found)
EXACT_NEIGHBORS_MAX_CELLS = 50_000


def _nearest_cells(latent: np.ndarray, k: int) -> np.ndarray:
    """Indices of every cell's ``k`` nearest cells, itself first, shape ``(n_cells, k)``."""
    if latent.shape[0] <= EXACT_NEIGHBORS_MAX_CELLS:
        from mixvi.metrics._utils import knn  # here: mixvi.metrics is not needed to import a model

        return knn(latent, k)[1]
    from pynndescent import NNDescent

    return NNDescent(latent, n_neighbors=k, random_state=0).neighbor_graph[0]


def _check_smoothing(smoothing: float, n_neighbors: int) -> None:
    check_real("smoothing", smoothing, 0.0, 1.0, high_open=True)
    check_int("n_neighbors", n_neighbors)


def smooth_over_neighbours(
    probs: np.ndarray, latent: np.ndarray, n_neighbors: int = SMOOTHING_NEIGHBORS,
    smoothing: float = SMOOTHING, min_cells: int | None = None,
) -> np.ndarray:
    """Spread every cell's cluster probabilities over its nearest cells in the latent.

    Label spreading (Zhou et al. 2004) on the kNN graph: with ``A`` the mean over a cell's
    ``n_neighbors`` nearest cells (itself included; euclidean; exact up to
    ``EXACT_NEIGHBORS_MAX_CELLS`` = 50,000 cells, pynndescent's approximate search above) and
    ``r`` the cells' own probabilities, the result is the fixed point of

    ``p = (1 - smoothing) * r + smoothing * A p``,  i.e.  ``p = (1 - a) (I - a A)^-1 r``,

    computed by iterating to a tolerance of 1e-6. A cell keeps its own evidence and takes
    its neighbourhood's, weighted ``smoothing / (1 - smoothing)`` to 1: a cell in the tail of a
    type, where a broad Gaussian outweighs the type's own component, goes back to the
    component of its neighbours, and the confidence drops where neighbours fall to different
    components. The components stay the clusters. Rows still sum to 1.

    Parameters
    ----------
    probs
        Cluster probabilities, shape ``(n_cells, K)``.
    latent
        Posterior means, shape ``(n_cells, d)``.
    n_neighbors
        Neighbours per cell, the cell included (clipped to ``n_cells``).
    smoothing
        Weight ``a`` of the neighbourhood, in ``[0, 1)``; ``0`` returns ``probs`` unchanged.
    min_cells
        Fewer cells than this return ``probs`` unchanged (default
        ``MIN_CELLS_PER_NEIGHBOR * n_neighbors`` = 300: a few cells of several types have no
        neighbourhood that belongs to one type).

    Returns
    -------
    Smoothed probabilities, shape ``(n_cells, K)``.
    """
    import scipy.sparse as sp

    _check_smoothing(smoothing, n_neighbors)
    n = probs.shape[0]
    k = int(min(n_neighbors, n))
    if min_cells is None:
        min_cells = MIN_CELLS_PER_NEIGHBOR * n_neighbors
    if smoothing == 0 or k < 2 or n < min_cells:
        if smoothing and n < min_cells:
            logger.info("cluster probabilities of each cell alone: %d cells are fewer than the "
                        "%d the neighbour smoothing needs", n, min_cells)
        return probs
    idx = _nearest_cells(np.asarray(latent, dtype=np.float32), k)
    mean = sp.csr_matrix((np.full(idx.size, 1.0 / k), (np.repeat(np.arange(n), k), idx.ravel())),
                         shape=(n, n))
    own = (1.0 - smoothing) * np.asarray(probs, dtype=np.float64)
    out = np.asarray(probs, dtype=np.float64)
    # the error shrinks by `smoothing` per step (A is a mean, so its norm is 1)
    for _ in range(int(np.ceil(np.log(_TOLERANCE) / np.log(smoothing)))):
        out = own + smoothing * (mean @ out)
    return out.astype(probs.dtype, copy=False)


class ClusterMixin:
    """Mixture-component clusters, label prediction and writing results to AnnData.

    The host model provides ``self.module.prior`` and :meth:`_cluster_probabilities`.
    """

    def _cluster_probabilities(
        self, adata: AnnData | None, indices: Sequence[int] | None, batch_size: int | None,
        smoothing: float = SMOOTHING, n_neighbors: int = SMOOTHING_NEIGHBORS,
    ) -> np.ndarray:
        """Probabilities over all prior components, shape ``(n_cells, K)``, smoothed over
        the cells' neighbours in the latent (:func:`smooth_over_neighbours`)."""
        return self._probabilities_and_latent(adata, indices, batch_size, smoothing,
                                              n_neighbors)[0]

    def _probabilities_and_latent(
        self, adata: AnnData | None, indices: Sequence[int] | None, batch_size: int | None,
        smoothing: float = SMOOTHING, n_neighbors: int = SMOOTHING_NEIGHBORS,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_cluster_probabilities` and the posterior means it smooths over -- the
        embedding ``get_latent_representation`` gives -- from one inference pass,
        ``((n_cells, K), (n_cells, n_latent))``."""
        _check_smoothing(smoothing, n_neighbors)  # before the inference pass, not after it
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        module = self.module
        was_training = module.training
        module.eval()
        probs, means = [], []
        with torch.inference_mode():
            for tensors in loader:
                out = module.inference(**module._get_inference_input(tensors))
                probs.append(module.cluster_probabilities(out).cpu().numpy())
                means.append(out[QZ_KEY].loc.cpu().numpy())
        module.train(was_training)
        latent = np.concatenate(means)
        return smooth_over_neighbours(np.concatenate(probs), latent, n_neighbors, smoothing), latent

    def component_names(self) -> list[str]:
        """Name of every prior component: its label (label prior) or its index."""
        K = self.module.prior.n_components
        labels = list(getattr(self, "label_categories_", []) or [])
        names = [str(x) for x in labels]
        return names + [str(k) for k in range(len(names), K)]

    @property
    def cluster_levels(self) -> list[int]:
        """Tree levels with cluster assignments (hierarchical prior), else ``[]``; level
        ``l`` holds ``l + 1`` clusters (the tree's last ``l`` merges undone)."""
        prior = self.module.prior
        if isinstance(prior, HierarchicalGaussianMixturePrior):
            return list(range(1, prior.n_levels + 1))
        return []

    def get_cluster_assignments(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        level: int | None = None,
        smoothing: float = SMOOTHING,
        n_neighbors: int = SMOOTHING_NEIGHBORS,
    ) -> pd.DataFrame:
        """Cluster of each cell: the most probable mixture component.

        Probabilities are the responsibilities
        ``r_k propto pi_k N(mu(x); m_k, s_k^2 + sigma(x)^2)``, the posterior's own
        uncertainty integrated out (or q(c|x) with ``posterior="mixture"``), then spread
        over each cell's ``n_neighbors`` nearest cells in the latent
        (:func:`~mixvi.model.smooth_over_neighbours`): the components are the clusters,
        and a cell between two is assigned with its neighbourhood. On labelled data this
        brought the confidence close to the clusters' purity and raised their agreement
        with the labels where a broad component took the tails of several types
        (``benchmarks/clustering/results.md``).

        Parameters
        ----------
        adata
            AnnData set up like the training data; ``None`` uses the training data.
        indices
            Cells to use; ``None`` uses all. The neighbours are searched among the cells
            given; with fewer than 20 x ``n_neighbors`` cells (300) each cell is left alone.
        batch_size
            Minibatch size for inference.
        level
            Tree level for ``prior="hierarchical"``: level ``l`` has ``l + 1`` clusters,
            the tree's last ``l`` merges undone (``1`` = the root's two children,
            :attr:`cluster_levels` lists them); ``None`` gives the finest level.
        smoothing
            Weight of the neighbourhood against the cell's own responsibilities, in
            ``[0, 1)``; ``0`` gives each cell's responsibilities alone.
        n_neighbors
            Neighbours per cell (the cell included).

        Returns
        -------
        DataFrame indexed by cell with columns ``cluster`` (categorical component
        name), ``confidence`` (max probability) and ``prob_<name>`` for every
        component of that level.
        """
        probs = self._cluster_probabilities(adata, indices, batch_size, smoothing, n_neighbors)
        return self._assignments(probs, adata, indices, level)

    def _assignments(
        self, probs: np.ndarray, adata: AnnData | None, indices: Sequence[int] | None,
        level: int | None,
    ) -> pd.DataFrame:
        """:meth:`get_cluster_assignments` from probabilities over all components."""
        prior = self.module.prior
        names = np.asarray(self.component_names())
        if isinstance(prior, HierarchicalGaussianMixturePrior):
            level = prior.n_levels if level is None else level
            if not 1 <= level <= prior.n_levels:
                raise ValueError(f"level must be in 1..{prior.n_levels}, got {level}.")
            probs, nodes = prior.level_probabilities(probs, level)
            names = names[nodes]
        elif level is not None:
            raise ValueError("level= is only available with prior='hierarchical'.")
        else:  # switched-off components (n_components="auto", pruned) hold no cells
            in_use = prior.active.cpu().numpy() if hasattr(prior, "active") else None
            if in_use is not None and probs.shape[1] == len(in_use):
                probs, names = probs[:, in_use], names[in_use]
        adata = self._validate_anndata(adata)
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        best = probs.argmax(1)
        cluster = pd.Categorical(names[best], categories=[n for n in names if n in set(names[best])])
        frame = pd.DataFrame(
            {"cluster": cluster, "confidence": probs.max(1)}, index=obs_names.copy()
        )
        prob_frame = pd.DataFrame(probs, index=frame.index, columns=[f"prob_{n}" for n in names])
        return pd.concat([frame, prob_frame], axis=1)

    def mixture_summary(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """The mixture's components in use: one row per cluster.

        Parameters
        ----------
        adata, batch_size
            As in :meth:`get_cluster_assignments`.

        Returns
        -------
        DataFrame indexed by component name with ``weight`` (the prior's pi_k),
        ``n_cells`` (cells assigned), ``mean_confidence`` and, for a label prior,
        ``label``; sorted by ``n_cells``. ``len(summary)`` is the number of clusters.
        """
        clusters = self.get_cluster_assignments(adata, batch_size=batch_size)
        prior = self.module.prior
        log_w = prior.component_params()[0].detach().cpu().numpy()
        weights = dict(zip(self.component_names(), np.exp(log_w)))
        names = list(clusters["cluster"].cat.categories)
        prob_cols = [c for c in clusters.columns if c.startswith("prob_")]
        in_use = [c[len("prob_"):] for c in prob_cols]
        counts = clusters["cluster"].value_counts()
        rows = {
            name: {
                "weight": float(weights.get(name, np.nan)),
                "n_cells": int(counts.get(name, 0)),
                "mean_confidence": float(
                    clusters.loc[clusters["cluster"] == name, "confidence"].mean()
                ) if name in names else float("nan"),
            }
            for name in in_use
        }
        out = pd.DataFrame.from_dict(rows, orient="index")
        labels = list(getattr(self, "label_categories_", []) or [])
        if labels:
            out["label"] = [n if n in labels else "" for n in out.index]
        return out.sort_values("n_cells", ascending=False)

    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        smoothing: float = SMOOTHING,
        n_neighbors: int = SMOOTHING_NEIGHBORS,
    ) -> np.ndarray | pd.DataFrame:
        """Predicted cell-type labels from the label prior (label transfer).

        Only the components tied to known labels compete; free extra components
        are left out and the label probabilities renormalised.

        Parameters
        ----------
        adata, indices, batch_size, smoothing, n_neighbors
            As in :meth:`get_cluster_assignments`.
        soft
            Return a DataFrame of label probabilities instead of hard labels.

        Returns
        -------
        Array of label names, shape ``(n_cells,)``, or a DataFrame ``(n_cells, n_labels)``.
        """
        labels = list(getattr(self, "label_categories_", []) or [])
        if not labels:
            raise ValueError(
                "predict() needs a label prior: set up the data with labels_key= and "
                "unlabeled_category=, then create the model (use_label_prior defaults to True)."
            )
        probs = self._cluster_probabilities(adata, indices, batch_size, smoothing, n_neighbors)
        return self._label_prediction(probs, adata, indices, soft)

    def _label_prediction(
        self, probs: np.ndarray, adata: AnnData | None, indices: Sequence[int] | None, soft: bool
    ) -> np.ndarray | pd.DataFrame:
        """:meth:`predict` from probabilities over all components."""
        labels = list(self.label_categories_)
        probs = probs[:, : len(labels)]
        probs = probs / np.clip(probs.sum(1, keepdims=True), 1e-12, None)
        if soft:
            adata = self._validate_anndata(adata)
            idx = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
            return pd.DataFrame(probs, index=idx.copy(), columns=labels)
        return np.asarray(labels, dtype=object)[probs.argmax(1)]

    def _levels_to_write(self, levels: Sequence[int] | None) -> list[int]:
        """``levels`` of :meth:`write_to_adata` checked against :attr:`cluster_levels`."""
        available = self.cluster_levels
        if levels is None:
            return available
        levels = [int(level) for level in levels]
        wrong = [level for level in levels if level not in available]
        if wrong:
            where = (f"this tree has levels 1..{available[-1]}" if available
                     else "only prior='hierarchical' has tree levels")
            raise ValueError(f"levels={wrong} cannot be written: {where}.")
        return levels

    def write_to_adata(
        self,
        adata: AnnData | None = None,
        key_added: str = "mixvi",
        batch_size: int | None = None,
        smoothing: float = SMOOTHING,
        levels: Sequence[int] | None = None,
    ) -> None:
        """Write the embedding and the mixture clusters into ``adata`` (in place).

        Keys written (``key`` = ``key_added``), nothing else is changed:

        * ``.obsm["X_<key>"]`` -- posterior means, ``(n_cells, n_latent)``;
        * ``.obs["<key>_cluster"]`` -- categorical cluster (finest level);
        * ``.obs["<key>_cluster_confidence"]`` -- its probability;
        * ``.obsm["<key>_cluster_probs"]`` -- DataFrame of component probabilities;
        * ``.obs["<key>_cluster_l<level>"]`` -- hierarchical prior, one per tree level
          (level ``l``: ``l + 1`` clusters);
        * ``.obs["<key>_prediction"]`` -- label prior only, predicted label.

        Parameters
        ----------
        adata
            AnnData set up like the training data; ``None`` uses the training data.
        key_added
            Prefix of the keys.
        batch_size
            Minibatch size for inference.
        smoothing
            Neighbour smoothing of the cluster probabilities, as in
            :meth:`get_cluster_assignments` (``0``: each cell's responsibilities alone).
        levels
            Tree levels written as ``.obs["<key>_cluster_l<level>"]`` (hierarchical prior;
            a tree has one level per merge): ``None`` writes every level in
            :attr:`cluster_levels`, ``[]`` none.
        """
        levels = self._levels_to_write(levels)  # checked, as the smoothing, before any write
        adata = self._validate_anndata(adata)
        probs, latent = self._probabilities_and_latent(adata, None, batch_size, smoothing)
        adata.obsm[f"X_{key_added}"] = latent
        clusters = self._assignments(probs, adata, None, None)
        adata.obs[f"{key_added}_cluster"] = clusters["cluster"].values
        adata.obs[f"{key_added}_cluster_confidence"] = clusters["confidence"].to_numpy()
        adata.obsm[f"{key_added}_cluster_probs"] = clusters.drop(columns=["cluster", "confidence"])
        for level in levels:
            at = self._assignments(probs, adata, None, level)
            adata.obs[f"{key_added}_cluster_l{level}"] = at["cluster"].values
        if getattr(self, "label_categories_", None):
            adata.obs[f"{key_added}_prediction"] = pd.Categorical(
                self._label_prediction(probs, adata, None, soft=False), categories=self.label_categories_
            )
