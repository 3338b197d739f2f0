"""Tiny trained MixVI models shared by the reliability and save/load tests."""

from __future__ import annotations

import anndata as ad
import scvi
import torch

import mixvi

from helpers import FAST_TRAIN, make_counts

QUIET = {**FAST_TRAIN, "train_size": 1.0, "batch_size": 64}


def setup_tiny_model(adata, **kwargs) -> mixvi.MixVI:
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    return mixvi.MixVI(adata, n_latent=4, n_hidden=16, n_components=3, **kwargs)


def tiny_counts(seed: int = 0) -> ad.AnnData:
    return make_counts(n_cells=200, n_genes=50, seed=seed)


def model_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def trained_and_saved(tmp_path_factory):
    """A model trained 3 epochs, saved, with its data written to h5ad."""
    scvi.settings.seed = 0
    root = tmp_path_factory.mktemp("saved")
    adata = tiny_counts()
    model = setup_tiny_model(adata)
    model.train(max_epochs=3, prior_init_epoch=1, **QUIET)
    model.save(root / "model", overwrite=True)
    adata.write_h5ad(root / "data.h5ad")
    return model, adata, root
