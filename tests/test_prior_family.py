"""Prior family of issue #3 on the shipped data: label prior, tree prior, mixture posterior.

The synthetic-data checks live in ``test_priors.py`` / ``test_mixvi.py``; here the same
features are exercised on the shipped Kang IFN-b PBMCs (1,556 cells, ctrl/stim batches,
5 cell types), plus the estimator checks those files do not cover. About 70 s of CPU time
(one 45-epoch training with the label prior, five 6-epoch trainings, two tiny ones).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.model_selection import train_test_split
from torch.distributions import Normal

import mixvi
from mixvi.priors import GaussianMixturePrior, HierarchicalGaussianMixturePrior

from helpers import FAST_TRAIN, history

LABEL_EPOCHS = 45
UNKNOWN = "Unknown"


def _kang_with_hidden_labels(seed: int = 0):
    """Kang with 25% of the labels (stratified by cell type) replaced by ``"Unknown"``."""
    adata = mixvi.datasets.kang_pbmc_ifnb()
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    _, held = train_test_split(
        np.arange(adata.n_obs), test_size=0.25, random_state=seed, stratify=truth
    )
    hidden = np.zeros(adata.n_obs, dtype=bool)
    hidden[held] = True
    partial = truth.copy()
    partial[hidden] = UNKNOWN
    adata.obs["partial_label"] = pd.Categorical(partial)
    return adata, truth, hidden


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Train on one thread: on a shared, oversubscribed 2-core machine two torch threads
    were ~15x slower (OpenMP spin-waits); the networks are too small to gain from more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def kang_label_model():
    """MixVI with the label prior on Kang, 75% of the labels known, 45 epochs (seed 0)."""
    scvi.settings.seed = 0
    adata, truth, hidden = _kang_with_hidden_labels()
    mixvi.MixVI.setup_anndata(
        adata, layer="counts", batch_key="batch", labels_key="partial_label",
        unlabeled_category=UNKNOWN,
    )
    model = mixvi.MixVI(adata)  # n_components defaults to the 5 known labels
    model.train(max_epochs=LABEL_EPOCHS, **FAST_TRAIN)
    return model, adata, truth, hidden


# -- label prior on shipped data ------------------------------------------------------------
def test_label_prior_ties_components_to_labels(kang_label_model):
    model, adata, truth, _ = kang_label_model
    labels = sorted(set(truth))
    assert model.module.prior.n_components == 5
    assert sorted(model.component_names()) == labels
    elbo = history(model, "elbo_train")
    assert np.isfinite(elbo).all() and elbo[-1] < elbo[0]
    assert np.isfinite(history(model, "mixture_entropy_train")).all()


def test_label_prior_pulls_labelled_cells_to_own_component(kang_label_model):
    """Mean responsibility of a labelled cell's own component > 0.9 (the issue's target).

    Measured on this machine (2 busy CPU cores), labelled cells of Kang: 0.922 (seed 0)
    and 0.917 (seed 1) after 45 epochs; 0.897 / 0.901 after 30 epochs, 0.934 after 60.
    The per-cell responsibilities are bimodal: ~92% of labelled cells sit on their
    component with r ~ 1, the rest (mostly CD4/CD8 T cells and FCGR3A+/CD14+ monocytes)
    on a neighbouring type's component -- the label prior is a soft pull (a closed-form
    KL), not a constraint. The threshold is the issue's, not one tuned to the measurement.
    """
    model, _, truth, hidden = kang_label_model
    clusters = model.get_cluster_assignments()
    probs = clusters.filter(like="prob_")
    names = [c.removeprefix("prob_") for c in probs.columns]
    own = probs.to_numpy()[np.arange(len(truth)), [names.index(t) for t in truth]]
    np.testing.assert_allclose(probs.to_numpy().sum(1), 1.0, rtol=1e-5)
    assert own[~hidden].mean() > 0.9, own[~hidden].mean()
    # the labelled cells' majority component is their own label for every type
    for label in names:
        cells = (~hidden) & (truth == label)
        assert np.median(own[cells]) > 0.9, label


def test_label_transfer_to_held_back_cells_beats_floor(kang_label_model):
    """predict() on the 25% held-back cells of Kang.

    Measured accuracy on this machine: 0.931 (seed 0) and 0.923 (seed 1) after 45 epochs,
    0.905-0.908 after 30. The floor, 0.85, leaves a margin of ~0.07 below the measurement;
    predicting the most frequent labelled type scores 0.257.
    """
    model, adata, truth, hidden = kang_label_model
    pred = model.predict()
    assert pred.shape == (adata.n_obs,)
    accuracy = float((pred[hidden] == truth[hidden]).mean())
    majority = pd.Series(truth[~hidden]).value_counts(normalize=True).iloc[0]
    assert accuracy > 0.85, accuracy
    assert accuracy > majority + 0.5
    soft = model.predict(soft=True)
    assert list(soft.columns) == model.label_categories_
    np.testing.assert_allclose(soft.to_numpy().sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(soft.columns.to_numpy()[soft.to_numpy().argmax(1)], pred)


def test_label_prior_writes_predictions(kang_label_model):
    model, adata, truth, hidden = kang_label_model
    out = adata.copy()
    model.write_to_adata(out)
    assert set(out.obs["mixvi_prediction"].cat.categories) == set(truth)
    assert out.obsm["mixvi_cluster_probs"].shape == (out.n_obs, 5)
    np.testing.assert_array_equal(out.obs["mixvi_prediction"].astype(str).to_numpy(), model.predict())


# -- every prior / posterior option trains on the shipped data ------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"prior": "hierarchical"},
        {"prior": "gmm", "posterior": "mixture"},
        {"prior": "hierarchical", "posterior": "mixture"},
        {"prior": "gmm", "kl_estimator": "analytic", "n_kl_samples": 4},
        {"prior": "hierarchical", "posterior": "mixture", "batch_balance_weight": 5.0},
    ],
    ids=["tree", "gmm-mixture-post", "tree-mixture-post", "gmm-analytic", "tree-mixture-balanced"],
)
def test_options_on_kang_shapes_and_finite_losses(kang, kwargs):
    scvi.settings.seed = 0
    mixvi.MixVI.setup_anndata(kang, layer="counts", batch_key="batch")
    model = mixvi.MixVI(kang, n_latent=8, n_hidden=64, n_components=6, **kwargs)
    model.train(max_epochs=6, prior_init_epoch=2, **FAST_TRAIN)
    keys = ["elbo_train", "reconstruction_loss_train", "kl_local_train", "mixture_entropy_train"]
    if kwargs.get("batch_balance_weight"):  # logged from the mixture's fit on (epoch 2 of 6)
        mi = history(model, "batch_mi_train")
        assert len(mi) >= 4 and np.isfinite(mi).all() and 0 <= mi.min() <= mi.max() < np.log(2)
    for key in keys:
        values = history(model, key)
        assert len(values) == 6 and np.isfinite(values).all(), key
    K = model.module.prior.n_components
    assert K == (11 if kwargs["prior"] == "hierarchical" else 6)
    assert 0 < history(model, "mixture_entropy_train")[-1] <= math.log(K) + 1e-5
    latent = model.get_latent_representation()
    assert latent.shape == (kang.n_obs, 8) and np.isfinite(latent).all()
    probs = model._cluster_probabilities(None, None, None)
    assert probs.shape == (kang.n_obs, K)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    model.write_to_adata(kang)
    prior = model.module.prior
    if isinstance(prior, HierarchicalGaussianMixturePrior):
        # one column per tree level, level l with at most l + 1 clusters, finest = leaves
        assert model.cluster_levels == list(range(1, prior.n_levels + 1))
        for level in model.cluster_levels:
            col = kang.obs[f"mixvi_cluster_l{level}"]
            assert 1 <= col.nunique() <= level + 1
            level_probs = model.get_cluster_assignments(level=level).filter(like="prob_")
            assert level_probs.shape[1] == level + 1
            np.testing.assert_allclose(level_probs.to_numpy().sum(1), 1.0, rtol=1e-5)
        assert prior.n_levels == int(prior.active[: prior.n_leaves].sum()) - 1
        assert model.get_cluster_assignments(level=1).filter(like="prob_").shape[1] == 2
        # internal means are still the average of their children after training
        means = prior.node_means().detach()
        for j, (a, b) in enumerate(prior.tree_children.tolist()):
            torch.testing.assert_close(means[prior.n_leaves + j], 0.5 * (means[a] + means[b]))
    else:
        assert "mixvi_cluster_l1" not in kang.obs
        with pytest.raises(ValueError, match="only prior='hierarchical' has tree levels"):
            model.write_to_adata(kang, levels=[1])
        with pytest.raises(ValueError, match="level= is only available with prior='hierarchical'"):
            model.get_cluster_assignments(level=1)


def test_hierarchical_label_prior_on_kang(kang):
    """Labels tie the first leaves of the tree; predict() only weighs those leaves."""
    scvi.settings.seed = 0
    truth = kang.obs["cell_type"].astype(str).to_numpy()
    partial = truth.copy()
    partial[::4] = UNKNOWN
    kang.obs["partial_label"] = pd.Categorical(partial)
    mixvi.MixVI.setup_anndata(kang, layer="counts", batch_key="batch",
                              labels_key="partial_label", unlabeled_category=UNKNOWN)
    model = mixvi.MixVI(kang, n_latent=8, n_hidden=64, n_components=6, prior="hierarchical")
    assert model.module.prior.n_components == 11 and model.module.prior_layer.n_label_components == 5
    model.train(max_epochs=6, prior_init_epoch=2, **FAST_TRAIN)
    assert np.isfinite(history(model, "elbo_train")).all()
    pred = model.predict()
    assert set(pred) <= set(truth)
    assert model.component_names()[:5] == model.label_categories_


# -- estimators ------------------------------------------------------------------------------
def test_mixture_posterior_kl_matches_monte_carlo_on_tree_prior():
    """KL(q(c|x)||pi) + sum_c q(c|x) KL(q(z|x,c)||N(m_c, s_c^2)) against joint MC samples,
    with the tree prior's derived internal means and learnt scales."""
    torch.manual_seed(0)
    prior = HierarchicalGaussianMixturePrior(3, 3, learn_scales=True)
    with torch.no_grad():
        prior.raw_scales.uniform_(-0.5, 0.5)
        prior.logits.normal_()
    n, K, d = 4, prior.n_components, 3
    logits, loc, scale = torch.randn(n, K), torch.randn(n, K, d), torch.rand(n, K, d) + 0.3
    kl_c, kl_z = prior.kl_mixture_posterior(logits, loc, scale)
    S = 200_000
    c = torch.distributions.Categorical(logits=logits).sample((S,))  # (S, n)
    cells = torch.arange(n).expand(S, n)
    mu, sd = loc[cells, c], scale[cells, c]  # (S, n, d)
    z = mu + sd * torch.randn(S, n, d)
    log_w, means, scales = prior.component_params()
    log_q = torch.log_softmax(logits, -1)[cells, c] + Normal(mu, sd).log_prob(z).sum(-1)
    log_p = log_w[c] + Normal(means[c], scales[c]).log_prob(z).sum(-1)
    mc = (log_q - log_p).mean(0).detach()
    torch.testing.assert_close((kl_c + kl_z).detach(), mc, atol=0.05, rtol=0.02)


