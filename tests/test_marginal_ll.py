"""log p(x) by importance sampling under the model's own prior (MixVI and MultiMixVI)."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from scvi.module import VAE

import mixvi

from helpers import FAST_TRAIN, make_counts

torch.set_num_threads(1)


def _trained(prior: str = "gmm", labels: bool = False, **kwargs) -> mixvi.MixVI:
    scvi.settings.seed = 0
    adata = make_counts(n_cells=200)
    if labels:
        adata.obs["ct"] = adata.obs["cell_type"].astype(str)
        adata.obs.loc[adata.obs_names[::2], "ct"] = "Unknown"
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch",
                              labels_key="ct" if labels else None)
    model = mixvi.MixVI(adata, n_latent=3, n_hidden=16, prior=prior,
                        n_components=3 if prior != "normal" else None, **kwargs)
    model.train(max_epochs=15, prior_init_epoch=2, **FAST_TRAIN)
    return model


def _per_cell(model, n, seed=0) -> np.ndarray:
    torch.manual_seed(seed)
    return np.asarray(model.get_marginal_ll(n_mc_samples=n, return_mean=False))


@pytest.fixture(scope="module")
def gmm_model():
    return _trained("gmm")


def test_estimate_is_above_the_elbo_and_rises_with_samples(gmm_model):
    # the same estimator at S=1 averages to the ELBO; more samples can only tighten the bound
    one = np.mean([_per_cell(gmm_model, 1, seed=s).mean() for s in range(20)])
    ten = np.mean([_per_cell(gmm_model, 10, seed=s).mean() for s in range(5)])
    hundred = _per_cell(gmm_model, 100).mean()
    elbo = float(gmm_model.get_elbo())  # scvi-tools: mean ELBO per cell (higher is better)
    assert abs(one - elbo) < 0.02 * abs(elbo), (one, elbo)  # E[S=1 estimate] = ELBO
    assert ten > one + 0.1 and hundred > ten, (one, ten, hundred)
    assert hundred > elbo


def test_estimate_uses_the_trained_mixture(gmm_model):
    """Moving the mixture's components away from the cells lowers our log p(x), while
    scvi-tools' inherited estimator (which scores z under N(0, I)) does not notice."""
    tensors = next(iter(gmm_model._make_data_loader(gmm_model.adata, batch_size=200)))

    def both():
        torch.manual_seed(0)
        ours = float(gmm_model.module.marginal_ll(tensors, n_mc_samples=30, return_mean=True))
        torch.manual_seed(0)
        normal = float(VAE.marginal_ll(gmm_model.module, tensors, n_mc_samples=30,
                                       return_mean=True))
        return ours, normal

    prior = gmm_model.module.prior
    saved = prior.means.detach().clone()
    base, normal_base = both()
    with torch.no_grad():
        prior.means.add_(5.0)
    moved, normal_moved = both()
    with torch.no_grad():
        prior.means.copy_(saved)
    assert moved < base - 5, (base, moved)
    assert normal_moved == pytest.approx(normal_base, abs=1e-4)


def test_normal_prior_matches_scvi():
    model = _trained("normal")
    tensors = next(iter(model._make_data_loader(model.adata, batch_size=200)))
    torch.manual_seed(1)
    ours = model.module.marginal_ll(tensors, n_mc_samples=20, n_mc_samples_per_pass=5)
    torch.manual_seed(1)
    theirs = VAE.marginal_ll(model.module, tensors, n_mc_samples=20, n_mc_samples_per_pass=5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-3)


def test_label_prior_scores_the_joint_with_the_label():
    """A labelled cell's estimate is log p(x, c) = log p(x) + log p(c|x) <= log p(x)."""
    model = _trained("gmm", labels=True)
    labelled = model.adata.obs["ct"].to_numpy() != "Unknown"
    joint = _per_cell(model, 200)[labelled].mean()
    unlabelled_view = model.adata.copy()
    unlabelled_view.obs["ct"] = "Unknown"
    torch.manual_seed(0)
    free = np.asarray(model.get_marginal_ll(unlabelled_view, n_mc_samples=200,
                                            return_mean=False))[labelled].mean()
    assert joint < free + 0.05, (joint, free)
    assert free - joint < np.log(3) + 0.5  # the label's posterior probability is not tiny


def test_mixture_posterior_marginal_rises_with_samples():
    model = _trained("gmm", posterior="mixture")
    one = np.mean([_per_cell(model, 1, seed=s).mean() for s in range(10)])
    many = _per_cell(model, 50).mean()
    assert np.isfinite(many) and many > one


def test_multimixvi_marginal_likelihoods():
    mdata = mixvi.datasets.pbmc_multiome_tiny()[:200].copy()
    scvi.settings.seed = 0
    mixvi.MultiMixVI.setup_mudata(mdata, batch_key="batch")
    model = mixvi.MultiMixVI(mdata, n_latent=3, n_hidden=16, n_components=3)
    model.train(max_epochs=10, **FAST_TRAIN)
    out = {}
    for modality in ("joint", "rna", "atac"):
        lo = np.mean([
            _mm(model, 1, modality, seed=s) for s in range(10)
        ])
        hi = _mm(model, 50, modality)
        assert hi > lo, (modality, lo, hi)
        out[modality] = hi
    # one latent explaining both modalities costs more nats than explaining either alone
    assert out["joint"] < min(out["rna"], out["atac"])
    with pytest.raises(ValueError, match="modality must be"):
        model.get_marginal_ll(n_mc_samples=2, modality="protein")


def _mm(model, n, modality, seed=0) -> float:
    torch.manual_seed(seed)
    return float(model.get_marginal_ll(n_mc_samples=n, modality=modality))
