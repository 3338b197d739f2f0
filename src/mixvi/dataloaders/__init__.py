"""Data loading for training and inference.

For data in memory, the registered matrices are held once as torch tensors
(:class:`TensorStore`: dense where small and dense, CSR otherwise, sharing the AnnData's
buffers) and each minibatch is one gather per field, with scvi-tools' samplers (the same
cells in the same order for the same seed). Backed (on-disk) data streams through
scvi-tools' dataset. A last minibatch of one cell joins the one before.
"""

from ._loader import (
    InMemoryDataLoader,
    TailMergingBatchSampler,
    batch_sampler,
    make_loader,
    streaming_loader,
)
from ._splitter import MixDataSplitter
from ._store import NONZERO_SUFFIX, CSRRows, TensorStore, is_in_memory

__all__ = [
    "NONZERO_SUFFIX",
    "CSRRows",
    "InMemoryDataLoader",
    "MixDataSplitter",
    "TailMergingBatchSampler",
    "TensorStore",
    "batch_sampler",
    "is_in_memory",
    "make_loader",
    "streaming_loader",
]
