"""scvi-tools' train/validation splitter with mixvi's loaders."""

from __future__ import annotations

from scvi.dataloaders import DataSplitter

from mixvi.dataloaders._loader import InMemoryDataLoader, streaming_loader
from mixvi.dataloaders._store import TensorStore, is_in_memory


class MixDataSplitter(DataSplitter):
    """:class:`scvi.dataloaders.DataSplitter` whose loaders hold the data as tensors.

    The split (which cells train, which validate) is scvi-tools' own. For in-memory data
    the train, validation and test loaders share one :class:`TensorStore` built at setup
    (one gather per minibatch); backed data keeps scvi-tools' streaming dataset. Either
    way a last minibatch of fewer than two cells joins the one before it instead of
    crashing batch norm or being dropped.

    Parameters
    ----------
    adata_manager, train_size, validation_size, shuffle_set_split
        As in :class:`scvi.dataloaders.DataSplitter`.
    load_sparse_tensor, pin_memory, external_indexing, **kwargs
        As in :class:`scvi.dataloaders.DataSplitter`.
    device
        Put the tensor store on this device (``"cuda"``: minibatches are gathered on the
        GPU, nothing is copied per step); ``None`` keeps it in host memory.
    """

    def __init__(self, adata_manager, *args, device=None, **kwargs):
        super().__init__(adata_manager, *args, **kwargs)
        self.store_device = device
        self._store: TensorStore | None = None

    @property
    def store(self) -> TensorStore | None:
        """The tensors behind the loaders (``None`` for backed data)."""
        if self._store is None and is_in_memory(self.adata_manager):
            keys = self.data_loader_kwargs.get("data_and_attributes")
            self._store = TensorStore(self.adata_manager, keys)
            if self.store_device is not None:
                self._store.to(self.store_device)
        return self._store

    def _loader(self, indices, shuffle: bool, drop_last: bool):
        kwargs = dict(self.data_loader_kwargs)
        if self.store is not None:
            return InMemoryDataLoader(
                self.store, indices=indices, shuffle=shuffle, drop_last=drop_last, **kwargs
            )
        kwargs.setdefault("pin_memory", self.pin_memory)
        return streaming_loader(
            self.adata_manager, indices=indices, shuffle=shuffle, drop_last=drop_last,
            load_sparse_tensor=self.load_sparse_tensor, **kwargs,
        )

    def train_dataloader(self):
        """Shuffled minibatches of the training cells."""
        return self._loader(self.train_idx, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self):
        """Minibatches of the validation cells (``None`` without a validation split)."""
        if len(self.val_idx) > 0:
            return self._loader(self.val_idx, shuffle=False, drop_last=False)
        return None

    def test_dataloader(self):
        """Minibatches of the test cells (``None`` without a test split)."""
        if len(self.test_idx) > 0:
            return self._loader(self.test_idx, shuffle=False, drop_last=False)
        return None
