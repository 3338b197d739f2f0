"""The registered data of a model held once as torch tensors, gathered a minibatch at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

# A sparse matrix whose dense copy takes at most this many bytes is held dense (one
# index_select per minibatch); larger ones stay CSR, sharing the AnnData's buffers, so
# memory stays linear in the stored counts.
DENSE_MAX_BYTES = 64 * 2**20


def is_in_memory(adata_manager) -> bool:
    """Whether the registered data can be held as tensors (not backed on disk)."""
    return not getattr(adata_manager.adata, "isbacked", False)


class CSRRows:
    """Row gather from a CSR matrix held as three torch tensors (shares the scipy buffers).

    Parameters
    ----------
    matrix
        scipy CSR matrix ``(n_rows, n_cols)``.
    dtype
        dtype of the gathered dense rows.
    """

    def __init__(self, matrix: sp.csr_matrix, dtype: torch.dtype = torch.float32):
        matrix = sp.csr_matrix(matrix) if not sp.isspmatrix_csr(matrix) else matrix
        if not matrix.has_canonical_format or (matrix.data == 0).any():
            # a copy, only when needed: duplicates summed, stored zeros dropped, so every
            # stored value is a non-zero count
            matrix = matrix.copy()
            matrix.sum_duplicates()
            matrix.eliminate_zeros()
        self.shape = matrix.shape
        # indptr is small (one entry per row): int64; indices keep their stored dtype (int32
        # is a valid index type), so indices and values share the scipy buffers: no copy
        self.indptr = torch.from_numpy(np.asarray(matrix.indptr, dtype=np.int64))
        self.indices = torch.from_numpy(np.ascontiguousarray(matrix.indices))
        self.values = torch.from_numpy(np.ascontiguousarray(matrix.data)).to(dtype)
        self.dtype = dtype

    def to(self, device: torch.device | str) -> CSRRows:
        """Move the three tensors to ``device`` (in place) and return self."""
        self.indptr = self.indptr.to(device)
        self.indices = self.indices.to(device)
        self.values = self.values.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Device of the stored tensors."""
        return self.values.device

    def nbytes(self) -> int:
        """Bytes held by the three tensors."""
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.indices, self.values))

    def _positions(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row in the block, position in indices/values)`` of every stored value."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        row_of = torch.repeat_interleave(torch.arange(rows.shape[0], device=self.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        offset = (starts - first).index_select(0, row_of)
        pos = torch.arange(row_of.shape[0], device=self.device) + offset
        return row_of, pos

    def gather(self, rows: torch.Tensor, dense: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The ``(len(rows), n_cols)`` block of the given rows, in that order.

        Returns
        -------
        ``(block, nonzero)``: the dense block (``None`` with ``dense=False``) and the
        ``(2, nnz)`` row and column indices of its stored non-zero values, in row-major order
        -- what ``torch.nonzero(block).T`` would find, without scanning the block.
        """
        row_of, pos = self._positions(rows)
        cols = self.indices.index_select(0, pos).long()
        block = None
        if dense:
            values = self.values.index_select(0, pos)
            block = torch.zeros(rows.shape[0] * self.shape[1], dtype=self.dtype, device=self.device)
            block.index_copy_(0, row_of * self.shape[1] + cols, values)
            block = block.view(rows.shape[0], self.shape[1])
        return block, torch.stack([row_of, cols])

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        """Dense ``(len(rows), n_cols)`` block of the given rows, in that order."""
        return self.gather(rows)[0]


#: suffix of the minibatch key that carries where a sparse count matrix's values are
NONZERO_SUFFIX = "_nonzero"


def _dense(value, dtype: np.dtype) -> torch.Tensor:
    if isinstance(value, pd.DataFrame):
        value = value.to_numpy()
    arr = value.toarray() if sp.issparse(value) else np.asarray(value)
    if arr.ndim == 1:
        arr = arr[:, None]
    return torch.from_numpy(np.ascontiguousarray(arr.astype(dtype, copy=False)))


class TensorStore:
    """Every registered field of an AnnData manager as torch tensors, built once.

    The keys and dtypes are those scvi-tools' :class:`~scvi.data.AnnTorchDataset` returns,
    so a minibatch from :meth:`gather` holds the same values as one from
    :class:`scvi.dataloaders.AnnDataLoader`. A sparse count matrix is held as
    :class:`CSRRows` (sharing the AnnData's buffers), and also dense when that copy takes at
    most ``DENSE_MAX_BYTES``; its minibatch then also carries ``<key>_nonzero``, the
    ``(2, nnz)`` row and column indices of its non-zero entries, which the likelihoods and
    the sparse encoder use instead of scanning the block.

    Parameters
    ----------
    adata_manager
        A registered :class:`~scvi.data.AnnDataManager` with in-memory data.
    data_and_attributes
        Registry keys (list) or ``{key: dtype}`` to hold; ``None`` holds all, as scvi does.
    """

    def __init__(self, adata_manager, data_and_attributes=None):
        dataset = adata_manager.create_torch_dataset(data_and_attributes=data_and_attributes)
        self.keys_and_dtypes = dict(dataset.keys_and_dtypes)
        self.n_obs = adata_manager.adata.n_obs
        self.tensors: dict[str, torch.Tensor] = {}
        self.sparse: dict[str, CSRRows] = {}
        for key, dtype in self.keys_and_dtypes.items():
            value = adata_manager.get_from_registry(key)
            if isinstance(value, str):  # e.g. the minified-data type flag
                continue
            if sp.issparse(value):
                tdtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
                self.sparse[key] = CSRRows(value.tocsr(), tdtype)
                if int(np.prod(value.shape)) * np.dtype(dtype).itemsize > DENSE_MAX_BYTES:
                    continue
            self.tensors[key] = _dense(value, dtype)

    @property
    def device(self) -> torch.device:
        """Device of the stored tensors."""
        first = next(iter({**self.sparse, **self.tensors}.values()))
        return first.device

    def to(self, device: torch.device | str) -> TensorStore:
        """Move every tensor to ``device`` (a GPU-resident store) and return self."""
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        for value in self.sparse.values():
            value.to(device)
        return self

    def nbytes(self) -> int:
        """Bytes held by the stored tensors."""
        dense = sum(v.numel() * v.element_size() for v in self.tensors.values())
        return dense + sum(v.nbytes() for v in self.sparse.values())

    def gather(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The minibatch of the given (global) row indices, one gather per field."""
        out = {key: value.index_select(0, rows) for key, value in self.tensors.items()}
        for key, matrix in self.sparse.items():
            block, out[key + NONZERO_SUFFIX] = matrix.gather(rows, dense=key not in out)
            if block is not None:
                out[key] = block
        return out
