"""Growing a fitted mixture at a refit: a new component only for a group of cells that has
come apart from the rest and shares a component with another group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import adjusted_rand_score

from mixvi.priors import (
    GaussianMixturePrior,
    add_separated_communities,
    density_valley,
    kmeans_assignments,
    leiden_assignments,
)


def _blobs(sizes=(200, 200, 200, 200), d=8, spread=0.7, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (len(sizes), d))
    latent = np.concatenate([c + rng.standard_normal((n, d)) * spread
                             for c, n in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return latent, np.full_like(latent, 0.01), truth, centres


def _two_components_over(latent, groups_a, groups_b, truth, n_slots=10, slots=(5, 8)):
    """A mixture with two components in ``slots``, each the moments of a set of groups."""
    d = latent.shape[1]
    prior = GaussianMixturePrior(d, n_slots)
    means, stds = np.zeros((n_slots, d)), np.ones((n_slots, d))
    for slot, groups in zip(slots, (groups_a, groups_b), strict=True):
        cells = latent[np.isin(truth, groups)]
        means[slot], stds[slot] = cells.mean(0), cells.std(0) + 0.1
    active = np.zeros(n_slots, dtype=bool)
    active[list(slots)] = True
    prior.set_components(means, stds, np.where(active, 0.5, 0.0), active)
    return prior


def _clusters(prior, latent):
    return prior.responsibilities(torch.as_tensor(latent, dtype=torch.float32)).argmax(1).numpy()


def test_a_separated_group_without_a_component_gets_one_and_the_others_stay():
    latent, latent_var, truth, centres = _blobs()
    # slot 5 covers groups 0 and 1 (as a mixture read before they came apart), 8 covers 2 + 3
    prior = _two_components_over(latent, [0, 1], [2, 3], truth)
    before = prior.free_components()
    added = add_separated_communities(prior, latent, latent_var, resolution=1.0)
    assert len(added) == 2 and prior.n_active == 4
    assert not set(added) & {5, 8}  # switched-off slots are used, the fitted ones kept
    after = prior.free_components()
    np.testing.assert_allclose(after[0][[5, 8]], before[0][[5, 8]])  # old means untouched
    np.testing.assert_allclose(after[1][[5, 8]], before[1][[5, 8]])
    # each new component sits on a group the old ones shared (one per old component)
    nearest = np.linalg.norm(after[0][added][:, None] - centres[None], axis=-1).argmin(1)
    assert sorted(nearest // 2) == [0, 1]
    assert np.linalg.norm(after[0][added] - centres[nearest], axis=1).max() < 0.3
    assert adjusted_rand_score(truth, _clusters(prior, latent)) == 1.0
    assert after[2].sum() == pytest.approx(1.0)


def test_a_fitted_mixture_is_not_changed_where_it_has_one_component_per_group():
    latent, latent_var, truth, _ = _blobs(sizes=(200, 150, 100))
    prior = GaussianMixturePrior(8, 6)
    prior.initialize_from_latent(latent.astype(np.float32), latent_var=latent_var, resolution=1.0)
    state = {k: v.clone() for k, v in prior.state_dict().items()}
    assert add_separated_communities(prior, latent, latent_var, resolution=1.0) == []
    for key, value in prior.state_dict().items():
        assert torch.equal(value, state[key])


@pytest.mark.parametrize("distance", [3.0, 4.0, 5.0])
def test_density_valley_matches_the_closed_form_of_two_gaussians(distance):
    """Two equal unit Gaussians ``distance`` apart (1-D signal plus 4 noise dimensions): the
    kernel estimate is the mixture of N(0, 1 + h^2) and N(distance, 1 + h^2), so the ratio of
    its midpoint to its peak has a closed form."""
    rng = np.random.default_rng(0)
    n = 20000
    a = rng.standard_normal((n, 5))
    b = rng.standard_normal((n, 5))
    b[:, 0] += distance
    h = 1.06 * (2 * n) ** -0.2  # Silverman's bandwidth of the pooled within-group sd (1)
    s = np.sqrt(1 + h**2)
    grid = np.linspace(0, distance, 2001)
    mixture = norm.pdf(grid, 0, s) + norm.pdf(grid, distance, s)
    expected = mixture.min() / mixture.max()
    assert density_valley(a, b) == pytest.approx(expected, abs=0.02)


def test_density_valley_sees_no_dip_at_the_end_of_one_cloud():
    """The upper tenth of one Gaussian against the rest: the density only falls towards it."""
    rng = np.random.default_rng(1)
    cloud = rng.standard_normal((5000, 6)) * np.r_[4.0, np.ones(5)]
    end = cloud[:, 0] > np.quantile(cloud[:, 0], 0.9)
    assert density_valley(cloud[end], cloud[~end]) > 0.9
    # while a small group split off by a gap dips to almost nothing
    group = rng.standard_normal((100, 6)) + np.r_[20.0, np.zeros(5)]
    assert density_valley(group, cloud) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_continuum_split_by_the_mixture_is_not_recut(seed):
    """One elongated Gaussian cloud (sd 5 along one axis, 1 along nine): Leiden cuts it into
    pieces that the mixture's two halves do not match. Each middle piece is linked to its
    neighbours (high conductance); an end piece is cut off on one side only, and on seeds 2
    and 3 its conductance is under the bound, but the density does not dip towards it: no
    component is added."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((3000, 10)) * np.r_[5.0, np.ones(9)]
    latent_var = np.full_like(latent, 0.01)
    halves = kmeans_assignments(latent, 2, seed=0)
    prior = _two_components_over(latent, [0], [1], halves)
    assert leiden_assignments(latent, 1.0).max() + 1 >= 4  # Leiden does cut it finer
    assert add_separated_communities(prior, latent, latent_var, resolution=1.0) == []
    assert prior.n_active == 2
    # by conductance alone (no density test) the end piece of seeds 2 and 3 would be added
    by_cut_only = add_separated_communities(prior, latent, latent_var, resolution=1.0,
                                            max_valley=1.0)
    assert (len(by_cut_only) > 0) == (seed in (2, 3))


