"""Priors: KL estimators against closed forms, gradients, tree structure, initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from mixvi.priors import (
    GaussianMixturePrior,
    HierarchicalGaussianMixturePrior,
    StandardNormalPrior,
    balanced_tree,
    em_refit,
    make_prior,
    merge_order,
    node_depths,
)
from mixvi.priors._gmm import MIN_SCALE


def _posterior(n=6, d=4, seed=0) -> Normal:
    g = torch.Generator().manual_seed(seed)
    return Normal(torch.randn(n, d, generator=g), torch.rand(n, d, generator=g) + 0.3)


def _unit_gmm(d: int, n_components: int = 1, **kwargs) -> GaussianMixturePrior:
    """A GMM whose components are exactly N(0, I) (scale = softplus(raw) + MIN_SCALE = 1)."""
    prior = GaussianMixturePrior(d, n_components, **kwargs)
    with torch.no_grad():
        prior.means.zero_()
        prior.raw_scales.fill_(float(np.log(np.expm1(1.0 - MIN_SCALE))))
    return prior


def test_normal_prior_matches_torch_kl():
    qz = _posterior()
    expected = torch.distributions.kl_divergence(qz, Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(StandardNormalPrior(4).kl(qz), expected)


def test_normal_prior_kl_formula_from_design():
    qz = _posterior()
    mu, var = qz.loc, qz.scale.pow(2)
    formula = 0.5 * (mu.pow(2) + var - 1 - torch.log(var)).sum(-1)
    torch.testing.assert_close(StandardNormalPrior(4).kl(qz), formula)


def test_one_component_mc_kl_matches_closed_form():
    torch.manual_seed(0)
    qz = _posterior(n=8)
    prior = _unit_gmm(4, n_kl_samples=20_000)
    closed = StandardNormalPrior(4).kl(qz)
    mc = prior.kl(qz)
    torch.testing.assert_close(mc, closed, atol=0.05, rtol=0.02)


def test_identical_components_reduce_to_one_gaussian():
    torch.manual_seed(0)
    qz = _posterior()
    three = _unit_gmm(4, n_components=3, kl_estimator="analytic")
    torch.testing.assert_close(three.kl(qz), StandardNormalPrior(4).kl(qz), atol=1e-4, rtol=1e-4)


def test_analytic_kl_is_upper_bound_of_mc_kl():
    torch.manual_seed(1)
    qz = _posterior(n=10)
    prior = GaussianMixturePrior(4, 5, n_kl_samples=20_000)
    mc = prior.kl(qz)
    prior.kl_estimator = "analytic"
    bound = prior.kl(qz)
    assert torch.all(bound >= mc - 0.05), (bound - mc)
    assert torch.any(bound > mc + 0.01)  # a real bound for K > 1, not an equality


def test_log_prob_is_log_sum_exp_of_components():
    prior = GaussianMixturePrior(3, 4)
    z = torch.randn(7, 3)
    log_w, means, scales = prior.component_params()
    dens = sum(
        log_w[k].exp() * Normal(means[k], scales[k]).log_prob(z).sum(-1).exp() for k in range(4)
    )
    torch.testing.assert_close(prior.log_prob(z), torch.log(dens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gmm", "hierarchical"])
def test_gradients_reach_every_prior_parameter(name):
    prior = make_prior(name, 4, 4, learn_scales=True)
    qz = _posterior()
    loss = prior.kl(qz, qz.rsample()).mean()
    loss.backward()
    for pname, p in prior.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_label_prior_uses_closed_form_kl_to_own_component():
    """A labelled cell's prior is the joint pi_c N(m_c, s_c^2): KL(q || N_c) - log pi_c."""
    prior = GaussianMixturePrior(4, 3)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    qz = _posterior(n=3)
    component = torch.tensor([2, -1, 0])
    kl = prior.kl(qz, qz.rsample(), component)
    log_w, means, scales = prior.component_params()
    for i, c in ((0, 2), (2, 0)):
        gauss = torch.distributions.kl_divergence(
            Normal(qz.loc[i], qz.scale[i]), Normal(means[c], scales[c])
        ).sum()
        expected = gauss - torch.log_softmax(torch.tensor([0.5, -1.0, 2.0]), 0)[c]
        torch.testing.assert_close(kl[i], expected)


