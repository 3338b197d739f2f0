"""The sparse negative-binomial likelihood and the sparse ATAC paths against dense references."""

from __future__ import annotations

import pytest
import torch
from scvi.distributions import NegativeBinomial

import mixvi
from mixvi.module._likelihood import count_log_likelihood, nb_log_likelihood, subset_nonzero

torch.set_num_threads(1)


def _data(per_cell_theta: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, G = 40, 300
    mu = (torch.rand(n, G, generator=g) * 4 + 1e-3).requires_grad_()
    shape = (n, G) if per_cell_theta else (G,)
    theta = (torch.rand(*shape, generator=g) * 5 + 0.05).requires_grad_()
    x = torch.poisson(mu.detach() * 2 * (torch.rand(n, G, generator=g) < 0.15))
    return x, mu, theta


@pytest.mark.parametrize("per_cell_theta", [False, True])
@pytest.mark.parametrize("given_nonzero", [False, True])
def test_sparse_nb_equals_scvi_value_and_gradients(per_cell_theta, given_nonzero):
    x, mu, theta = _data(per_cell_theta)
    assert 0.05 < (x > 0).float().mean() < 0.3  # really sparse counts, with some zeros kept
    reference = NegativeBinomial(mu=mu, theta=theta).log_prob(x).sum(-1)
    nonzero = torch.nonzero(x).t() if given_nonzero else None
    ours = nb_log_likelihood(x, mu, theta, nonzero)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-3)
    g_ref = torch.autograd.grad(reference.sum(), [mu, theta])
    g_ours = torch.autograd.grad(ours.sum(), [mu, theta])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_count_log_likelihood_keeps_per_gene_theta_unbroadcast():
    x, mu, theta = _data(False)
    px = NegativeBinomial(mu=mu, theta=theta)  # scvi broadcasts theta to (n, G)
    torch.testing.assert_close(count_log_likelihood(px, x), px.log_prob(x).sum(-1),
                               rtol=1e-5, atol=1e-3)


def test_sparse_atac_encoder_and_likelihood_equal_dense():
    mdata = mixvi.datasets.pbmc_multiome_tiny()[:64].copy()
    mixvi.MultiMixVI.setup_mudata(mdata, batch_key="batch")
    module = mixvi.MultiMixVI(mdata, n_latent=3, n_hidden=16, n_components=2).module.eval()
    y = torch.as_tensor(mdata["atac"].layers["counts"].toarray(), dtype=torch.float32)
    nz = torch.nonzero(y).t()
    with torch.no_grad():
        q_dense, _ = module.atac_encoder(y)
        q_sparse, _ = module.atac_encoder(y, nz)
        out = torch.randn(y.shape)
        dense_nll = torch.nn.functional.binary_cross_entropy_with_logits(
            out, (y > 0).float(), reduction="none").sum(-1)
        peaks = torch.tensor([0, 5, 7, 100, 150])
        subset_nz = subset_nonzero(nz, peaks, y.shape[1])
        sub = y[:, peaks]
    torch.testing.assert_close(q_sparse.loc, q_dense.loc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(module._atac_nll(out, y, nz), dense_nll, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(module._atac_nll(out, y), dense_nll, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(subset_nz, torch.nonzero(sub).t())