def test_known_component_mixture_posterior_kl_is_own_component_kl():
    """A labelled cell's q(c|x) is the point mass on its label: KL_c = -log pi_c (so the
    weights learn from labelled cells) and KL_z is that component's Gaussian KL."""
    prior = GaussianMixturePrior(2, 3)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([1.0, 0.0, -1.0]))
    logits, loc, scale = torch.randn(3, 3), torch.randn(3, 3, 2), torch.rand(3, 3, 2) + 0.3
    component = torch.tensor([2, -1, 0])
    kl_c, kl_z = prior.kl_mixture_posterior(logits, loc, scale, component)
    free_c, free_z = prior.kl_mixture_posterior(logits, loc, scale)
    _, means, scales = prior.component_params()
    for i, k in ((0, 2), (2, 0)):
        expected = torch.distributions.kl_divergence(
            Normal(loc[i, k], scale[i, k]), Normal(means[k], scales[k])
        ).sum()
        torch.testing.assert_close(kl_z[i], expected)
        torch.testing.assert_close(kl_c[i], -torch.log_softmax(torch.tensor([1.0, 0, -1]), 0)[k])
    torch.testing.assert_close(kl_c[1], free_c[1])
    torch.testing.assert_close(kl_z[1], free_z[1])


def test_more_kl_samples_lower_the_variance_not_the_mean():
    """n_kl_samples averages the MC estimate: same expectation, variance ~ 1/n."""
    torch.manual_seed(0)
    qz = Normal(torch.randn(5, 4), torch.rand(5, 4) + 0.3)
    one = GaussianMixturePrior(4, 4, n_kl_samples=1)
    many = GaussianMixturePrior(4, 4, n_kl_samples=16)
    many.load_state_dict(one.state_dict())
    draws_one = torch.stack([one.kl(qz) for _ in range(2000)]).detach()
    draws_many = torch.stack([many.kl(qz) for _ in range(500)]).detach()
    torch.testing.assert_close(draws_many.mean(0), draws_one.mean(0), atol=0.1, rtol=0.02)
    ratio = draws_many.var(0) / draws_one.var(0)
    assert torch.all(ratio < 0.15), ratio  # 1/16 expected
    one.kl_estimator = "analytic"
    analytic = one.kl(qz)
    torch.testing.assert_close(one.kl(qz), analytic)  # deterministic
    assert torch.all(analytic >= draws_one.mean(0) - 0.05)  # Jensen: an upper bound


