"""MultiMixVI at its defaults against the trivial translation floors on small, sparse data.

Slow (trains to early stopping: ~4 min on one CPU thread). A 2,000-cell training / 500-cell
test subset of SNARE-seq (1,677 genes, 25,734 peaks, ~300 detected features per cell). The
floors are computed here on the same held-out cells: every test cell's RNA predicted as the
mean training profile, every peak as its training frequency.

Measured (subset and training seeds 0 / 1 / 2, test cells held out):

==========================  =====================  =====================  =====================
held-out score              default (calibrated)   uncalibrated decoder   floor
==========================  =====================  =====================  =====================
RNA from ATAC, per-cell r   0.506 / 0.505 / 0.501  0.506 (seed 0)         0.497 / 0.498 / 0.493
peaks from RNA, AUROC       0.826 / 0.824 / 0.825  0.807 (seed 0)         0.819 / 0.817 / 0.818
peaks from RNA, AUPRC       0.028 / 0.028 / 0.028  0.021 (seed 0)         0.027 / 0.026 / 0.026
==========================  =====================  =====================  =====================

Without the calibration on the validation cells that ``train`` runs
(:meth:`mixvi.MultiMixVI.calibrate_translation`) the peaks fell below their floor here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mixvi
from mixvi import metrics as M

torch.set_num_threads(1)


def _subset(mdata, n_train: int = 2000, n_test: int = 500, seed: int = 0):
    from sklearn.model_selection import train_test_split

    idx = np.arange(mdata.n_obs)
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=mdata.obs["cell_type"])
    rng = np.random.default_rng(seed)
    tr, te = np.sort(rng.choice(tr, n_train, replace=False)), np.sort(rng.choice(te, n_test, replace=False))
    return mdata[tr].copy(), mdata[te].copy()


@pytest.fixture(scope="module")
def trained():
    import scvi

    scvi.settings.seed = 0
    mtr, mte = _subset(mixvi.datasets.snareseq_mouse_cortex())
    detected = ((mtr["rna"].layers["counts"] > 0).sum(1).mean()
                + (mtr["atac"].layers["counts"] > 0).sum(1).mean())
    assert 150 < detected < 600  # the sparse regime this test is about
    mixvi.MultiMixVI.setup_mudata(mtr, batch_key="batch")
    model = mixvi.MultiMixVI(mtr)
    model.train(enable_progress_bar=False)  # defaults: validation split, early stopping
    assert len(model.history["elbo_validation"]) > 0
    mixvi.MultiMixVI.setup_mudata(mte, batch_key="batch")
    return model, mtr, mte


@pytest.mark.slow
def test_default_rna_from_atac_beats_the_mean_profile(trained):
    model, mtr, mte = trained
    obs = mte["rna"].layers["counts"]
    rna = M.rna_translation_metrics(model.predict_rna_from_atac(mte).X, obs)
    floor = M.rna_translation_metrics(M.mean_profile_baseline(mtr["rna"].layers["counts"], mte.n_obs), obs)
    assert rna["pearson_cell"] > floor["pearson_cell"]
    assert rna["pearson_gene"] > 0.02  # the floor predicts one profile: per-gene r undefined (0)


@pytest.mark.slow
def test_default_peaks_from_rna_beat_the_peak_frequencies(trained):
    model, mtr, mte = trained
    obs = mte["atac"].layers["counts"]
    atac = M.atac_translation_metrics(model.predict_atac_from_rna(mte).X, obs)
    floor = M.atac_translation_metrics(
        M.mean_profile_baseline(mtr["atac"].layers["counts"], mte.n_obs, modality="atac"), obs)
    assert atac["auroc"] > floor["auroc"]
    assert atac["auprc"] > floor["auprc"]
