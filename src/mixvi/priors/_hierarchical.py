"""Hierarchical GMM prior: leaves of a binary tree plus its internal nodes as components."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._gmm import MIN_SCALE, KLEstimator, MixturePrior, inverse_softplus


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
    """Depth of every node (root = 0), shape ``(2L - 1,)``; ``-1`` for nodes not in the tree.

    ``children`` has one row per internal node slot; rows of ``-1`` are unused slots (a tree
    over fewer leaves than the prior's capacity).
    """
    children = np.asarray(children)
    n_leaves = len(children) + 1
    depth = np.full(2 * n_leaves - 1, -1, dtype=np.int64)
    used = np.where(children[:, 0] >= 0)[0]
    if len(used) == 0:
        depth[0] = 0
        return depth
    depth[n_leaves + used[-1]] = 0
    for j in used[::-1]:  # parents come after their children
        depth[children[j]] = depth[n_leaves + j] + 1
    return depth


#: entropy drop per cell (nats) below which two nodes count as sharing no cells
NO_SHARED_CELLS = 1e-6
#: a responsibility below this counts as 0 in :func:`merge_order` (each such cell moves a
#: pair's entropy drop by under 2e-5 nats), so only the cells two nodes both hold are summed
SHARE_FLOOR = 1e-6


def merge_order(means: np.ndarray, responsibilities: np.ndarray | None = None) -> np.ndarray:
    """Merges of a tree over mixture components, most overlapping pair first.

    Each step merges the two nodes whose union lowers the entropy of the cells' soft
    assignments the most per cell of the union,
    ``sum_i [(r_a + r_b) log(r_a + r_b) - r_a log r_a - r_b log r_b] / sum_i (r_a + r_b)``
    (the entropy criterion of Baudry et al. 2010, *Combining mixture components for
    clustering*, divided by the pair's cells so that a small component that shares many of
    its cells merges before a large one that shares few): components that share cells merge
    first, however far apart their means are. Distance between means alone merges a close
    pair of well-separated components before two broad, overlapping ones of the same type.
    Where no remaining pair shares cells (hard assignments, or none given), the pair with
    the closest node means merges, a node's mean being the average of its children's as in
    the prior.

    Parameters
    ----------
    means
        Component means, shape ``(m, d)``.
    responsibilities
        Soft assignments of cells to the components, shape ``(n_cells, m)``; ``None`` uses
        the means alone. Entries under ``SHARE_FLOOR`` (1e-6) count as 0, so each pair sums
        only over the cells both its nodes hold (on 300,000 cells and 50 leaves, 3 s instead
        of 60 s, the same tree).

    Returns
    -------
    Integer array of shape ``(m - 1, 2)``: row ``j`` merges two nodes into node ``m + j``
    (components are nodes ``0..m-1``), as the first two columns of a scipy linkage.
    """
    means = np.asarray(means, dtype=np.float64)
    m = len(means)
    cols: dict[int, np.ndarray] = {}
    if responsibilities is not None:
        resp = np.asarray(responsibilities, dtype=np.float64)
        if resp.shape[1] != m:
            raise ValueError(f"responsibilities must have {m} columns, got {resp.shape[1]}.")
        mass = dict(enumerate(resp.sum(0)))
        resp = np.where(resp >= SHARE_FLOOR, resp, 0.0)
        # cells held by one component alone add nothing to any gain: leave them out
        resp = resp[(resp > 0).sum(1) >= 2]
        cols = {k: resp[:, k].copy() for k in range(m)}
    else:
        mass = {}
    node_mean = {k: means[k] for k in range(m)}
    gain: dict[tuple[int, int], float] = {}

    def pair_gain(a: int, b: int) -> float:
        if not cols:
            return 0.0
        both = np.flatnonzero((cols[a] > 0) & (cols[b] > 0))  # a cell held by one adds 0
        x, y = cols[a][both], cols[b][both]
        drop = float(((x + y) * np.log(x + y) - x * np.log(x) - y * np.log(y)).sum())
        return drop / max(mass[a] + mass[b], 1e-12)

    for a in range(m):
        for b in range(a + 1, m):
            gain[a, b] = pair_gain(a, b)
    merges = []
    for new in range(m, 2 * m - 1):
        a, b = max(gain, key=gain.get)
        if gain[a, b] <= NO_SHARED_CELLS:  # no remaining pair shares cells: closest means
            a, b = min(gain, key=lambda p: float(((node_mean[p[0]] - node_mean[p[1]]) ** 2).sum()))
        merges.append((a, b))
        node_mean[new] = 0.5 * (node_mean.pop(a) + node_mean.pop(b))
        if cols:
            cols[new] = cols.pop(a) + cols.pop(b)
            mass[new] = mass.pop(a) + mass.pop(b)
        gain = {p: g for p, g in gain.items() if a not in p and b not in p}
        for other in node_mean:
            if other != new:
                gain[other, new] = pair_gain(other, new)
    return np.asarray(merges, dtype=np.int64).reshape(-1, 2)


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
        Number of leaves ``L`` (the capacity); the mixture has ``2L - 1`` components.
        Leaves can be switched off, the tree then spans the active ones.
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
        if isinstance(n_leaves, bool) or not isinstance(n_leaves, int) or n_leaves < 2:
            raise ValueError(f"A tree prior needs at least 2 leaves, got {n_leaves!r}.")
        super().__init__(n_latent, 2 * n_leaves - 1, n_kl_samples, kl_estimator)
        self.n_leaves = n_leaves
        self.leaf_means = nn.Parameter(torch.randn(n_leaves, n_latent) * mean_spread)
        self.raw_scales = nn.Parameter(
            torch.full((2 * n_leaves - 1, n_latent), float(inverse_softplus(1.0))),
            requires_grad=learn_scales,
        )
        self.logits = nn.Parameter(torch.zeros(2 * n_leaves - 1), requires_grad=learn_weights)
        self.register_buffer("tree_children", torch.as_tensor(balanced_tree(n_leaves)))
        self.register_buffer("node_from_leaves", torch.zeros(2 * n_leaves - 1, n_leaves))
        self.set_tree(balanced_tree(n_leaves))

    # -- tree --------------------------------------------------------------------------------
    def set_tree(self, children: np.ndarray) -> None:
        """Replace the tree; ``children`` as returned by :func:`balanced_tree`.

        ``children`` may have fewer rows than ``n_leaves - 1`` (a tree over the active
        leaves only); the remaining internal slots are switched off.
        """
        children = np.asarray(children, dtype=np.int64).reshape(-1, 2)
        L = self.n_leaves
        if len(children) > L - 1:
            raise ValueError(f"children must have at most {L - 1} rows, got {len(children)}.")
        full = np.full((L - 1, 2), -1, dtype=np.int64)
        full[: len(children)] = children
        # node means as fixed averages of leaf means: one matrix product, no Python loop
        weights = np.zeros((2 * L - 1, L), dtype=np.float32)
        weights[:L] = np.eye(L, dtype=np.float32)
        for j, (a, b) in enumerate(children):
            weights[L + j] = 0.5 * (weights[a] + weights[b])
        depth = node_depths(full)
        dev = self.tree_children.device
        with torch.no_grad():
            self.tree_children.copy_(torch.as_tensor(full, device=dev))
            self.node_from_leaves.copy_(torch.as_tensor(weights, device=dev))
            self.active.copy_(torch.as_tensor(depth >= 0, device=dev))

    @property
    def n_levels(self) -> int:
        """Number of merges in the tree (active leaves - 1): levels ``1..n_levels`` have
        cluster assignments, level ``l`` with ``l + 1`` clusters."""
        return int((self.tree_children[:, 0] >= 0).sum())

    @property
    def depths(self) -> np.ndarray:
        """Depth of every node (root = 0, ``-1`` if not in the tree), shape ``(2L - 1,)``."""
        return node_depths(self.tree_children.cpu().numpy())

    def node_means(self) -> torch.Tensor:
        """Means of all ``2L - 1`` nodes; internal ones derived from their children."""
        return self.node_from_leaves @ self.leaf_means

    def _raw_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scales = nn.functional.softplus(self.raw_scales) + MIN_SCALE
        return self.logits, self.node_means(), scales

    def parents(self) -> np.ndarray:
        """Parent of every node (``-1`` for the root and nodes not in the tree)."""
        L = self.n_leaves
        parent = np.full(2 * L - 1, -1)
        for j, (a, b) in enumerate(self.tree_children.cpu().numpy()):
            if a >= 0:
                parent[a] = parent[b] = L + j
        return parent

    def level_ancestors(self, level: int) -> np.ndarray:
        """Every node's cluster at one level of the tree, shape ``(2L - 1,)``.

        Level ``l`` undoes the tree's last ``l`` merges (as a cut of a dendrogram into
        ``l + 1`` clusters does): the roots of the forest left are the level's clusters.
        Merges are in the order they were made (the rows of ``tree_children``), so each
        level splits the cluster whose two halves share the fewest cells -- unlike a fixed
        depth, which on an unbalanced tree holds clusters of very different sizes. Nodes of
        the undone merges and nodes outside the tree get ``-1``.
        """
        n_merges = self.n_levels
        if not 1 <= level <= n_merges:
            raise ValueError(f"level must be in 1..{n_merges}, got {level}.")
        L = self.n_leaves
        parent = self.parents()
        kept_merges = n_merges - level  # the first merges stay
        parent[parent >= L + kept_merges] = -1  # children of undone merges are the clusters
        out = np.where(self.depths >= 0, np.arange(2 * L - 1), -1)
        out[L + kept_merges:] = -1
        for i in np.where(out >= 0)[0]:
            while parent[out[i]] >= 0:
                out[i] = parent[out[i]]
        return out

    def level_probabilities(self, resp: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Cluster probabilities at one tree level (see :meth:`level_ancestors`).

        The responsibility of every node is added to its cluster at that level; the
        internal nodes of the undone merges (closer to the root) are left out and the rest
        renormalised.

        Parameters
        ----------
        resp
            Responsibilities over all nodes, shape ``(n_cells, 2L - 1)``.
        level
            Tree level, ``1`` = the root's two children, ``n_levels`` = the leaves.

        Returns
        -------
        ``(probs (n_cells, level + 1), node ids (level + 1,))``.
        """
        anc = self.level_ancestors(level)
        nodes = np.unique(anc[anc >= 0])
        probs = np.zeros((resp.shape[0], len(nodes)), dtype=resp.dtype)
        for j, node in enumerate(nodes):
            probs[:, j] = resp[:, anc == node].sum(1)
        probs /= np.clip(probs.sum(1, keepdims=True), 1e-12, None)
        return probs, nodes

    # -- fitted values -----------------------------------------------------------------------
    min_active = 2

    def n_free_components(self) -> int:
        """The leaves carry the free means."""
        return self.n_leaves

    @torch.no_grad()
    def set_components(self, means, stds, weights, active, responsibilities=None) -> None:
        """Write fitted leaves, rebuild the tree over the active ones (:func:`merge_order`).

        With the cells' ``responsibilities`` over the leaves (shape ``(n_cells, L)``, as an
        EM refit has them) leaves that share cells merge first; without them (a start from
        hard k-means / Leiden clusters) the closest leaves do. Internal nodes keep their
        derived means; with ``learn_scales`` their scales are moment-matched to the union of
        their leaves (so the KL does not jump), and the leaves take the fitted scales.
        """
        L = self.n_leaves
        means = np.asarray(means, dtype=np.float64)
        stds = np.asarray(stds, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64)
        active = np.asarray(active, dtype=bool)
        on = np.where(active)[0]
        if len(on) < 2:
            raise ValueError(f"A tree prior needs at least 2 active leaves, got {len(on)}.")
        dev = self.leaf_means.device
        self.leaf_means.copy_(torch.as_tensor(means, dtype=torch.float32, device=dev))
        resp = None if responsibilities is None else np.asarray(responsibilities)[:, on]
        # row j of the merges makes node len(on) + j; map to the prior's node ids
        ids = np.concatenate([on, L + np.arange(len(on) - 1)])
        children = ids[merge_order(means[on], resp)]
        self.set_tree(children)
        node_w = np.zeros(2 * L - 1)
        node_w[:L] = np.where(active, weights, 0.0)
        node_var = np.ones((2 * L - 1, means.shape[1]))
        node_var[:L] = stds**2
        node_mean = self.node_from_leaves.cpu().numpy().astype(np.float64) @ means
        for j, (a, b) in enumerate(children):
            wa, wb = node_w[a], node_w[b]
            tot = max(wa + wb, 1e-12)
            node = L + j
            node_w[node] = tot
            node_var[node] = sum(
                w / tot * (node_var[c] + (node_mean[c] - node_mean[node]) ** 2)
                for c, w in ((a, wa), (b, wb))
            )
        if self.raw_scales.requires_grad:
            raw = inverse_softplus(np.clip(np.sqrt(node_var) - MIN_SCALE, 1e-4, None))
            self.raw_scales.copy_(torch.as_tensor(raw, dtype=torch.float32, device=dev))
        if self.logits.requires_grad:
            leaf = np.log(np.clip(weights, 1e-6, None))
            # internal nodes start a little below the average leaf, so cells go to leaves first
            internal = np.full(L - 1, leaf[active].mean() - 1.0 if active.any() else 0.0)
            self.logits.copy_(
                torch.as_tensor(np.concatenate([leaf, internal]), dtype=torch.float32, device=dev)
            )
