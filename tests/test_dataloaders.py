"""The data path: tensors held once, scvi-tools' minibatches, no single-cell minibatch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from scvi.dataloaders import AnnDataLoader, DataSplitter

import mixvi
from mixvi.dataloaders import CSRRows, InMemoryDataLoader, TailMergingBatchSampler, TensorStore
from mixvi.dataloaders import _store

from helpers import FAST_TRAIN, history, make_counts

torch.set_num_threads(1)


@pytest.mark.parametrize(("n", "expected"), [(257, [128, 129]), (256, [128, 128]), (130, [128, 2]),
                                             (1, [1])])
def test_tail_merging_keeps_every_cell_once(n, expected):
    inner = torch.utils.data.BatchSampler(range(n), batch_size=128, drop_last=False)
    sampler = TailMergingBatchSampler(inner)
    batches = list(sampler)
    assert [len(b) for b in batches] == expected
    assert len(sampler) == len(expected)
    assert sorted(i for b in batches for i in b) == list(range(n))


def test_csr_rows_gather_equals_scipy():
    rng = np.random.default_rng(0)
    M = sp.random(200, 37, density=0.1, format="csr", random_state=0, dtype=np.float32)
    M.data[:] = rng.integers(1, 9, M.nnz)
    rows = torch.as_tensor(rng.permutation(200)[:64])
    np.testing.assert_array_equal(CSRRows(M)[rows].numpy(), M[rows.numpy()].toarray())
    empty = sp.csr_matrix((5, 3), dtype=np.float32)
    assert CSRRows(empty)[torch.arange(5)].abs().sum() == 0


@pytest.mark.parametrize("dense", [True, False])
def test_same_minibatches_as_scvi_loader(dense, monkeypatch):
    """Same seed -> the same cells in the same order with the same values, every key."""
    if not dense:
        monkeypatch.setattr(_store, "DENSE_MAX_BYTES", 0)
    adata = make_counts(n_cells=300)
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    manager = mixvi.MixVI(adata, n_latent=2).adata_manager
    store = TensorStore(manager)
    assert ("X" in store.tensors) == dense and "X" in store.sparse
    indices = np.random.default_rng(1).permutation(300)[:250]
    torch.manual_seed(3)
    ours = list(InMemoryDataLoader(store, indices=indices, batch_size=64, shuffle=True))
    torch.manual_seed(3)
    theirs = list(AnnDataLoader(manager, indices=indices, batch_size=64, shuffle=True))
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert a.keys() == set(b) | {"X_nonzero"}
        for key in b:
            assert a[key].dtype == b[key].dtype, key
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        # where the counts are, found without scanning the block
        torch.testing.assert_close(a["X_nonzero"], torch.nonzero(b["X"]).t())


class _ScviSplitMixVI(mixvi.MixVI):
    """MixVI trained with scvi-tools' own DataSplitter (for the comparison below)."""

    _data_splitter_cls = DataSplitter


def test_same_trained_latent_as_with_scvi_loader():
    latents = []
    for cls in (mixvi.MixVI, _ScviSplitMixVI):
        adata = make_counts(n_cells=300)
        scvi.settings.seed = 0
        cls.setup_anndata(adata, layer="counts", batch_key="batch")
        model = cls(adata, n_latent=3, n_hidden=16, n_components=3)
        model.train(max_epochs=4, prior_init_epoch=1, **FAST_TRAIN)
        latents.append(model.get_latent_representation())
    np.testing.assert_allclose(latents[0], latents[1], atol=1e-5)


@pytest.mark.parametrize(("n_cells", "train_size"), [(129, 1.0), (143, 0.9)])
def test_last_minibatch_of_one_cell_trains(n_cells, train_size):
    """n_train % batch_size == 1 (129 training cells in minibatches of 128; with 143 cells and
    train_size=0.9, ceil(128.7) = 129) crashed batch norm with scvi-tools' loader ('Expected
    more than 1 value per channel'); the single cell now joins the previous minibatch."""
    adata = make_counts(n_cells=n_cells)
    scvi.settings.seed = 0
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata, n_latent=2, n_hidden=8, n_components=2)
    model.train(max_epochs=2, batch_size=128, train_size=train_size, prior_init_epoch=1,
                **FAST_TRAIN)
    elbo = history(model, "elbo_train")
    assert len(elbo) == 2 and np.isfinite(elbo).all()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        _ScviSplitMixVI.setup_anndata(adata, layer="counts", batch_key="batch")
        crashing = _ScviSplitMixVI(adata, n_latent=2, n_hidden=8, n_components=2)
        crashing.train(max_epochs=1, batch_size=128, train_size=train_size, **FAST_TRAIN)


class _PerStepLoggingPlan(mixvi.train.MixTrainingPlan):
    """scvi-tools' own training step (logs through Lightning at every step)."""

    def training_step(self, batch, batch_idx):
        return scvi.train.TrainingPlan.training_step(self, batch, batch_idx)

    def on_train_epoch_end(self):
        return None


class _PerStepMixVI(mixvi.MixVI):
    _training_plan_cls = _PerStepLoggingPlan


def test_epoch_logging_records_what_per_step_logging_records():
    """The plan accumulates on the device and logs once per epoch: same history values."""
    histories = []
    for cls in (mixvi.MixVI, _PerStepMixVI):
        adata = make_counts(n_cells=300)
        scvi.settings.seed = 0
        cls.setup_anndata(adata, layer="counts", batch_key="batch")
        model = cls(adata, n_latent=3, n_hidden=16, n_components=3)
        model.train(max_epochs=3, prior_init_epoch=1, batch_size=50, **FAST_TRAIN)
        histories.append(model.history)
    ours, theirs = histories
    for key in ("elbo_train", "reconstruction_loss_train", "kl_local_train", "train_loss",
                "mixture_entropy_train"):
        np.testing.assert_allclose(
            ours[key].to_numpy(dtype=float), theirs[key].to_numpy(dtype=float), rtol=1e-5,
            err_msg=key,
        )


def test_device_resident_store_gives_the_same_training():
    """``datasplitter_kwargs={"device": ...}`` holds the store on that device (a GPU-resident
    data path on a GPU); on the CPU it must train exactly as the default."""
    latents = []
    for kwargs in ({}, {"datasplitter_kwargs": {"device": "cpu"}}):
        adata = make_counts(n_cells=200)
        scvi.settings.seed = 0
        mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
        model = mixvi.MixVI(adata, n_latent=3, n_hidden=16, n_components=3)
        model.train(max_epochs=3, prior_init_epoch=1, **FAST_TRAIN, **kwargs)
        latents.append(model.get_latent_representation())
    np.testing.assert_array_equal(latents[0], latents[1])
