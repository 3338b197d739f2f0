"""Groups hidden inside a Leiden community by modularity's resolution limit get their own
community (``leiden_assignments(max_conductance=...)``), and uniform regions are not cut."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mixvi.priors import conductance, leiden_assignments


def _many_blobs_and_a_small_group(n_blobs=30, n_per_blob=300, n_small=25, gap=4.5, seed=0):
    """``n_blobs`` unit Gaussians in 10-d and a tight group of ``n_small`` cells ``gap`` away
    from the first one: apart in the graph, but small against the whole graph."""
    rng = np.random.default_rng(seed)
    d = 10
    centres = rng.normal(size=(n_blobs, d)) * 8
    blobs = [c + rng.normal(size=(n_per_blob, d)) for c in centres]
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    small = centres[0] + gap * direction + 0.3 * rng.normal(size=(n_small, d))
    latent = np.concatenate(blobs + [small])
    truth = np.repeat(np.arange(n_blobs + 1), [n_per_blob] * n_blobs + [n_small])
    return latent.astype(np.float32), truth


def test_conductance_against_hand_count():
    # two triangles joined by one edge: the cut is 1 edge, each side's volume 2 + 2 + 3 = 7
    edges = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)]
    rows, cols = zip(*edges, strict=True)
    graph = sp.coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(6, 6))
    graph = (graph + graph.T).tocsr()
    members = np.array([True, True, True, False, False, False])
    assert np.isclose(conductance(graph, members), 1 / 7)
    # one vertex of degree 2 alone: both its links leave it
    assert np.isclose(conductance(graph, np.arange(6) == 0), 1.0)


def test_small_separated_group_gets_its_own_community():
    latent, truth = _many_blobs_and_a_small_group()
    plain = leiden_assignments(latent, 1.0, max_conductance=None)
    split = leiden_assignments(latent, 1.0)
    small = truth == truth.max()

    def community_of_small(codes):
        return codes == np.bincount(codes[small]).argmax()

    # plain modularity merges the 25 cells into their neighbouring blob's community ...
    assert community_of_small(plain).sum() == 325
    assert plain.max() + 1 == 30
    # ... the split gives them one of their own, nearly exactly them, and changes no other
    found = community_of_small(split)
    assert split.max() + 1 == 31
    assert (found & small).sum() == 25 and found.sum() <= 30
    others = ~found
    assert len(np.unique(split[others])) == 30
    assert np.all([len(np.unique(split[others & (truth == b)])) == 1 for b in range(30)])


def test_split_leaves_uniform_clouds_as_they_are():
    """Pieces Leiden cuts from a uniform cloud are about as linked as each other, so none is
    split off, whether the cloud is round, elongated or a curve."""
    rng = np.random.default_rng(0)
    n = 3000
    clouds = {"round": rng.normal(size=(n, 10)),
              "elongated": rng.normal(size=(n, 10)) * np.geomspace(5, 0.2, 10)}
    for i in range(3):
        t = rng.uniform(0, 10, n)
        curve = np.zeros((n, 10))
        curve[:, 0], curve[:, 1] = t, np.sin(t)
        clouds[f"curve {i}"] = curve + 0.15 * rng.normal(size=(n, 10))
    for name, cloud in clouds.items():
        plain = leiden_assignments(cloud, 1.0, max_conductance=None)
        assert plain.max() + 1 >= 5, name  # Leiden does cut each into pieces ...
        split = leiden_assignments(cloud, 1.0)
        assert np.array_equal(plain, split), name  # ... and none is split off


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolution": np.zeros(300)}, r"resolution must be a number in \(0, inf\)"),
        ({"resolution": 0.0}, r"resolution must be a number in \(0, inf\)"),
        ({"batch": np.zeros(299)}, r"batch must hold one value per cell, shape \(300,\)"),
        ({"max_conductance": 1.5}, r"max_conductance must be a number in \(0, 1\]"),
        ({"n_neighbors": 0}, "n_neighbors must be an integer >= 1"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, match):
    latent = np.random.default_rng(0).normal(size=(300, 4))
    with pytest.raises(ValueError, match=match):
        leiden_assignments(latent, **kwargs)


def test_non_finite_or_flat_latent_is_refused():
    latent = np.random.default_rng(0).normal(size=(300, 4))
    latent[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        leiden_assignments(latent)
    with pytest.raises(ValueError, match="2-D array"):
        leiden_assignments(latent[:, 0])
