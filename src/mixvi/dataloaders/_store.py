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
        if not matrix.has_canonical_format:
            matrix = matrix.copy()
            matrix.sum_duplicates()
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

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        """Dense ``(len(rows), n_cols)`` block of the given rows, in that order."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        out = torch.zeros((rows.shape[0], self.shape[1]), dtype=self.dtype, device=self.device)
        if self.values.numel() == 0:
            return out
        row_of = torch.repeat_interleave(torch.arange(rows.shape[0], device=self.device), lengths)
        # position of every stored value of the selected rows inside indices/values
        first = torch.cumsum(lengths, 0) - lengths
        pos = torch.arange(row_of.shape[0], device=self.device) - first[row_of] + starts[row_of]
        out[row_of, self.indices[pos]] = self.values[pos]
        return out


def _as_tensor_store(value, dtype: np.dtype) -> torch.Tensor | CSRRows:
    """One registered field as a dense tensor or :class:`CSRRows`."""
    tdtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    if isinstance(value, pd.DataFrame):
        value = value.to_numpy()
    if sp.issparse(value):
        n = int(np.prod(value.shape))
        if n * np.dtype(dtype).itemsize <= DENSE_MAX_BYTES:
            return torch.from_numpy(value.toarray().astype(dtype, copy=False))
        return CSRRows(value.tocsr(), tdtype)
    arr = np.asarray(value)
    if arr.ndim == 1:
        arr = arr[:, None]
    return torch.from_numpy(np.ascontiguousarray(arr.astype(dtype, copy=False)))


class TensorStore:
    """Every registered field of an AnnData manager as torch tensors, built once.

    The keys and dtypes are those scvi-tools' :class:`~scvi.data.AnnTorchDataset` returns,
    so a minibatch from :meth:`gather` is the same dictionary (same keys, dtypes and
    values) as one from :class:`scvi.dataloaders.AnnDataLoader`.

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
        self.tensors: dict[str, torch.Tensor | CSRRows] = {}
        for key, dtype in self.keys_and_dtypes.items():
            value = adata_manager.get_from_registry(key)
            if isinstance(value, str):  # e.g. the minified-data type flag
                continue
            self.tensors[key] = _as_tensor_store(value, dtype)

    def to(self, device: torch.device | str) -> TensorStore:
        """Move every tensor to ``device`` (a GPU-resident store) and return self."""
        for key, value in self.tensors.items():
            self.tensors[key] = value.to(device)
        return self

    def nbytes(self) -> int:
        """Bytes held by the stored tensors."""
        return sum(
            v.nbytes() if isinstance(v, CSRRows) else v.numel() * v.element_size()
            for v in self.tensors.values()
        )

    def gather(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The minibatch of the given (global) row indices, one gather per field."""
        return {
            key: value[rows] if isinstance(value, CSRRows) else value.index_select(0, rows)
            for key, value in self.tensors.items()
        }
