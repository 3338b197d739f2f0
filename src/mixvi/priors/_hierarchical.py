"""Hierarchical GMM prior: leaves of a binary tree plus its internal nodes as components."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._gmm import MIN_SCALE, KLEstimator, MixturePrior


def balanced_tree(n_leaves: int) -> np.ndarray:
    """Children of each internal node of a balanced binary tree over ``n_leaves`` leaves.

    Leaves are nodes ``0..L-1``; internal node ``L + j`` merges ``children[j]``.
    Nodes are merged level by level (an odd node out is carried up), so children
    always have smaller indices than their parent and the root is the last node.

    Returns
    -------
    Integer array of shape ``(n_leaves - 1, 2)``.
    """
    if n_leaves < 2:
        raise ValueError(f"A tree prior needs at least 2 leaves, got {n_leaves}.")
    level, nxt, children = list(range(n_leaves)), n_leaves, []
    while len(level) > 1:
        parents = []
        for i in range(0, len(level) - 1, 2):
            children.append((level[i], level[i + 1]))
            parents.append(nxt)
            nxt += 1
        if len(level) % 2:
            parents.append(level[-1])
        level = parents
    return np.asarray(children, dtype=np.int64)


def node_depths(children: np.ndarray) -> np.ndarray:
    """Depth of every node (root = 0), shape ``(2L - 1,)``."""
    n_nodes = 2 * len(children) + 1
    depth = np.zeros(n_nodes, dtype=np.int64)
    n_leaves = len(children) + 1
    for j in range(len(children) - 1, -1, -1):  # parents before children
        depth[children[j]] = depth[n_leaves + j] + 1
    return depth


class HierarchicalGaussianMixturePrior(MixturePrior):
    """GMM whose components are the nodes of a binary tree.

    Only the leaf means are free parameters; each internal node's mean is the
    average of its two children's means. A cell of leaf ``a`` is pulled towards
    ``a`` and, through their parent, towards its sibling ``b``, while the means
    are pulled towards the cells -- so related clusters stay close and the tree
    reads as a cell-type hierarchy.

    Parameters
    ----------
    n_latent
        Dimensionality of the latent space.
    n_leaves
        Number of leaves ``L``; the mixture has ``2L - 1`` components.
    learn_scales
        Train per-node scales; ``False`` (default) fixes every scale at 1 as in the design.
    learn_weights
        Train the node weights.
    mean_spread
        Standard deviation of the random initial leaf means.
    n_kl_samples, kl_estimator
        See :class:`~mixvi.priors.MixturePrior`.
    """

    def __init__(
        self,
        n_latent: int,
        n_leaves: int = 8,
        learn_scales: bool = False,
        learn_weights: bool = True,
        mean_spread: float = 1.0,
        n_kl_samples: int = 1,
        kl_estimator: KLEstimator = "mc",
    ):
        super().__init__(n_latent, 2 * n_leaves - 1, n_kl_samples, kl_estimator)
        self.n_leaves = n_leaves
        self.leaf_means = nn.Parameter(torch.randn(n_leaves, n_latent) * mean_spread)
        self.raw_scales = nn.Parameter(
            torch.full((2 * n_leaves - 1, n_latent), float(np.log(np.expm1(1.0)))),
            requires_grad=learn_scales,
        )
        self.logits = nn.Parameter(torch.zeros(2 * n_leaves - 1), requires_grad=learn_weights)
        self.register_buffer("tree_children", torch.as_tensor(balanced_tree(n_leaves)))

    # -- tree --------------------------------------------------------------------------------
    def set_tree(self, children: np.ndarray) -> None:
        """Replace the tree; ``children`` as returned by :func:`balanced_tree`."""
        children = np.asarray(children, dtype=np.int64)
        if children.shape != (self.n_leaves - 1, 2):
            raise ValueError(f"children must have shape {(self.n_leaves - 1, 2)}.")
        self.tree_children.copy_(torch.as_tensor(children))

    @property
    def n_levels(self) -> int:
        """Depth of the deepest leaf: levels ``1..n_levels`` have cluster assignments."""
        return int(self.depths.max())

    @property
    def depths(self) -> np.ndarray:
        """Depth of every node (root = 0), shape ``(2L - 1,)``."""
        return node_depths(self.tree_children.cpu().numpy())

    def node_means(self) -> torch.Tensor:
        """Means of all ``2L - 1`` nodes; internal ones derived from their children."""
        means = list(self.leaf_means.unbind(0))
        for a, b in self.tree_children.tolist():
            means.append(0.5 * (means[a] + means[b]))
        return torch.stack(means)

    def component_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_weights (2L-1,), node means (2L-1, d), scales (2L-1, d))``."""
        scales = nn.functional.softplus(self.raw_scales) + MIN_SCALE
        return torch.log_softmax(self.logits, dim=-1), self.node_means(), scales

    def ancestor_at_depth(self, depth: int) -> np.ndarray:
        """For every node, its ancestor at ``depth`` (itself if shallower), shape ``(2L-1,)``."""
        children = self.tree_children.cpu().numpy()
        n_leaves = self.n_leaves
        parent = np.full(2 * n_leaves - 1, -1)
        for j, (a, b) in enumerate(children):
            parent[a] = parent[b] = n_leaves + j
        depths = self.depths
        out = np.arange(2 * n_leaves - 1)
        for i in range(len(out)):
            while depths[out[i]] > depth:
                out[i] = parent[out[i]]
        return out

    def level_probabilities(self, resp: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Cluster probabilities at one tree depth.

        The responsibility of every node at or below ``depth`` is added to its
        ancestor at that depth (a leaf shallower than ``depth`` stands for itself);
        internal nodes above ``depth`` (closer to the root) are left out and the rest
        renormalised.

        Parameters
        ----------
        resp
            Responsibilities over all nodes, shape ``(n_cells, 2L - 1)``.
        depth
            Tree depth, ``1`` = the root's children.

        Returns
        -------
        ``(probs (n_cells, n_level_nodes), node ids (n_level_nodes,))``.
        """
        anc = self.ancestor_at_depth(depth)
        depths = self.depths
        keep = (depths >= depth) | (np.arange(len(depths)) < self.n_leaves)
        nodes = np.unique(anc[keep])
        probs = np.zeros((resp.shape[0], len(nodes)), dtype=resp.dtype)
        for j, node in enumerate(nodes):
            probs[:, j] = resp[:, keep & (anc == node)].sum(1)
        probs /= np.clip(probs.sum(1, keepdims=True), 1e-12, None)
        return probs, nodes

    # -- initialisation ----------------------------------------------------------------------
    def _n_free_components(self) -> int:
        return self.n_leaves

    def _set_free_components(self, centers, stds, frac, latent) -> None:
        from scipy.cluster.hierarchy import linkage

        self.leaf_means.copy_(torch.as_tensor(centers))
        # Ward linkage on the leaf centres gives the tree: row j merges two nodes into L + j.
        self.set_tree(linkage(centers, method="ward")[:, :2].astype(np.int64))
        if self.logits.requires_grad:
            leaf = np.log(np.clip(frac, 1e-3, None))
            internal = np.full(self.n_leaves - 1, leaf.mean() - 1.0)
            self.logits.copy_(torch.as_tensor(np.concatenate([leaf, internal]), dtype=torch.float32))
