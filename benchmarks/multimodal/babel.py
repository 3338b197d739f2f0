"""A BABEL-style baseline (Wu et al., PNAS 2021): two deterministic autoencoders whose
encoders share a latent space, trained on the four reconstructions (RNA<-RNA, ATAC<-ATAC,
RNA<-ATAC, ATAC<-RNA) with a negative-binomial loss for RNA and binary cross-entropy for the
peaks. Benchmark code only (not part of mixvi): the comparison point the design notes name.

Trained with Adam (lr 1e-3, batch 128) and early stopping (patience 10) on the validation
cells of the same split the other models use; the best epoch's weights are kept.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn


def _mlp(n_in: int, n_out: int, n_hidden: int = 128) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, n_hidden), nn.BatchNorm1d(n_hidden), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(n_hidden, n_hidden), nn.BatchNorm1d(n_hidden), nn.ReLU(),
        nn.Linear(n_hidden, n_out),
    )


class Babel(nn.Module):
    """Encoders RNA -> z, ATAC -> z; decoders z -> NB(RNA), z -> Bernoulli(peaks)."""

    def __init__(self, n_genes: int, n_peaks: int, n_latent: int = 16):
        super().__init__()
        self.enc_rna, self.enc_atac = _mlp(n_genes, n_latent), _mlp(n_peaks, n_latent)
        self.dec_rna, self.dec_atac = _mlp(n_latent, n_genes), _mlp(n_latent, n_peaks)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def encode(self, rna=None, atac=None):
        if rna is not None:
            return self.enc_rna(torch.log1p(rna))
        return self.enc_atac((atac > 0).float())

    def rna_nll(self, z, x):
        scale = torch.softmax(self.dec_rna(z), -1)
        mu = scale * x.sum(1, keepdim=True)
        theta = torch.exp(self.log_theta)
        log_theta_mu = torch.log(theta + mu + 1e-8)
        ll = (theta * (torch.log(theta + 1e-8) - log_theta_mu) + x * (torch.log(mu + 1e-8) - log_theta_mu)
              + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))
        return -ll.sum(-1)

    def atac_nll(self, z, y):
        return F.binary_cross_entropy_with_logits(self.dec_atac(z), (y > 0).float(), reduction="none").sum(-1)

    def loss(self, x, y):
        zr, za = self.encode(rna=x), self.encode(atac=y)
        return (self.rna_nll(zr, x) + self.atac_nll(za, y) + self.rna_nll(za, x) + self.atac_nll(zr, y)).mean()


def _dense(M, rows):
    block = M[rows]
    return torch.as_tensor(block.toarray() if sp.issparse(block) else np.asarray(block), dtype=torch.float32)


def fit(rna, atac, train_idx, val_idx, max_epochs: int = 200, patience: int = 10, seed: int = 0):
    """Train with early stopping on the validation cells; returns (model, epochs run)."""
    torch.manual_seed(seed)
    model = Babel(rna.shape[1], atac.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    best, best_state, wait, epoch = np.inf, None, 0, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = rng.permutation(train_idx)
        for start in range(0, len(order), 128):
            rows = np.sort(order[start : start + 128])
            if len(rows) < 2:
                continue
            opt.zero_grad()
            model.loss(_dense(rna, rows), _dense(atac, rows)).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = np.mean([float(model.loss(_dense(rna, val_idx[s : s + 512]), _dense(atac, val_idx[s : s + 512])))
                           for s in range(0, len(val_idx), 512)])
        if val < best:
            best, best_state, wait = val, copy.deepcopy(model.state_dict()), 0
        else:
            wait += 1
            if wait >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), epoch


@torch.no_grad()
def predict(model, rna=None, atac=None, batch: int = 512):
    """Latent and translation of one modality: ``(z, other modality's prediction)``."""
    M = rna if rna is not None else atac
    zs, preds = [], []
    for s in range(0, M.shape[0], batch):
        rows = np.arange(s, min(s + batch, M.shape[0]))
        if rna is not None:
            z = model.encode(rna=_dense(rna, rows))
            preds.append(torch.sigmoid(model.dec_atac(z)).numpy())
        else:
            z = model.encode(atac=_dense(atac, rows))
            preds.append(torch.softmax(model.dec_rna(z), -1).numpy() * 1e4)
        zs.append(z.numpy())
    return np.concatenate(zs), np.concatenate(preds)