# -- Gumbel-softmax annealing ----------------------------------------------------------------
class _RecordTemperature(Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # after the plan's on_train_epoch_start, which sets this epoch's temperature
        if batch_idx == 0:
            self.seen.append(float(pl_module.module.gumbel_temperature))


def test_gumbel_temperature_follows_geometric_schedule(counts_adata):
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(counts_adata, n_latent=4, n_hidden=32, n_components=3, posterior="mixture")
    record = _RecordTemperature()
    model.train(max_epochs=8, gumbel_temperature=(2.0, 0.25), prior_init_epoch=1,
                callbacks=[record], **FAST_TRAIN)
    # annealed over max_epochs // 2 = 4 epochs, then held at the end temperature
    expected = [2.0 * (0.25 / 2.0) ** min(e / 4, 1.0) for e in range(8)]
    np.testing.assert_allclose(record.seen, expected, rtol=1e-5)
    assert np.all(np.diff(record.seen) <= 1e-7)


def test_gumbel_sample_is_one_hot_with_straight_through_gradient(counts_adata):
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    module = mixvi.MixVI(counts_adata, n_latent=2, n_components=3, posterior="mixture").module
    torch.manual_seed(0)
    logits = torch.randn(50, 3, requires_grad=True)
    loc = torch.stack([torch.full((50, 2), float(k) * 10) for k in range(3)], 1)
    scale = torch.full((50, 3, 2), 1e-4)
    for tau in (1.0, 0.1):
        module.gumbel_temperature.fill_(tau)
        z = module.sample_mixture_posterior(logits, loc, scale)
        chosen = torch.round(z[:, 0] / 10)
        # forward: z lies in exactly one component
        torch.testing.assert_close(z[:, 0], chosen * 10, atol=1e-2, rtol=0)
        z.sum().backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0  # gradient reaches q(c|x)
        logits.grad = None
    # sampled frequencies follow q(c|x)
    module.gumbel_temperature.fill_(0.5)
    many = module.sample_mixture_posterior(logits[:1].detach(), loc[:1], scale[:1], (4000,))
    freq = np.bincount(torch.round(many[:, 0, 0] / 10).long().numpy(), minlength=3) / 4000
    np.testing.assert_allclose(freq, torch.softmax(logits[0], -1).detach().numpy(), atol=0.03)


# -- pre-training with N(0, I) ----------------------------------------------------------------
class _RecordInitialized(Callback):
    def __init__(self):
        self.seen = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(pl_module.module.prior_layer.initialized)


def test_mixture_posterior_pretrains_with_the_normal_kl(counts_adata):
    """pretrain_normal applies to posterior='mixture' too: until the mixture is fitted, every
    posterior component is pulled to N(0, I), whatever the (random) mixture parameters."""
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(counts_adata, n_latent=2, n_hidden=16, n_components=3, posterior="mixture")
    module, layer = model.module, model.module.prior_layer
    assert not layer.initialized
    tensors = next(iter(model._make_data_loader(counts_adata, batch_size=64)))
    module.eval()
    with torch.no_grad():
        inf = module.inference(**module._get_inference_input(tensors))
        before = layer.kl_mixture_posterior(inf["qc_logits"], *inf["qz_components"])
        loc, scale = inf["qz_components"]
        qc = torch.softmax(inf["qc_logits"], -1)
        expected = (qc * torch.distributions.kl_divergence(
            Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)).sum(-1)
        torch.testing.assert_close(before, expected)
        module.prior.means.add_(3.0)
        torch.testing.assert_close(
            layer.kl_mixture_posterior(inf["qc_logits"], *inf["qz_components"]), before
        )
        layer.mark_initialized()
        after = layer.kl_mixture_posterior(inf["qc_logits"], *inf["qz_components"])
        assert not torch.allclose(after, before)
    # in training the mixture is fitted (k-means) at prior_init_epoch, not before
    fresh = mixvi.MixVI(counts_adata, n_latent=2, n_hidden=16, n_components=3, posterior="mixture")
    record = _RecordInitialized()
    fresh.train(max_epochs=4, prior_init_epoch=2, callbacks=[record], **FAST_TRAIN)
    assert record.seen == [False, False, True, True]
