"""Translation between modalities for MultiMixVI: RNA from ATAC, accessibility from RNA.

One modality's AnnData is wrapped as a *mosaic* MuData (its counts, an all-zero matrix for
the other modality, the batch where the registry expects it) and run through scvi-tools'
set-up transfer and data loaders, like any other inference: a translated cell is a cell
measured in one modality only.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from mixvi.data import check_obs_key, check_var_names, get_matrix, nonzero_counts, validate_counts
from mixvi.dataloaders import NONZERO_SUFFIX
from mixvi.module._multimixvae import ATAC_X_KEY
from mixvi.module._translation_calibration import (
    MAX_CALIBRATION_ENTRIES,
    RnaShrinkageFit,
    fit_peak_weights,
    rate_to_link,
)

logger = logging.getLogger(__name__)


class NoPairedCellsError(ValueError):
    """The cells given to :meth:`TranslationMixin.calibrate_translation` cannot calibrate:
    none is paired, or the reference lacks one modality (e.g. RNA-only query data)."""


LibrarySize = float | Sequence[float] | np.ndarray | Literal["observed"]


def _field(model, registry_key: str):
    return next(f for f in model.adata_manager.fields if f.registry_key == registry_key)


class TranslationMixin:
    """Cross-modal prediction for a model with ``encode``/``decode_rna``/``decode_atac``."""

    # -- wrapping one modality -----------------------------------------------------------
    def _batch_values(self, adata: AnnData, mdata=None) -> np.ndarray | None:
        """Batch of each cell (``None`` when no batch is registered): from where the registry
        keeps it in ``mdata`` when the cells came in a MuData, else from ``adata.obs``."""
        key = self.registry_["setup_args"].get("batch_key")
        if key is None:
            return None
        if mdata is not None:
            field = _field(self, REGISTRY_KEYS.BATCH_KEY)
            adata = mdata.mod[field.mod_key] if field.mod_key else mdata
        mapping = [str(c) for c in
                   self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping]
        if key not in adata.obs and len(mapping) == 1:
            return np.full(adata.n_obs, mapping[0], dtype=object)
        check_obs_key(adata, key, role="batch_key")
        values = adata.obs[key].astype(str).to_numpy()
        unknown = sorted(set(values) - set(mapping))
        if unknown:
            raise ValueError(
                f"Batch(es) {unknown[:5]} in adata.obs[{key!r}] were not seen in training "
                f"(known: {mapping[:10]}); set them to a training batch to decode in its style."
            )
        return values.astype(object)

    def _as_mosaic(self, adata, source: str):
        """A MuData of ``adata`` (one modality, or that modality of a MuData) and an all-zero
        other modality."""
        import mudata as md

        container = None
        if hasattr(adata, "mod"):
            container, adata = adata, adata.mod[self.modality_names[source]]
        setup = self.registry_["setup_args"]
        other = "atac" if source == "rna" else "rna"
        names = {"rna": self.gene_names, "atac": self.peak_names}
        check_var_names(names[source], adata, what="genes" if source == "rna" else "peaks")
        layer = setup.get(f"{source}_layer")
        read_from = layer if layer is None or layer in adata.layers else None  # .X fallback
        validate_counts(adata, read_from, modality=source.upper())
        counts = get_matrix(adata, read_from)
        obs = pd.DataFrame(index=adata.obs_names.copy())

        def modality(matrix, role):
            var = pd.DataFrame(index=names[role].copy())
            role_layer = setup.get(f"{role}_layer")
            if role_layer is None:
                return AnnData(X=matrix, obs=obs.copy(), var=var)
            return AnnData(obs=obs.copy(), var=var, layers={role_layer: matrix})

        zeros = sp.csr_matrix((adata.n_obs, len(names[other])), dtype=np.float32)
        mods = {source: modality(counts, source), other: modality(zeros, other)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mdata = md.MuData({self.modality_names[r]: a for r, a in mods.items()})
        batch = self._batch_values(adata, container)
        if batch is not None:
            field = _field(self, REGISTRY_KEYS.BATCH_KEY)
            target = mdata.mod[field.mod_key].obs if field.mod_key else mdata.obs
            target[setup["batch_key"]] = pd.Categorical(batch)
        labels_key = setup.get("labels_key")
        if labels_key is not None:  # unknown labels: the model only encodes and decodes
            field = _field(self, REGISTRY_KEYS.LABELS_KEY)
            target = mdata.mod[field.mod_key].obs if field.mod_key else mdata.obs
            target[labels_key] = pd.Categorical(
                [setup.get("unlabeled_category", "Unknown")] * adata.n_obs
            )
        return mdata

    # -- prediction ----------------------------------------------------------------------
    @torch.inference_mode()
    def _translate(
        self, adata, source: str, batch_size: int | None, library_size=None, calibrated: bool = True
    ) -> AnnData:
        """Encode ``source`` alone, decode the other modality; one pass over the cells."""
        if adata is None:
            adata = self.adata
        mosaic = self._as_mosaic(adata, source)
        if hasattr(adata, "mod"):
            adata = adata.mod[self.modality_names[source]]
        observed_library = None
        if isinstance(library_size, str):
            if library_size != "observed":
                raise ValueError(f"library_size must be a number, an array or 'observed', got {library_size!r}.")
            observed_library = self._observed_library(adata)
        mosaic = self._validate_anndata(mosaic)
        module = self.module
        module.eval()
        calibration = module.translation_calibration
        outs, latents = [], []
        for tensors in self._make_data_loader(adata=mosaic, batch_size=batch_size):
            key = REGISTRY_KEYS.X_KEY if source == "rna" else ATAC_X_KEY
            x = tensors[key].to(self.device)
            b = tensors[REGISTRY_KEYS.BATCH_KEY].to(self.device)
            nonzero = tensors.get(key + NONZERO_SUFFIX)
            qz, factor = module.encode(source, x, b, None if nonzero is None else nonzero.to(x.device))
            if source == "atac":
                scale = self._decoded_rna(qz.loc, b)
                outs.append((calibration.rna(scale) if calibrated else scale).cpu().numpy())
            else:
                decoded = module.decode_atac(qz.loc, b, torch.zeros_like(factor))
                score = calibration.peak_score(decoded, factor) if calibrated else decoded + factor
                outs.append(module.accessibility(score).cpu().numpy())
            latents.append(qz.loc.cpu().numpy())
        var_names = self.gene_names if source == "atac" else self.peak_names
        values = np.concatenate(outs).astype(np.float32)
        out = AnnData(obs=adata.obs.copy(), var=pd.DataFrame(index=var_names.copy()))
        out.obsm[f"X_multimixvi_{source}"] = np.concatenate(latents)
        if source == "atac":
            out.X = values * np.float32(1e4)
            lib = observed_library if observed_library is not None else library_size
            lib = np.broadcast_to(np.asarray(1e4 if lib is None else lib, np.float32), (len(values),))
            if (lib <= 0).any() or not np.isfinite(lib).all():
                raise ValueError("library_size must be positive and finite for every cell.")
            out.layers["counts_expected"] = values * lib[:, None]
        else:
            out.X = values
        return out

    def _decoded_rna(self, z: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Normalised expression ``(n, n_genes)`` decoded from ``z`` (library-free)."""
        scale, _ = self.module.decode_rna(z, batch_index, torch.zeros((z.shape[0], 1), device=z.device))
        return scale

    # -- calibration on held-out cells -----------------------------------------------------
    def _population_profiles(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean normalised RNA profile (cells with RNA) and peak open rates (cells with
        ATAC) of the training cells ``indices``: the floors of
        :func:`mixvi.metrics.mean_profile_baseline`, from the registered count layers."""
        from mixvi.metrics import mean_profile_baseline  # not at import: the metrics are heavy

        setup = self.registry_["setup_args"]
        mods = self.modality_names
        rna = get_matrix(self.adata.mod[mods["rna"]], setup.get("rna_layer"))[indices]
        atac = get_matrix(self.adata.mod[mods["atac"]], setup.get("atac_layer"))[indices]
        per_cell, per_peak = nonzero_counts(atac)
        n_atac = int((per_cell > 0).sum())
        if n_atac == 0 or not (np.asarray(rna.sum(1)).ravel() > 0).any():
            raise NoPairedCellsError(
                "The reference cells need RNA and ATAC counts to calibrate translations; pass "
                "`reference_indices` of cells that have both."
            )
        profile = mean_profile_baseline(rna, 1, target_sum=1.0)[0]  # cells without RNA ignored
        return (torch.as_tensor(profile, dtype=torch.float32),
                torch.as_tensor(per_peak / n_atac, dtype=torch.float32))

    def calibrate_translation(
        self,
        indices: Sequence[int] | None = None,
        reference_indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> dict:
        """Fit the shrinkage of both translations toward the population on held-out cells.

        :meth:`train` calls this on its validation cells. On a few thousand cells the
        decoders are over-confident when decoding from the other modality; the calibration
        mixes the decoded RNA with the mean training profile and re-weights the peak scores
        against each peak's open rate, by amounts fitted on cells the decoders were not
        trained on (see :mod:`mixvi.module._translation_calibration`). Both fitted maps
        contain the uncalibrated decoder and the trivial floor (mean profile, open rates).

        Parameters
        ----------
        indices
            Paired cells of the training data (integer positions) to fit on; default the
            validation cells of the last :meth:`train`. Cells the model was trained on give
            an over-confident calibration.
        reference_indices
            Cells whose mean profile and open rates are the population; default the
            training cells of the last :meth:`train` (all cells when none are recorded).
        batch_size
            Cells per forward pass.
        seed
            Seed of the subsample of cell x peak entries (at most
            ``MAX_CALIBRATION_ENTRIES``) used for the peak weights.

        Returns
        -------
        dict with ``rna_shrinkage`` (weight of the mean profile, 0-1), ``peak_weights``
        (decoded term, cell factor, peak open rate, intercept) and ``n_cells``; stored in the
        module (saved with the model) and used by the predict methods.
        """
        if indices is None:
            indices = getattr(self, "validation_indices", None)
            if indices is None or len(indices) == 0:
                raise ValueError(
                    "No validation cells to calibrate on: train with a validation split "
                    "(the default) or pass `indices` of held-out paired cells."
                )
        indices = np.asarray(indices, dtype=np.int64)
        if reference_indices is None:
            train = getattr(self, "train_indices", None)
            reference_indices = train if train is not None and len(train) else np.arange(self.adata.n_obs)
        reference_indices = np.asarray(reference_indices, dtype=np.int64)
        rna_ref, open_rate = self._population_profiles(reference_indices)
        link = self.module.translation_calibration.link
        peak_ref = rate_to_link(open_rate, link)
        rna_fit = RnaShrinkageFit(rna_ref)
        features, n_cells = self._calibration_entries(indices, batch_size, peak_ref, rna_fit, seed)
        if n_cells == 0:
            raise NoPairedCellsError(
                "None of the calibration cells has both RNA and ATAC counts; pass `indices` of "
                "held-out paired cells."
            )
        weights = fit_peak_weights(*features, link)
        alpha = rna_fit.best()
        self.module.translation_calibration.set(rna_ref, alpha, peak_ref, weights, n_cells)
        summary = {"rna_shrinkage": alpha, "peak_weights": weights.tolist(), "n_cells": n_cells}
        logger.info("Translation calibrated on %d held-out cells: %s", n_cells, summary)
        return summary

    @torch.inference_mode()
    def _calibration_entries(self, indices, batch_size, peak_ref, rna_fit, seed: int):
        """One pass over the paired cells ``indices``: feed the RNA shrinkage fit, and
        sample cell x peak entries (decoded term, factor, open rate, open) for the peaks."""
        module = self.module
        module.eval()
        n_peaks = len(self.peak_names)
        keep = min(1.0, MAX_CALIBRATION_ENTRIES / max(len(indices) * n_peaks, 1))
        generator = torch.Generator().manual_seed(seed)
        parts, n_cells = [], 0
        for tensors in self._make_data_loader(adata=self.adata, indices=indices, batch_size=batch_size):
            x, y = tensors[REGISTRY_KEYS.X_KEY], tensors[ATAC_X_KEY]
            paired = (x.sum(1) > 0) & (y > 0).any(1)
            if not paired.any():
                continue
            x, y = x[paired].to(self.device), y[paired]
            b = tensors[REGISTRY_KEYS.BATCH_KEY][paired].to(self.device)
            qz, factor = module.encode("rna", x, b)
            decoded = module.decode_atac(qz.loc, b, torch.zeros_like(factor)).cpu()
            mask = torch.rand(decoded.shape, generator=generator) < keep
            rows = mask.nonzero()[:, 0]
            parts.append((decoded[mask], factor.cpu().squeeze(1)[rows],
                          peak_ref.expand_as(decoded)[mask], (y > 0)[mask]))
            qz_atac, _ = module.encode("atac", y.to(self.device), b)
            rna_fit.add(self._decoded_rna(qz_atac.loc, b).cpu(), x.float().cpu())
            n_cells += int(paired.sum())
        if not parts:
            return None, 0
        return [torch.cat(p) for p in zip(*parts)], n_cells

    def _observed_library(self, adata) -> np.ndarray:
        """RNA totals of the cells of ``adata`` in the training data (paired cells)."""
        rna = self.adata.mod[self.modality_names["rna"]]
        missing = adata.obs_names.difference(rna.obs_names)
        if len(missing):
            raise ValueError(
                f"library_size='observed' needs the cells' RNA counts, but {len(missing)} cells "
                "are not in the training data; pass their library sizes as an array instead."
            )
        counts = get_matrix(rna, self.registry_["setup_args"].get("rna_layer"))
        rows = rna.obs_names.get_indexer(adata.obs_names)
        totals = np.asarray(counts[rows].sum(1)).ravel()
        if (totals <= 0).any():
            raise ValueError(
                f"{int((totals <= 0).sum())} cells have no RNA counts (ATAC-only cells): their "
                "observed library is unknown; pass library sizes as an array instead."
            )
        return totals.astype(np.float32)

    def predict_rna_from_atac(
        self,
        atac: AnnData | None = None,
        library_size: LibrarySize = 1e4,
        batch_size: int | None = None,
        calibrated: bool = True,
    ) -> AnnData:
        """Expression predicted from ATAC alone (e.g. new ATAC-only cells).

        Parameters
        ----------
        atac
            AnnData of peaks (cells x the training peaks, same order) with raw counts in the
            registered layer (or ``.X``) and ``obs[batch_key]`` if a batch was registered (the
            RNA is decoded in that batch's style); or a MuData set up like the training data,
            whose ATAC modality is used. ``None`` uses the training data.
        library_size
            Library of ``layers["counts_expected"]``: one number for all cells, one per cell
            (array), or ``"observed"`` -- each cell's own RNA total in the training data
            (paired cells), e.g. to compare predicted with observed counts.
        batch_size
            Cells per forward pass (default: scvi-tools' ``settings.batch_size``).
        calibrated
            Apply the shrinkage toward the mean training profile fitted on held-out cells
            (:meth:`calibrate_translation`, run by :meth:`train`); ``False`` returns the
            decoder's output as it is. Without a fitted calibration both are the same.

        Returns
        -------
        AnnData ``(n_cells, n_genes)`` with ``.X`` the normalised expression (the expected
        fractions x 1e4, comparable with ``sc.pp.normalize_total``; log1p it to
        compare with a log-normalised ``.X``), ``layers["counts_expected"]`` the expected
        counts at ``library_size``, ``.obs`` copied, ``.obsm["X_multimixvi_atac"]`` the
        ATAC latent.
        """
        return self._translate(atac, "atac", batch_size, library_size, calibrated)

    def predict_atac_from_rna(
        self, rna: AnnData | None = None, batch_size: int | None = None, calibrated: bool = True
    ) -> AnnData:
        """Accessibility predicted from RNA alone (e.g. new RNA-only cells).

        Parameters
        ----------
        rna
            AnnData of genes (cells x the training genes, same order), raw counts in the
            registered layer (or ``.X``); or a MuData whose RNA modality is used; ``None``
            uses the training data.
        batch_size
            Cells per forward pass.
        calibrated
            Use the peak calibration fitted on held-out cells (:meth:`calibrate_translation`,
            run by :meth:`train`): P(open) that matches observed open rates, and a ranking
            that falls back on each peak's open rate where RNA says little. ``False``
            returns the decoder's output as it is.

        Returns
        -------
        AnnData ``(n_cells, n_peaks)``: ``.X`` = P(peak open) (the Bernoulli probability,
        or ``1 - exp(-rate)`` for the Poisson likelihood), ``.obs`` copied,
        ``.obsm["X_multimixvi_rna"]`` the RNA latent.
        """
        return self._translate(rna, "rna", batch_size, calibrated=calibrated)

    def translate(self, adata: AnnData, source: Literal["rna", "atac"], **kwargs) -> AnnData:
        """Translate one modality into the other; see :meth:`predict_rna_from_atac` and
        :meth:`predict_atac_from_rna`.

        Parameters
        ----------
        adata
            Cells of the ``source`` modality.
        source
            ``"rna"`` (predict accessibility) or ``"atac"`` (predict expression).
        **kwargs
            Passed to the predict method.
        """
        if source == "atac":
            return self.predict_rna_from_atac(adata, **kwargs)
        if source == "rna":
            return self.predict_atac_from_rna(adata, **kwargs)
        raise ValueError(f"source must be 'rna' or 'atac', got {source!r}.")
