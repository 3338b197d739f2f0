"""Calibration of MultiMixVI's translations on held-out cells (shrinkage toward the population).

The fits are checked against data generated with known weights; the model-level tests check
that ``train`` fits on exactly its validation cells, that the stored reference is the
training cells' population (computed here independently) and that save/load keeps it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_multimixvi

import mixvi
from mixvi.module._translation_calibration import (
    RnaShrinkageFit,
    TranslationCalibration,
    fit_peak_weights,
    rate_to_link,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("link", ["logit", "cloglog"])
def test_peak_weights_recover_the_generating_weights(link):
    g = torch.Generator().manual_seed(0)
    m = 200_000
    decoded, factor = torch.randn(m, generator=g), 0.5 * torch.randn(m, generator=g)
    reference = rate_to_link(torch.rand(m, generator=g) * 0.3 + 0.01, link)
    true = torch.tensor([0.3, 0.8, 0.6, -0.5])
    score = true[0] * decoded + true[1] * factor + true[2] * reference + true[3]
    p = torch.sigmoid(score) if link == "logit" else -torch.expm1(-torch.exp(score))
    is_open = torch.rand(m, generator=g) < p
    with torch.inference_mode():  # as the model hands them over
        decoded, factor, reference, is_open = (t.clone() for t in (decoded, factor, reference, is_open))
    w = fit_peak_weights(decoded, factor, reference, is_open, link)
    torch.testing.assert_close(w, true, atol=0.06, rtol=0.0)


def test_rna_shrinkage_recovers_the_mixing_weight():
    rng = np.random.default_rng(0)
    n_genes = 200
    reference = torch.tensor(rng.dirichlet(np.ones(n_genes)), dtype=torch.float32)
    decoded = torch.tensor(rng.dirichlet(np.ones(n_genes) * 0.3, size=400), dtype=torch.float32)
    truth = 0.6 * decoded + 0.4 * reference  # the decoder is over-confident by this much
    counts = torch.tensor(np.stack([rng.multinomial(300, p / p.sum()) for p in truth.numpy()]),
                          dtype=torch.float32)
    fit = RnaShrinkageFit(reference)
    fit.add(decoded[:200], counts[:200])
    fit.add(decoded[200:], counts[200:])  # streaming over minibatches
    assert abs(fit.best() - 0.4) <= 0.05


def test_identity_until_fitted_and_old_state_dicts_load():
    cal = TranslationCalibration(n_genes=5, n_peaks=4)
    scale = torch.softmax(torch.randn(3, 5), -1)
    decoded, factor = torch.randn(3, 4), torch.randn(3, 1)
    assert not cal.fitted
    torch.testing.assert_close(cal.rna(scale), scale)
    torch.testing.assert_close(cal.peak_score(decoded, factor), decoded + factor)
    other = TranslationCalibration(n_genes=5, n_peaks=4)
    other.set(torch.full((5,), 0.2), 0.5, torch.ones(4), torch.tensor([0.0, 0.0, 1.0, 0.0]), 7)
    cal.load_state_dict(other.state_dict())
    assert cal.fitted and float(cal.rna_shrinkage) == 0.5
    torch.testing.assert_close(cal.peak_score(decoded, factor), torch.ones(3, 4))
    fresh = TranslationCalibration(n_genes=5, n_peaks=4)
    fresh.load_state_dict({})  # a model saved before calibration existed
    assert not fresh.fitted


@pytest.fixture(scope="module")
def calibrated_tiny():
    # the scanpy layout: the reference must come from layers["counts"], not the normalised .X
    model, md = tiny_multimixvi(layout="scanpy")
    model.train(max_epochs=4, train_size=0.8, early_stopping=False, enable_progress_bar=False)
    return model, md


def test_train_calibrates_on_its_validation_cells(calibrated_tiny):
    model, md = calibrated_tiny
    cal = model.module.translation_calibration
    val, train = model.validation_indices, model.train_indices
    rna, atac = md["rna"].layers["counts"], md["atac"].layers["counts"]
    paired = (np.asarray(rna[val].sum(1)).ravel() > 0) & (np.asarray((atac[val] > 0).sum(1)).ravel() > 0)
    assert int(cal.n_cells_fitted) == int(paired.sum()) > 0
    # the population is the training cells': mean normalised profile (cells with RNA) and
    # open rates (cells with ATAC)
    x = rna[train].toarray()
    profile = (x[x.sum(1) > 0] / x[x.sum(1) > 0].sum(1, keepdims=True)).mean(0)
    np.testing.assert_allclose(cal.rna_reference.numpy(), profile, rtol=1e-4, atol=1e-7)
    y = atac[train].toarray() > 0
    rate = np.clip(y[y.any(1)].mean(0), 1e-5, 1 - 1e-5)  # over the cells with ATAC
    np.testing.assert_allclose(cal.peak_reference.numpy(), np.log(rate / (1 - rate)), atol=1e-4)
    # the calibrated RNA is the fitted mixture of the decoder and that profile
    cells = md["atac"][:40].copy()
    raw = model.predict_rna_from_atac(cells, calibrated=False).X / 1e4
    out = model.predict_rna_from_atac(cells).X / 1e4
    alpha = float(cal.rna_shrinkage)
    np.testing.assert_allclose(out, (1 - alpha) * raw + alpha * profile, rtol=1e-3, atol=1e-7)
    peaks = model.predict_atac_from_rna(md["rna"][:40].copy())
    assert not np.allclose(peaks.X, model.predict_atac_from_rna(md["rna"][:40].copy(), calibrated=False).X)


def test_calibration_survives_save_and_load(calibrated_tiny, tmp_path):
    model, md = calibrated_tiny
    model.save(tmp_path / "m", overwrite=True)
    loaded = mixvi.MultiMixVI.load(tmp_path / "m", adata=md)
    cells = md["rna"][:30].copy()
    np.testing.assert_allclose(loaded.predict_atac_from_rna(cells).X,
                               model.predict_atac_from_rna(cells).X, atol=1e-6)


def test_without_validation_cells_calibration_names_the_fix():
    model, md = tiny_multimixvi()
    model.train(max_epochs=2, train_size=1.0, enable_progress_bar=False)
    assert not model.module.translation_calibration.fitted
    with pytest.raises(ValueError, match="validation split"):
        model.calibrate_translation()
    cells = np.arange(100, 300)
    out = model.calibrate_translation(indices=cells, reference_indices=np.arange(100))
    rna, atac = md["rna"].layers["counts"][cells], md["atac"].layers["counts"][cells]
    paired = (np.asarray(rna.sum(1)).ravel() > 0) & (np.asarray((atac > 0).sum(1)).ravel() > 0)
    assert out["n_cells"] == int(paired.sum()) and model.module.translation_calibration.fitted


def test_training_without_paired_cells_skips_the_calibration():
    import scipy.sparse as sp

    md = mixvi.datasets.pbmc_multiome_tiny()
    half = md.n_obs // 2  # first half RNA only, second half ATAC only: nothing to calibrate on
    for mod, rows in (("atac", slice(0, half)), ("rna", slice(half, None))):
        counts = md[mod].layers["counts"].tolil()
        counts[rows] = 0
        md[mod].layers["counts"] = sp.csr_matrix(counts)
    keep = (np.asarray(md["rna"].layers["counts"].sum(1)).ravel()
            + np.asarray(md["atac"].layers["counts"].sum(1)).ravel()) > 0
    model, md = tiny_multimixvi(md[keep].copy())
    model.train(max_epochs=2, early_stopping=False, enable_progress_bar=False)
    assert len(model.validation_indices) > 0
    assert not model.module.translation_calibration.fitted
    with pytest.raises(ValueError, match="both RNA and ATAC"):
        model.calibrate_translation()


def test_poisson_peaks_are_calibrated_on_the_complementary_log_log_scale():
    model, md = tiny_multimixvi(atac_likelihood="poisson")
    model.train(max_epochs=3, early_stopping=False, enable_progress_bar=False)
    cal = model.module.translation_calibration
    assert cal.fitted and cal.link == "cloglog"
    y = md["atac"].layers["counts"][model.train_indices].toarray() > 0
    rate = np.clip(y[y.any(1)].mean(0), 1e-5, 1 - 1e-5)
    np.testing.assert_allclose(cal.peak_reference.numpy(), np.log(-np.log1p(-rate)), atol=1e-4)
