"""Gaussian encoder for very sparse inputs (ATAC peaks): a sparse first layer."""

from __future__ import annotations

import torch
from scvi.nn import FCLayers
from torch import nn
from torch.distributions import Normal


class SparseInputEncoder(nn.Module):
    """Gaussian encoder whose first layer multiplies a sparse copy of the input.

    ATAC rows are ~99.6% zero, so ``x @ W`` as a sparse product is much cheaper than the
    dense :class:`~scvi.nn.Encoder`'s first layer (forward and backward). Same outputs as
    scvi's encoder: ``(q(z|x), h)`` with ``h`` the trunk's last hidden layer.
    """

    def __init__(self, n_input: int, n_output: int, n_hidden: int, n_layers: int, dropout_rate: float):
        super().__init__()
        self.first = nn.Linear(n_input, n_hidden)
        self.post = nn.Sequential(
            nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3), nn.ReLU(), nn.Dropout(dropout_rate)
        )
        self.rest = (
            FCLayers(n_hidden, n_hidden, n_layers=n_layers - 1, n_hidden=n_hidden, dropout_rate=dropout_rate)
            if n_layers > 1
            else nn.Identity()
        )
        self.mean_encoder = nn.Linear(n_hidden, n_output)
        self.var_encoder = nn.Linear(n_hidden, n_output)
        self.var_eps = 1e-4
        self.transform = torch.log1p

    def forward(
        self, x: torch.Tensor, nonzero: torch.Tensor | None = None
    ) -> tuple[Normal, torch.Tensor]:
        """``(q(z|x), h)`` for input ``x`` ``(n, n_input)``.

        ``x`` holds raw values; ``transform`` (elementwise, ``transform(0) = 0``: binarise or
        ``log1p``) is applied to the non-zero entries only. ``nonzero`` (``(2, nnz)`` row and
        column indices of those entries) makes the first layer a sum of the weight columns of
        those entries, without scanning ``x``; otherwise ``x`` is made sparse first.
        """
        h = self.trunk(x, nonzero)
        q_v = torch.exp(self.var_encoder(h)) + self.var_eps
        return Normal(self.mean_encoder(h), q_v.sqrt()), h

    def trunk(self, x: torch.Tensor, nonzero: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden layer ``(n, n_hidden)`` (see :meth:`forward`)."""
        if nonzero is None:
            h = torch.sparse.mm(self.transform(x).to_sparse(), self.first.weight.t())
        else:
            rows, cols = nonzero[0], nonzero[1]
            flat = rows * x.shape[1] + cols
            values = self.transform(x.reshape(-1).index_select(0, flat)).unsqueeze(1)
            columns = self.first.weight.t().index_select(0, cols) * values
            h = torch.zeros(x.shape[0], columns.shape[1], dtype=columns.dtype, device=x.device)
            h = h.index_add(0, rows, columns)
        return self.rest(self.post(h + self.first.bias))