def test_no_free_slot_or_labelled_cells_only_add_nothing():
    latent, latent_var, truth, _ = _blobs()
    full = _two_components_over(latent, [0, 1], [2, 3], truth, n_slots=2, slots=(0, 1))
    assert add_separated_communities(full, latent, latent_var) == []
    prior = _two_components_over(latent, [0, 1], [2, 3], truth)
    labelled = np.zeros(len(latent), dtype=int)  # every cell known: no pool to read from
    assert add_separated_communities(prior, latent, latent_var, component=labelled) == []
    assert prior.n_active == 2


def test_labelled_cells_keep_their_components_and_only_free_slots_are_used():
    """Group 0 is labelled (label component 0); of the unlabelled groups, 1 has free component
    1 and 2 + 3 share free component 2: group 2 or 3 gets a switched-off free slot, and the
    label component and the fitted ones stay as they were."""
    latent, latent_var, truth, centres = _blobs()
    prior = _two_components_over(latent, [0], [1], truth, n_slots=6, slots=(0, 1))
    means, stds, weights, active = prior.free_components()
    shared = latent[np.isin(truth, [2, 3])]
    means[2], stds[2], active[2] = shared.mean(0), shared.std(0) + 0.1, True
    prior.set_components(means, stds, np.where(active, 1 / 3, 0.0), active)
    component = np.where(truth == 0, 0, -1)
    added = add_separated_communities(prior, latent, latent_var, component=component,
                                      n_label_components=1, resolution=1.0)
    assert len(added) == 1 and added[0] >= 3
    after = prior.free_components()
    np.testing.assert_allclose(after[0][:3], means[:3])
    group = np.linalg.norm(centres - after[0][added[0]], axis=1).argmin()
    assert group in (2, 3)


@pytest.mark.parametrize("bound", [0.0, 1.5, -0.1])
def test_bad_conductance_or_valley_bound_names_the_argument(bound):
    latent, latent_var, truth, _ = _blobs()
    prior = _two_components_over(latent, [0, 1], [2, 3], truth)
    for name in ("max_conductance", "max_valley"):
        with pytest.raises(ValueError, match=name):
            add_separated_communities(prior, latent, latent_var, **{name: bound})


@pytest.mark.parametrize("shapes", [((0, 3), (5, 3)), ((5, 3), (5, 2)), ((5,), (5, 3))])
def test_density_valley_rejects_empty_or_mismatched_groups(shapes):
    with pytest.raises(ValueError, match="non-empty 2-D arrays"):
        density_valley(np.ones(shapes[0]), np.ones(shapes[1]))