def test_labelled_cells_train_the_mixture_weights():
    """The -log pi_c term gives the weights a gradient that raises the labelled component."""
    prior = GaussianMixturePrior(4, 3)
    qz = _posterior(n=5)
    prior.kl(qz, qz.rsample(), torch.full((5,), 1)).sum().backward()
    grad = prior.logits.grad
    assert grad is not None and grad[1] < 0 and grad[0] > 0 and grad[2] > 0
    # exact: d/dlogits of -5 log softmax(logits)_1 = 5 (softmax - onehot)
    torch.testing.assert_close(grad, 5 * (torch.full((3,), 1 / 3) - torch.tensor([0.0, 1, 0])))


def test_mixture_posterior_kl_matches_monte_carlo():
    torch.manual_seed(0)
    n, K, d = 5, 3, 2
    prior = GaussianMixturePrior(d, K)
    logits = torch.randn(n, K)
    loc, scale = torch.randn(n, K, d), torch.rand(n, K, d) + 0.3
    kl_c, kl_z = prior.kl_mixture_posterior(logits, loc, scale)
    # MC estimate of KL(q(c) q(z|c) || p(c) p(z|c)) from joint samples
    S = 200_000
    c = torch.distributions.Categorical(logits=logits).sample((S,))  # (S, n)
    idx = c.unsqueeze(-1).unsqueeze(-1).expand(S, n, 1, d)
    z = torch.gather(loc.expand(S, n, K, d), 2, idx).squeeze(2) + torch.gather(
        scale.expand(S, n, K, d), 2, idx
    ).squeeze(2) * torch.randn(S, n, d)
    log_q = torch.log_softmax(logits, -1).gather(1, c.T).T + Normal(
        torch.gather(loc.expand(S, n, K, d), 2, idx).squeeze(2),
        torch.gather(scale.expand(S, n, K, d), 2, idx).squeeze(2),
    ).log_prob(z).sum(-1)
    log_w, means, scales = prior.component_params()
    log_p = log_w[c] + Normal(means[c], scales[c]).log_prob(z).sum(-1)
    mc = (log_q - log_p).mean(0)
    torch.testing.assert_close(kl_c + kl_z, mc.detach(), atol=0.03, rtol=0.02)


