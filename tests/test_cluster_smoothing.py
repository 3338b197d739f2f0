"""Cluster probabilities averaged over each cell's neighbours in the latent."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
from helpers import FAST_TRAIN, make_counts

import mixvi
from mixvi.model import smooth_over_neighbours


def _closed_form_smoothing(probs, latent, k, a):
    """Label spreading's fixed point (1 - a)(I - a A)^-1 r from a full distance matrix and a
    dense inverse (neighbour ties broken by index, as sklearn)."""
    n = len(latent)
    dist = ((latent[:, None, :] - latent[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    mean = np.zeros((n, n))
    np.put_along_axis(mean, nearest, 1.0 / k, axis=1)
    return (1 - a) * np.linalg.solve(np.eye(n) - a * mean, probs)


def test_smoothing_is_label_spreading_in_closed_form():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(60, 3))
    probs = rng.dirichlet(np.ones(4), size=60)
    for k, a in ((5, 0.5), (15, 0.8), (15, 0.95)):
        got = smooth_over_neighbours(probs, latent, k, a, min_cells=0)
        np.testing.assert_allclose(got, _closed_form_smoothing(probs, latent, k, a), atol=1e-5)
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-12)
    assert smooth_over_neighbours(probs, latent, 15, 0.0, min_cells=0) is probs
    # fewer cells than neighbours: every cell's neighbourhood is all of them
    few = smooth_over_neighbours(probs[:4], latent[:4], 15, 0.5, min_cells=0)
    np.testing.assert_allclose(few, 0.5 * probs[:4] + 0.5 * probs[:4].mean(0), atol=1e-6)


def test_large_data_neighbours_come_from_the_approximate_search(monkeypatch):
    """Above EXACT_NEIGHBORS_MAX_CELLS the graph is pynndescent's: on 80 cells it finds every
    exact neighbour, so the result is the closed form's."""
    import mixvi.model._clusters as clusters

    rng = np.random.default_rng(1)
    latent = rng.normal(size=(80, 3))
    probs = rng.dirichlet(np.ones(3), size=80)
    monkeypatch.setattr(clusters, "EXACT_NEIGHBORS_MAX_CELLS", 10)
    calls = []
    original = clusters._nearest_cells

    def spy(latent, k):
        calls.append(latent.shape[0] > clusters.EXACT_NEIGHBORS_MAX_CELLS)
        return original(latent, k)

    monkeypatch.setattr(clusters, "_nearest_cells", spy)
    got = smooth_over_neighbours(probs, latent, 15, 0.8, min_cells=0)
    assert calls == [True]
    np.testing.assert_allclose(got, _closed_form_smoothing(probs, latent, 15, 0.8), atol=1e-4)


def test_too_few_cells_are_left_alone(caplog):
    """Below 20 x n_neighbors cells (300 by default) the probabilities come back unchanged."""
    import logging

    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), size=299)
    latent = rng.normal(size=(299, 2))
    with caplog.at_level(logging.INFO, logger="mixvi"):
        assert smooth_over_neighbours(probs, latent) is probs
    assert "fewer than the 300" in caplog.text
    assert smooth_over_neighbours(probs, latent, n_neighbors=10) is not probs  # 299 >= 200


@pytest.mark.parametrize("kwargs, match", [
    ({"smoothing": 1.0}, "smoothing"), ({"smoothing": -0.1}, "smoothing"),
    ({"smoothing": True}, "smoothing"), ({"n_neighbors": 0}, "n_neighbors"),
])
def test_smoothing_rejects_bad_arguments(kwargs, match):
    probs, latent = np.full((5, 2), 0.5), np.zeros((5, 2))
    with pytest.raises(ValueError, match=match):
        smooth_over_neighbours(probs, latent, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smoothing_takes_tails_back_from_a_broad_component(seed):
    """Three heavy-tailed types and a 4-component diagonal mixture (sklearn's EM): a broad
    component collects the tails of all three, as on Kang. Averaging over neighbours gives
    the tail cells back to their type's component."""
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    types = np.repeat([0, 1, 2], 400)
    latent = np.array([[0, 0], [4, 0], [2, 3.5]])[types] + 0.6 * rng.standard_t(3, size=(1200, 2))
    probs = GaussianMixture(4, covariance_type="diag", random_state=0).fit(latent).predict_proba(latent)
    raw = adjusted_rand_score(types, probs.argmax(1))
    smoothed = adjusted_rand_score(types, smooth_over_neighbours(probs, latent).argmax(1))
    assert smoothed > raw + 0.02, (raw, smoothed)


def test_model_assignments_are_the_smoothed_responsibilities():
    """get_cluster_assignments = the responsibilities of each cell alone (smoothing=0)
    spread over its neighbours in get_latent_representation; write_to_adata writes the
    same clusters."""
    scvi.settings.seed = 0
    counts_adata = make_counts(n_cells=400)
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(counts_adata, n_latent=4, n_hidden=32, n_components=3)
    model.train(max_epochs=5, **FAST_TRAIN)
    raw = model.get_cluster_assignments(smoothing=0)
    default = model.get_cluster_assignments()
    cols = [c for c in raw.columns if c.startswith("prob_")]
    expected = _closed_form_smoothing(raw[cols].to_numpy(), model.get_latent_representation(), 15, 0.8)
    np.testing.assert_allclose(default[cols].to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(default["confidence"], expected.max(1), atol=1e-5)
    model.write_to_adata(counts_adata)
    assert (counts_adata.obs["mixvi_cluster"].astype(str) == default["cluster"].astype(str)).all()
    calls = []  # a bad value is refused before the inference pass over the cells
    inference = model.module.inference
    model.module.inference = lambda *a, **k: calls.append(1) or inference(*a, **k)
    with pytest.raises(ValueError, match="smoothing"):
        model.get_cluster_assignments(smoothing=1.5)
    with pytest.raises(ValueError, match="n_neighbors"):
        model.get_cluster_assignments(n_neighbors=2.5)
    with pytest.raises(ValueError, match="smoothing"):
        model.write_to_adata(counts_adata.copy(), smoothing=-0.1)
    assert calls == []
