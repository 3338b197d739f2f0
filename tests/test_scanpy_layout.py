"""The layout most users hold -- raw counts in ``layers["counts"]``, log-normalised ``.X``
(RNA) or TF-IDF ``.X`` (ATAC) -- through every entry point: setup, model creation, training,
inference on new data, save/load, query mapping, MultiMixVI and the CLI.

Each test would fail if an entry point read ``.X`` instead of the registered layer: the
log-normalised ``.X`` is refused as non-integer, and the outputs are checked against the
same model run on ``.X`` = counts.
"""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pytest
import scvi
import torch

import mixvi
from mixvi.data import assert_unchanged, snapshot

from helpers import FAST_TRAIN, lognormalize, make_counts, tfidf

torch.set_num_threads(1)
TRAIN = {**FAST_TRAIN, "max_epochs": 3, "prior_init_epoch": 1}
SMALL = {"n_latent": 4, "n_hidden": 16, "n_components": 3}


def _fit(adata: ad.AnnData, layer: str | None = "counts") -> mixvi.MixVI:
    scvi.settings.seed = 0
    mixvi.MixVI.setup_anndata(adata, layer=layer, batch_key="batch")
    model = mixvi.MixVI(adata, **SMALL)
    model.train(**TRAIN)
    return model


def test_scanpy_layout_trains_like_counts_in_x():
    """Same counts, same seed: the model on the layer equals the model on ``.X`` = counts."""
    scanpy_layout = make_counts()
    counts_layout = make_counts(layout="counts")
    assert scanpy_layout.X.max() < 10  # really log-normalised, not counts
    a = _fit(scanpy_layout, layer="counts")
    b = _fit(counts_layout, layer=None)
    np.testing.assert_allclose(
        a.get_latent_representation(), b.get_latent_representation(), atol=1e-5
    )


def test_log_normalised_x_without_layer_is_refused_with_the_fix():
    adata = make_counts()
    with pytest.raises(ValueError, match=r"adata\.X.*non-integer.*log-normalised.*layer='counts'"):
        mixvi.MixVI.setup_anndata(adata, batch_key="batch")


def test_new_data_save_load_and_query_in_scanpy_layout(tmp_path):
    adata = make_counts()
    before = snapshot(adata)
    model = _fit(adata)
    new = make_counts(seed=5)  # other cells, scanpy layout
    latent_new = model.get_latent_representation(new)
    assert latent_new.shape == (new.n_obs, 4) and np.isfinite(latent_new).all()
    model.save(tmp_path / "m", overwrite=True)
    loaded = mixvi.MixVI.load(str(tmp_path / "m"), adata=adata)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )
    query = make_counts(seed=7)
    query.obs["batch"] = query.obs["batch"].cat.rename_categories({"b0": "q0", "b1": "q1"})
    q = mixvi.MixVI.load_query_data(query, model)
    q.train(max_epochs=2, **FAST_TRAIN)
    assert np.isfinite(q.get_latent_representation()).all()
    assert_unchanged(before, adata, allowed_obs=("_scvi_*",), allowed_uns=("_scvi_*",))


def _multiome(layout: str) -> md.MuData:
    mdata = mixvi.datasets.pbmc_multiome_tiny()
    rna, atac = mdata["rna"][:200].copy(), mdata["atac"][:200].copy()
    if layout == "scanpy":
        lognormalize(rna)
        tfidf(atac)
    rna.obs["batch"] = np.where(np.arange(200) % 2, "x", "y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = md.MuData({"rna": rna, "atac": atac})
    out.obs["batch"] = rna.obs["batch"].values
    return out


def test_multimixvi_log_normalised_rna_and_tfidf_atac(tmp_path):
    """RNA ``.X`` log-normalised and ATAC ``.X`` TF-IDF beside counts layers: setup, model,
    training, translation and load all read the layers, and give what ``.X`` = counts gives."""
    outs = {}
    for layout in ("scanpy", "counts"):
        mdata = _multiome(layout)
        scvi.settings.seed = 0
        mixvi.MultiMixVI.setup_mudata(mdata, rna_layer="counts", atac_layer="counts",
                                      batch_key="batch")
        model = mixvi.MultiMixVI(mdata, **SMALL)
        model.train(**TRAIN)
        expr = model.predict_rna_from_atac(mdata)
        outs[layout] = (model.get_latent_representation(), expr.X)
        if layout == "scanpy":
            model.save(tmp_path / "mm", overwrite=True)
            loaded = mixvi.MultiMixVI.load(str(tmp_path / "mm"), adata=mdata)
            np.testing.assert_allclose(
                loaded.get_latent_representation(), outs[layout][0], atol=1e-6
            )
    np.testing.assert_allclose(outs["scanpy"][0], outs["counts"][0], atol=1e-5)
    np.testing.assert_allclose(outs["scanpy"][1], outs["counts"][1], rtol=1e-4, atol=1e-6)


def test_cli_fit_with_counts_layer(tmp_path):
    from mixvi.cli import main

    adata = make_counts()
    path = tmp_path / "in.h5ad"
    adata.write_h5ad(path)
    code = main(["fit", str(path), "--layer", "counts", "--batch-key", "batch",
                 "--n-components", "3", "--max-epochs", "2", "--out", str(tmp_path / "o.h5ad")])
    assert code == 0
    out = ad.read_h5ad(tmp_path / "o.h5ad")
    assert out.obsm["X_mixvi"].shape[0] == adata.n_obs
    np.testing.assert_allclose(out.X.toarray(), adata.X.toarray())  # .X left as it was