def test_balanced_tree_structure():
    children = balanced_tree(4)
    np.testing.assert_array_equal(children, [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(node_depths(children), [2, 2, 2, 2, 1, 1, 0])
    odd = balanced_tree(5)
    assert odd.shape == (4, 2)
    assert sorted(np.unique(odd)) == list(range(8))  # every non-root node has one parent


def test_internal_means_are_children_averages_after_updates():
    prior = HierarchicalGaussianMixturePrior(3, 4, learn_scales=True)
    opt = torch.optim.Adam(prior.parameters(), lr=0.1)
    qz = _posterior(n=20, d=3)
    for _ in range(5):
        opt.zero_grad()
        prior.kl(qz, qz.rsample()).mean().backward()
        opt.step()
    means = prior.node_means().detach()
    for j, (a, b) in enumerate(prior.tree_children.tolist()):
        torch.testing.assert_close(means[4 + j], 0.5 * (means[a] + means[b]))
    assert prior.n_components == 7
    assert [n for n, _ in prior.named_parameters()] == ["leaf_means", "raw_scales", "logits"]


def test_hierarchical_levels_partition_probability():
    prior = HierarchicalGaussianMixturePrior(2, 4)
    resp = torch.softmax(torch.randn(6, 7), -1).numpy()
    assert prior.n_levels == 3  # 4 leaves: 3 merges
    for level in (1, 2, 3):
        probs, nodes = prior.level_probabilities(resp, level)
        assert probs.shape == (6, level + 1)
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    _, leaves = prior.level_probabilities(resp, 3)
    np.testing.assert_array_equal(leaves, [0, 1, 2, 3])


def test_tree_levels_undo_merges_in_order_on_an_unbalanced_tree():
    """Level l undoes the last l merges (a Ward cut into l + 1 clusters), not a fixed depth:
    on the chain ((0, 1), 2), 3 depth 2 would be leaf 2 and node (0, 1) without leaf 3."""
    prior = HierarchicalGaussianMixturePrior(2, 5)  # leaf 4 switched off
    prior.set_tree(np.array([[0, 1], [5, 2], [6, 3]]))  # nodes 5 = (0, 1), 6 = (5, 2), 7 = root
    resp = torch.softmax(torch.randn(4, 9), -1).numpy()
    resp[:, 4] = resp[:, 8] = 0.0  # nodes outside the tree hold nothing
    resp /= resp.sum(1, keepdims=True)
    expected = {  # level -> its clusters (named by their top node, in node order), each as
        1: [[3], [0, 1, 2, 5, 6]],  # the nodes whose responsibility it collects
        2: [[2], [3], [0, 1, 5]],
        3: [[0], [1], [2], [3]],
    }
    for level, groups in expected.items():
        probs, nodes = prior.level_probabilities(resp, level)
        np.testing.assert_array_equal(nodes, [max(g) for g in groups])
        want = np.stack([resp[:, g].sum(1) for g in groups], 1)
        np.testing.assert_allclose(probs, want / want.sum(1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError, match="level must be in 1..3"):
        prior.level_ancestors(4)


def test_initialisation_places_components_on_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[-5.0, 0.0], [5.0, 0.0], [0.0, 6.0]])
    latent = np.concatenate([c + 0.1 * rng.standard_normal((100, 2)) for c in centres]).astype(
        np.float32
    )
    prior = GaussianMixturePrior(2, 3)
    prior.initialize_from_latent(latent)
    found = prior.means.detach().numpy()
    dist = np.linalg.norm(found[:, None] - centres[None], axis=-1)
    assert dist.min(0).max() < 0.1
    np.testing.assert_allclose(prior.component_params()[0].exp().detach().numpy(), 1 / 3, atol=1e-3)


def test_initialisation_ties_labelled_components():
    rng = np.random.default_rng(0)
    latent = np.concatenate([rng.normal(-4, 0.1, (50, 2)), rng.normal(4, 0.1, (50, 2))])
    component = np.array([1] * 50 + [0] * 50)
    prior = GaussianMixturePrior(2, 3)
    prior.initialize_from_latent(latent.astype(np.float32), component, n_label_components=2)
    means = prior.means.detach().numpy()
    np.testing.assert_allclose(means[0], [4, 4], atol=0.1)
    np.testing.assert_allclose(means[1], [-4, -4], atol=0.1)


def test_label_absent_from_the_cells_keeps_its_component():
    """Labels 0 and 1 are seen, label 2 is not: slot 2 stays the label's, k-means fills 3, 4."""
    rng = np.random.default_rng(0)
    centres = np.array([[-6.0, 0], [6.0, 0], [0, 6.0], [0, -6.0]])
    latent = np.concatenate([c + 0.1 * rng.standard_normal((40, 2)) for c in centres])
    component = np.array([0] * 40 + [1] * 40 + [-1] * 80)
    prior = GaussianMixturePrior(2, 5)
    assign = prior.initialize_from_latent(
        latent.astype(np.float32), component, n_label_components=3
    )
    assert not (assign == 2).any()
    assert set(assign[80:]) == {3, 4}  # the two unlabelled clusters took the free slots
    means = prior.means.detach().numpy()
    found = sorted(np.round(means[3:, 1]).tolist())
    assert found == [-6.0, 6.0]
    with pytest.raises(ValueError, match="below n_label_components"):
        prior.initialize_from_latent(latent.astype(np.float32), component, n_label_components=1)


def test_hierarchical_initialisation_keeps_moment_matched_scales():
    """With learn_scales=True the leaves take their clusters' spread and each internal node the
    spread of the union of its leaves' cells around its derived mean."""
    rng = np.random.default_rng(0)
    centres = np.array([[-20, 0], [-12, 0], [12, 0], [20, 0]], dtype=float)
    sds = np.array([0.2, 0.5, 0.3, 0.8])
    latent = np.concatenate(
        [c + s * rng.standard_normal((400, 2)) for c, s in zip(centres, sds)]
    ).astype(np.float32)
    prior = HierarchicalGaussianMixturePrior(2, 4, learn_scales=True)
    assign = prior.initialize_from_latent(latent)
    _, means, scales = prior.component_params()
    means, scales = means.detach().numpy(), scales.detach().numpy()
    for k in range(4):  # each leaf sits on one cluster with that cluster's spread
        j = np.argmin(np.abs(centres[:, 0] - means[k, 0]))
        np.testing.assert_allclose(scales[k], sds[j], rtol=0.1)
    leaves_of = {k: {k} for k in range(4)}
    for j, (a, b) in enumerate(prior.tree_children.numpy()):
        node = 4 + j
        leaves_of[node] = leaves_of[a] | leaves_of[b]
        members = latent[np.isin(assign, list(leaves_of[node]))]
        expected = np.sqrt(((members - means[node]) ** 2).mean(0))
        np.testing.assert_allclose(scales[node], expected, rtol=0.02)
    assert scales[6, 0] > 10  # the root spans both halves


def test_hierarchical_initialisation_builds_tree_of_close_leaves():
    rng = np.random.default_rng(0)
    centres = np.array([[-10, 0], [-9, 0], [9, 0], [10, 0]], dtype=float)
    latent = np.concatenate([c + 0.05 * rng.standard_normal((50, 2)) for c in centres])
    prior = HierarchicalGaussianMixturePrior(2, 4)
    prior.initialize_from_latent(latent.astype(np.float32))
    leaf_x = prior.leaf_means[:, 0].detach().numpy()
    first_two_merges = prior.tree_children[:2].numpy()
    for a, b in first_two_merges:  # the two nearest pairs merge first
        assert np.sign(leaf_x[a]) == np.sign(leaf_x[b])


def _overlapping_and_separated(rng):
    """1-d cells: two broad groups 5 apart that share cells, two tight groups 4 apart that
    do not. Ward on the means merges the tight pair first; the cells say the broad pair."""
    means = np.array([0.0, 5.0, 30.0, 34.0])
    spread = np.array([2.5, 2.5, 0.05, 0.05])
    group = np.repeat(np.arange(4), 300)
    latent = (means[group] + spread[group] * rng.standard_normal(len(group)))[:, None]
    return means, spread, latent


def test_merge_order_joins_components_that_share_cells_first():
    from scipy.cluster.hierarchy import linkage
    from scipy.stats import norm

    means, spread, latent = _overlapping_and_separated(np.random.default_rng(0))
    dens = norm.pdf(latent, means[None], spread[None])  # responsibilities, computed here
    resp = dens / dens.sum(1, keepdims=True)
    assert linkage(means[:, None], "ward")[0, :2].tolist() == [2, 3]  # the close pair
    np.testing.assert_array_equal(merge_order(means[:, None], resp), [[0, 1], [2, 3], [4, 5]])
    # hard assignments share no cells: the closest node means merge, a node's mean being
    # the midpoint of its children's (node 4 = (0, 1) at 0.5: 4.5 from point 2, 9 from 3)
    pts = np.array([[0.0], [1.0], [5.0], [14.0]])
    np.testing.assert_array_equal(merge_order(pts, np.eye(4)), [[0, 1], [2, 4], [3, 5]])
    np.testing.assert_array_equal(merge_order(pts), [[0, 1], [2, 4], [3, 5]])
    with pytest.raises(ValueError, match="4 columns"):
        merge_order(pts, np.eye(3))


def test_merge_order_counts_shared_cells_per_cell_of_the_pair():
    """A (1,000 cells) and B (1,000) share 40 cells, A and the small C (50) share 25: the
    entropy drops are 40 log 2 and 25 log 2, per cell of the pair 0.014 and 0.017, so C,
    most of whose cells are shared, joins A first."""
    resp = np.zeros((2050, 3))
    resp[:1000, 0] = resp[1000:2000, 1] = resp[2000:, 2] = 1.0
    resp[:40, :2] = 0.5  # 40 cells between A and B
    resp[2000:2025, [0, 2]] = 0.5  # 25 of C's 50 cells between C and A
    means = np.array([[0.0], [1.0], [9.0]])  # by distance, A and B would merge first
    assert merge_order(means, resp)[0].tolist() == [0, 2]  # undivided: A and B (40 > 25)


def test_merge_order_equals_a_brute_force_greedy_merge():
    """Against the criterion computed in full on every cell (no floor, no skipped cells) on
    soft assignments with tiny entries, as the tails of Gaussian responsibilities have."""
    rng = np.random.default_rng(3)
    resp = rng.dirichlet(np.full(6, 0.3), size=400) + 1e-9 * rng.random((400, 6))
    resp /= resp.sum(1, keepdims=True)

    def xlogx(p):
        return p * np.log(p)

    groups, expected = {k: resp[:, k] for k in range(6)}, []
    for new in range(6, 11):
        pairs = [(a, b) for a in groups for b in groups if a < b]
        drop = [(xlogx(groups[a] + groups[b]) - xlogx(groups[a]) - xlogx(groups[b])).sum()
                / (groups[a] + groups[b]).sum() for a, b in pairs]
        a, b = pairs[int(np.argmax(drop))]
        expected.append([a, b])
        groups[new] = groups.pop(a) + groups.pop(b)
    np.testing.assert_array_equal(merge_order(rng.normal(size=(6, 2)), resp), expected)


def test_em_refit_builds_the_tree_from_shared_cells():
    """The refit hands its responsibilities to the tree: the broad pair, farther apart than
    the tight pair, merges first (a tree from the means alone merges the tight pair)."""
    means, _, latent = _overlapping_and_separated(np.random.default_rng(1))
    prior = HierarchicalGaussianMixturePrior(1, 4)  # scales fixed at 1
    on = np.ones(4, dtype=bool)
    prior.set_components(means[:, None], np.ones((4, 1)), np.full(4, 0.25), on)
    leaf = lambda node: int(np.argmin(np.abs(prior.leaf_means[:, 0].detach().numpy()
                                              - means[node])))
    assert sorted(prior.tree_children[0].tolist()) == sorted([leaf(2), leaf(3)])
    em_refit(prior, latent, np.full_like(latent, 0.01), n_iter=3, switch_off=False)
    assert sorted(prior.tree_children[0].tolist()) == sorted([leaf(0), leaf(1)])


def test_invalid_prior_arguments_raise():
    with pytest.raises(ValueError, match="prior must be one of"):
        make_prior("vamp", 4, 3)
    with pytest.raises(ValueError, match="kl_estimator"):
        GaussianMixturePrior(4, 3, kl_estimator="exact")
    with pytest.raises(ValueError, match="at least 2 leaves"):
        HierarchicalGaussianMixturePrior(4, 1)
    with pytest.raises(ValueError, match="lower n_components"):
        GaussianMixturePrior(2, 5).initialize_from_latent(np.zeros((3, 2), np.float32))
