"""Minibatch loaders: scvi-tools' samplers over an in-memory tensor store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scvi import settings
from scvi.dataloaders import BatchDistributedSampler
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from mixvi.dataloaders._store import TensorStore, is_in_memory

#: a last minibatch smaller than this joins the one before (batch norm needs >= 2 cells)
MIN_BATCH = 2


class TailMergingBatchSampler(Sampler):
    """Wraps a batch sampler; a last batch of fewer than ``min_size`` indices joins the one
    before it, so no cell is dropped and no minibatch has a single cell (which batch norm
    cannot train on). Every other batch is passed through unchanged.

    Parameters
    ----------
    batch_sampler
        Any sampler yielding lists of indices.
    min_size
        Smallest allowed last batch.
    """

    def __init__(self, batch_sampler: Sampler, min_size: int = MIN_BATCH):
        self.batch_sampler = batch_sampler
        self.min_size = min_size

    def __iter__(self) -> Iterator[list[int]]:
        previous = None
        for batch in self.batch_sampler:
            if previous is not None:
                if len(batch) < self.min_size:
                    yield list(previous) + list(batch)
                    previous = None
                    continue
                yield previous
            previous = batch
        if previous is not None:
            yield previous

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to a distributed sampler (a new shuffle every epoch)."""
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.batch_sampler)
        sampler = getattr(self.batch_sampler, "sampler", None)
        size = getattr(self.batch_sampler, "batch_size", None)
        if n > 1 and sampler is not None and size and not getattr(self.batch_sampler, "drop_last", False):
            if len(sampler) % size and len(sampler) % size < self.min_size:
                return n - 1
        return n


def batch_sampler(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool = False,
    distributed_sampler: bool = False,
    drop_dataset_tail: bool = False,
) -> Sampler:
    """The sampler scvi-tools' :class:`~scvi.dataloaders.AnnDataLoader` builds (same order for
    the same seed), with a tiny last batch merged into the one before."""
    if distributed_sampler:
        inner = BatchDistributedSampler(
            dataset, batch_size=batch_size, drop_last=drop_last,
            drop_dataset_tail=drop_dataset_tail, shuffle=shuffle,
        )
    else:
        order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        inner = BatchSampler(order, batch_size=batch_size, drop_last=drop_last)
    return TailMergingBatchSampler(inner)


class _Positions(Dataset):
    """Positions ``0..n-1`` into ``indices``; ``dataset[list]`` gathers that minibatch."""

    def __init__(self, store: TensorStore, indices: np.ndarray, device: torch.device | None):
        self.store = store
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if device is not None:
            self.indices = self.indices.to(device)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        pos = torch.as_tensor(positions, dtype=torch.int64, device=self.indices.device)
        return self.store.gather(self.indices.index_select(0, pos))


def _no_collate(batch):
    return batch


class InMemoryDataLoader(DataLoader):
    """Drop-in for :class:`scvi.dataloaders.AnnDataLoader` over a :class:`TensorStore`.

    Each minibatch is one gather per field from tensors built once, with no AnnData or
    scipy indexing in the loop; the sampler is scvi-tools' (same cells in the same order for
    the same seed), with a tiny last batch merged into the one before.

    Parameters
    ----------
    store
        The tensors (possibly on a GPU, then minibatches are gathered there).
    indices
        Rows of the data to iterate over; ``None`` = all.
    batch_size, shuffle, drop_last, distributed_sampler, drop_dataset_tail
        As in :class:`~scvi.dataloaders.AnnDataLoader`.
    **kwargs
        Other AnnDataLoader arguments (``load_sparse_tensor``, ``pin_memory``, ...) are
        accepted and ignored: the store is already in its final layout.
    """

    def __init__(
        self,
        store: TensorStore,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 128,
        shuffle: bool = False,
        drop_last: bool = False,
        distributed_sampler: bool = False,
        drop_dataset_tail: bool = False,
        **kwargs,
    ):
        if indices is None:
            indices = np.arange(store.n_obs)
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.where(indices)[0]
        self.indices = indices
        dataset = _Positions(store, indices, store.device)
        sampler = batch_sampler(
            dataset, batch_size, shuffle, drop_last, distributed_sampler, drop_dataset_tail
        )
        super().__init__(dataset, sampler=sampler, batch_size=None, collate_fn=_no_collate)


def streaming_loader(
    adata_manager,
    indices: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 128,
    shuffle: bool = False,
    drop_last: bool = False,
    distributed_sampler: bool = False,
    drop_dataset_tail: bool = False,
    data_and_attributes=None,
    load_sparse_tensor: bool = False,
    **kwargs,
) -> DataLoader:
    """scvi-tools' dataset (reads the AnnData, e.g. backed on disk, a minibatch at a time) with
    the same sampler as :class:`InMemoryDataLoader`; ``kwargs`` go to the DataLoader."""
    if indices is None:
        indices = np.arange(adata_manager.adata.n_obs)
    indices = np.asarray(indices)
    if indices.dtype == bool:
        indices = np.where(indices)[0]
    dataset = adata_manager.create_torch_dataset(
        indices=indices, data_and_attributes=data_and_attributes,
        load_sparse_tensor=load_sparse_tensor,
    )
    sampler = batch_sampler(
        dataset, batch_size, shuffle, drop_last, distributed_sampler, drop_dataset_tail
    )
    kwargs.pop("iter_ndarray", None)
    kwargs.setdefault("num_workers", settings.dl_num_workers)
    kwargs.setdefault("persistent_workers", settings.dl_persistent_workers)
    return DataLoader(dataset, sampler=sampler, batch_size=None, **kwargs)


def make_loader(
    adata_manager,
    indices: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 128,
    shuffle: bool = False,
    data_and_attributes=None,
    **kwargs,
) -> DataLoader:
    """A loader over registered data: tensors in memory, streaming when backed.

    Same signature as :class:`scvi.dataloaders.AnnDataLoader` (it is the models'
    ``_data_loader_cls``, so scvi-tools' ``_make_data_loader`` and every getter use it).
    """
    if is_in_memory(adata_manager):
        store = TensorStore(adata_manager, data_and_attributes)
        return InMemoryDataLoader(store, indices, batch_size, shuffle, **kwargs)
    return streaming_loader(
        adata_manager, indices, batch_size, shuffle, data_and_attributes=data_and_attributes,
        **kwargs,
    )
