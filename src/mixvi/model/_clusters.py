"""Cluster assignments from the mixture prior, shared by MixVI and MultiMixVI."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from mixvi.priors import HierarchicalGaussianMixturePrior


class ClusterMixin:
    """Mixture-component clusters, label prediction and writing results to AnnData.

    The host model provides ``self.module.prior`` and :meth:`_cluster_probabilities`.
    """

    def _cluster_probabilities(
        self, adata: AnnData | None, indices: Sequence[int] | None, batch_size: int | None
    ) -> np.ndarray:
        """Probabilities over all prior components, shape ``(n_cells, K)``."""
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        module = self.module
        was_training = module.training
        module.eval()
        probs = []
        with torch.inference_mode():
            for tensors in loader:
                out = module.inference(**module._get_inference_input(tensors))
                probs.append(module.cluster_probabilities(out).cpu().numpy())
        module.train(was_training)
        return np.concatenate(probs)

    def component_names(self) -> list[str]:
        """Name of every prior component: its label (label prior) or its index."""
        K = self.module.prior.n_components
        labels = list(getattr(self, "label_categories_", []) or [])
        names = [str(x) for x in labels]
        return names + [str(k) for k in range(len(names), K)]

    @property
    def cluster_levels(self) -> list[int]:
        """Tree depths with cluster assignments (hierarchical prior), else ``[]``."""
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
    ) -> pd.DataFrame:
        """Cluster of each cell: the most probable mixture component.

        Probabilities are the responsibilities
        ``r_k propto pi_k N(mu(x); m_k, s_k^2 + sigma(x)^2)``, the posterior's own
        uncertainty integrated out (or q(c|x) with ``posterior="mixture"``).

        Parameters
        ----------
        adata
            AnnData set up like the training data; ``None`` uses the training data.
        indices
            Cells to use; ``None`` uses all.
        batch_size
            Minibatch size for inference.
        level
            Tree depth for ``prior="hierarchical"`` (``1`` = the root's two children,
            :attr:`cluster_levels` lists them); ``None`` gives the finest level.

        Returns
        -------
        DataFrame indexed by cell with columns ``cluster`` (categorical component
        name), ``confidence`` (max probability) and ``prob_<name>`` for every
        component of that level.
        """
        probs = self._cluster_probabilities(adata, indices, batch_size)
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
    ) -> np.ndarray | pd.DataFrame:
        """Predicted cell-type labels from the label prior (label transfer).

        Only the components tied to known labels compete; free extra components
        are left out and the label probabilities renormalised.

        Parameters
        ----------
        adata, indices, batch_size
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
        probs = self._cluster_probabilities(adata, indices, batch_size)[:, : len(labels)]
        probs = probs / np.clip(probs.sum(1, keepdims=True), 1e-12, None)
        if soft:
            adata = self._validate_anndata(adata)
            idx = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
            return pd.DataFrame(probs, index=idx.copy(), columns=labels)
        return np.asarray(labels, dtype=object)[probs.argmax(1)]

    def write_to_adata(
        self,
        adata: AnnData | None = None,
        key_added: str = "mixvi",
        batch_size: int | None = None,
    ) -> None:
        """Write the embedding and the mixture clusters into ``adata`` (in place).

        Keys written (``key`` = ``key_added``), nothing else is changed:

        * ``.obsm["X_<key>"]`` -- posterior means, ``(n_cells, n_latent)``;
        * ``.obs["<key>_cluster"]`` -- categorical cluster (finest level);
        * ``.obs["<key>_cluster_confidence"]`` -- its probability;
        * ``.obsm["<key>_cluster_probs"]`` -- DataFrame of component probabilities;
        * ``.obs["<key>_cluster_l<level>"]`` -- hierarchical prior, one per tree level;
        * ``.obs["<key>_prediction"]`` -- label prior only, predicted label.

        Parameters
        ----------
        adata
            AnnData set up like the training data; ``None`` uses the training data.
        key_added
            Prefix of the keys.
        batch_size
            Minibatch size for inference.
        """
        adata = self._validate_anndata(adata)
        adata.obsm[f"X_{key_added}"] = self.get_latent_representation(adata, batch_size=batch_size)
        clusters = self.get_cluster_assignments(adata, batch_size=batch_size)
        adata.obs[f"{key_added}_cluster"] = clusters["cluster"].values
        adata.obs[f"{key_added}_cluster_confidence"] = clusters["confidence"].to_numpy()
        adata.obsm[f"{key_added}_cluster_probs"] = clusters.drop(columns=["cluster", "confidence"])
        for level in self.cluster_levels:
            at = self.get_cluster_assignments(adata, batch_size=batch_size, level=level)
            adata.obs[f"{key_added}_cluster_l{level}"] = at["cluster"].values
        if getattr(self, "label_categories_", None):
            adata.obs[f"{key_added}_prediction"] = pd.Categorical(
                self.predict(adata, batch_size=batch_size), categories=self.label_categories_
            )
