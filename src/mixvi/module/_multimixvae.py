"""Torch module of MultiMixVI: RNA + ATAC encoders sharing one (mixture) prior, BABEL-style."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import DecoderSCVI, Encoder, FCLayers
from torch import nn
from torch.distributions import Normal

from mixvi.dataloaders import NONZERO_SUFFIX
from mixvi.module._alignment import symmetric_categorical_kl, symmetric_kl
from mixvi.module._babel import four_way_reconstruction
from mixvi.module._batch_balance import BatchBalancePenalty
from mixvi.module._keys import KL_Z_KEY, LIBRARY_KEY, QZ_KEY, Z_KEY
from mixvi.module._likelihood import peak_nll
from mixvi.module._marginal import paired_log_likelihood
from mixvi.module._prior_layer import PriorLayer
from mixvi.module._sparse_encoder import SparseInputEncoder
from mixvi.module._translation_calibration import TranslationCalibration
from mixvi.priors import LatentPrior, PriorName

ATAC_X_KEY = REGISTRY_KEYS.ATAC_X_KEY


class MultiMixVAE(BaseModuleClass):
    """Two-modality VAE (RNA + ATAC) whose two encoders share one trainable latent prior.

    Generative model, for a cell with RNA counts ``x`` and peaks ``y``:

    * ``q(z|x)`` and ``q(z|y)``: two diagonal Gaussians (scvi :class:`~scvi.nn.Encoder`),
      each regularised towards the **same** prior ``p(z)`` (``make_prior``);
    * RNA: ``x ~ NB(l * rho(z, s), theta)`` (or ZINB), ``l`` the observed library size,
      ``rho`` = :class:`~scvi.nn.DecoderSCVI` with the batch ``s``;
    * ATAC: ``y > 0 ~ Bernoulli(sigmoid(g(z, s) + a))`` where ``g`` is a decoder and ``a``
      a per-cell accessibility factor (logit offset, PeakVI's cell factor in logit space;
      the peak factor is the output bias) predicted from the encoder trunk of the source
      modality, so it is available when translating from RNA alone; or, with
      ``atac_likelihood="poisson"``, ``y ~ Poisson(exp(g(z, s) + a))``.

    Loss of a paired cell (BABEL style): the four reconstructions RNA<-z_rna, ATAC<-z_atac,
    RNA<-z_atac, ATAC<-z_rna, plus ``kl_weight`` x (KL(q_rna||p) + KL(q_atac||p)), plus
    ``alignment_weight`` x the symmetric KL between ``q(z|x)`` and ``q(z|y)``. A cell with
    one modality (the other row all zero) contributes only that modality's reconstruction
    and KL; the shared prior places it among the paired cells (mosaic integration).

    Parameters
    ----------
    n_genes, n_peaks
        Features of each modality.
    n_batch
        Number of batches (0 or 1: none); the batch enters both decoders.
    n_latent
        Latent dimensionality ``d``.
    prior, n_components, prior_kwargs
        Shared prior, see :func:`mixvi.priors.make_prior`.
    n_label_components
        Known labels tied to the first components (label prior); 0 disables.
    n_hidden, n_layers, dropout_rate
        Encoder/decoder sizes (both modalities).
    gene_likelihood
        ``"nb"`` or ``"zinb"``.
    atac_likelihood
        ``"bernoulli"`` (binarised peaks) or ``"poisson"`` (peak counts).
    alignment_weight
        Weight of the symmetric KL between the two posteriors of a paired cell.
    cross_weight
        Weight of the two cross reconstructions (RNA<-z_atac, ATAC<-z_rna).
    encode_covariates
        Give the batch to the RNA encoder as well (the sparse ATAC encoder never sees it).
    cross_peak_fraction
        During training, the ATAC<-z_rna term is computed on this random fraction of the
        peaks (a fresh subset every minibatch) and rescaled, an unbiased estimate that
        cuts the cost of the widest layer; ``1.0`` uses all peaks.
    pretrain_normal
        Use N(0, I) until :class:`~mixvi.train.MixTrainingPlan` initialises the mixture.
    posterior
        ``"gaussian"`` or ``"mixture"``: each modality's posterior is q(c|x) q(z|x, c)
        (Gumbel-softmax, as in :class:`~mixvi.module.MixVAE`), both matched to the shared
        prior's components; the alignment term then also pulls the two q(c|x) together.
    resolution
        Choose the number of components in use from the data (see
        :class:`~mixvi.module.PriorLayer`); ``None`` uses all ``n_components``.
    batch_balance_weight
        Weight of the mutual information between the mixture component of the joint
        posterior and the batch (:class:`~mixvi.module.BatchBalancePenalty`), added to the
        loss; ``0`` switches it off.
    """

    def __init__(
        self,
        n_genes: int,
        n_peaks: int,
        n_batch: int = 0,
        n_latent: int = 16,
        prior: PriorName = "gmm",
        n_components: int = 10,
        prior_kwargs: dict | None = None,
        n_label_components: int = 0,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        gene_likelihood: Literal["nb", "zinb"] = "nb",
        atac_likelihood: Literal["bernoulli", "poisson"] = "bernoulli",
        alignment_weight: float = 0.2,
        cross_weight: float = 1.0,
        encode_covariates: bool = False,
        cross_peak_fraction: float = 0.25,
        pretrain_normal: bool = True,
        resolution: float | None = None,
        posterior: Literal["gaussian", "mixture"] = "gaussian",
        batch_balance_weight: float = 0.0,
    ):
        super().__init__()
        if gene_likelihood not in ("nb", "zinb"):
            raise ValueError(f"gene_likelihood must be 'nb' or 'zinb', got {gene_likelihood!r}.")
        if atac_likelihood not in ("bernoulli", "poisson"):
            raise ValueError(
                f"atac_likelihood must be 'bernoulli' or 'poisson', got {atac_likelihood!r}."
            )
        self.n_genes, self.n_peaks, self.n_batch, self.n_latent = n_genes, n_peaks, n_batch, n_latent
        self.gene_likelihood, self.atac_likelihood = gene_likelihood, atac_likelihood
        self.alignment_weight, self.cross_weight = alignment_weight, cross_weight
        self.encode_covariates = encode_covariates
        if not 0.0 < cross_peak_fraction <= 1.0:
            raise ValueError(f"cross_peak_fraction must be in (0, 1], got {cross_peak_fraction}.")
        self.cross_peak_fraction = cross_peak_fraction
        self.prior_layer = PriorLayer(
            n_latent, prior, n_components, posterior, n_label_components, pretrain_normal,
            prior_kwargs, resolution,
        )
        self.posterior = posterior
        self.batch_balance = BatchBalancePenalty(
            batch_balance_weight, n_batch, self.prior_layer.n_components
        )

        cat_list = [n_batch] if n_batch > 1 else None
        enc_cats = cat_list if encode_covariates else None
        common = {"n_layers": n_layers, "n_hidden": n_hidden, "dropout_rate": dropout_rate}
        self.rna_encoder = Encoder(n_genes, n_latent, n_cat_list=enc_cats, **common)
        self.atac_encoder = SparseInputEncoder(n_peaks, n_latent, n_hidden, n_layers, dropout_rate)
        if atac_likelihood == "bernoulli":  # the encoder sees binarised peaks
            self.atac_encoder.transform = self._binarize
        # per-cell ATAC factor (logit offset), from each modality's encoder trunk
        self.atac_factor_from_rna = nn.Linear(n_hidden, 1)
        self.atac_factor_from_atac = nn.Linear(n_hidden, 1)
        self.rna_decoder = DecoderSCVI(
            n_latent, n_genes, n_cat_list=cat_list, n_layers=n_layers, n_hidden=n_hidden
        )
        self.px_r = nn.Parameter(torch.randn(n_genes))
        self.atac_decoder = FCLayers(
            n_in=n_latent, n_out=n_hidden, n_cat_list=cat_list, n_layers=n_layers,
            n_hidden=n_hidden, dropout_rate=0.0, use_batch_norm=False, use_layer_norm=True,
        )
        self.atac_output = nn.Linear(n_hidden, n_peaks)
        # shrinkage of the translations toward the population, fitted on held-out cells
        self.translation_calibration = TranslationCalibration(
            n_genes, n_peaks, "logit" if atac_likelihood == "bernoulli" else "cloglog"
        )
        if posterior == "mixture":
            # each encoder: a mean/variance head per component, and q(c|x) on the same trunk
            K = self.prior_layer.n_components
            for enc in (self.rna_encoder, self.atac_encoder):
                enc.mean_encoder = nn.Linear(n_hidden, K * n_latent)
                enc.var_encoder = nn.Linear(n_hidden, K * n_latent)
            self.qc_rna = nn.Linear(n_hidden, K)
            self.qc_atac = nn.Linear(n_hidden, K)

    def set_gumbel_temperature(self, tau: float) -> None:
        """Temperature of the Gumbel-softmax relaxation (mixture posterior)."""
        self.prior_layer.set_gumbel_temperature(tau)

    @property
    def prior(self) -> LatentPrior:
        """The shared prior module (:attr:`prior_layer.prior`)."""
        return self.prior_layer.prior

    @property
    def is_mixture(self) -> bool:
        """Whether the shared prior is a mixture."""
        return self.prior_layer.is_mixture

    # -- helpers -----------------------------------------------------------------------------
    def _cats(self, batch_index: torch.Tensor) -> tuple:
        return (batch_index,) if self.n_batch > 1 else ()

    @staticmethod
    def _binarize(y: torch.Tensor) -> torch.Tensor:
        return (y > 0).to(torch.float32)

    @auto_move_data
    def encode(
        self,
        modality: Literal["rna", "atac"],
        x: torch.Tensor,
        batch_index: torch.Tensor,
        nonzero: torch.Tensor | None = None,
    ) -> tuple[Normal, torch.Tensor]:
        """Posterior of one modality and the ATAC factor predicted from it.

        Parameters
        ----------
        modality
            ``"rna"`` (``x`` = counts, ``(n, n_genes)``) or ``"atac"`` (``(n, n_peaks)``).
        x
            Raw counts.
        batch_index
            Batch codes, ``(n, 1)``.
        nonzero
            Flat indices of the non-zero entries of ``x`` (ATAC only; optional).

        Returns
        -------
        ``(q(z|x), atac_factor)``: Normal with ``(n, n_latent)`` parameters, ``(n, 1)`` offset.
        """
        parts, factor = self._encode_parts(modality, x, batch_index, nonzero)
        return parts["qz"], factor

    def _encode_parts(
        self,
        modality: str,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        nonzero: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        sample_shape: tuple[int, ...] = (),
    ) -> tuple[dict, torch.Tensor]:
        """Posterior of one modality: ``qz`` (moment-matched for the mixture posterior), a
        sample ``z`` and, for the mixture posterior, ``qc_logits``/``probs``/``loc``/``scale``;
        and the ATAC factor."""
        if modality == "atac":
            enc = self.atac_encoder
            h = enc.trunk(x, nonzero)
            factor = self.atac_factor_from_atac(h)
        else:
            enc = self.rna_encoder
            cats = self._cats(batch_index) if self.encode_covariates else ()
            h = enc.encoder(torch.log1p(x), *cats)
            factor = self.atac_factor_from_rna(h)
        loc = enc.mean_encoder(h)
        scale = (torch.exp(enc.var_encoder(h)) + enc.var_eps).sqrt()
        if self.posterior == "gaussian":
            qz = Normal(loc, scale)
            return {"qz": qz, "z": qz.rsample(sample_shape)}, factor
        n, K, d = x.shape[0], self.prior_layer.n_components, self.n_latent
        loc, scale = loc.view(n, K, d), scale.view(n, K, d)
        qc_logits = (self.qc_atac if modality == "atac" else self.qc_rna)(h)
        post = self.prior_layer.mixture_posterior(qc_logits, loc, scale, labels, sample_shape)
        return {**post, "qc_logits": qc_logits, "loc": loc, "scale": scale}, factor

    def decode_rna(
        self, z: torch.Tensor, batch_index: torch.Tensor, library: torch.Tensor
    ) -> tuple[torch.Tensor, torch.distributions.Distribution]:
        """Normalised expression ``(n, n_genes)`` and the count distribution."""
        px_scale, _, px_rate, px_dropout = self.rna_decoder(
            "gene", z, library, *self._cats(batch_index)
        )
        theta = torch.exp(self.px_r)
        if self.gene_likelihood == "zinb":
            px = ZeroInflatedNegativeBinomial(mu=px_rate, theta=theta, zi_logits=px_dropout, scale=px_scale)
        else:
            px = NegativeBinomial(mu=px_rate, theta=theta, scale=px_scale)
        return px_scale, px

    def decode_atac(
        self,
        z: torch.Tensor,
        batch_index: torch.Tensor,
        factor: torch.Tensor,
        peaks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ATAC logits (Bernoulli) or log-rates (Poisson), shape ``(n, n_peaks)``.

        ``peaks`` (column indices) restricts the output to those peaks, ``(n, len(peaks))``.
        """
        h = self.atac_decoder(z, *self._cats(batch_index))
        if peaks is None:
            return self.atac_output(h) + factor
        w = self.atac_output.weight.index_select(0, peaks)
        b = self.atac_output.bias.index_select(0, peaks)
        return F.linear(h, w, b) + factor

    def accessibility(self, out: torch.Tensor) -> torch.Tensor:
        """Probability that a peak is open, from :meth:`decode_atac`'s output."""
        if self.atac_likelihood == "bernoulli":
            return torch.sigmoid(out)
        return -torch.expm1(-torch.exp(out))

    # -- scvi-tools module interface ---------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "x_rna": tensors[REGISTRY_KEYS.X_KEY],
            "x_atac": tensors[ATAC_X_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "atac_nonzero": tensors.get(ATAC_X_KEY + NONZERO_SUFFIX),
            "labels": tensors.get(REGISTRY_KEYS.LABELS_KEY),
        }

    @auto_move_data
    def inference(
        self,
        x_rna: torch.Tensor,
        x_atac: torch.Tensor,
        batch_index: torch.Tensor,
        n_samples: int = 1,
        atac_nonzero: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | Normal]:
        """Both posteriors, samples, masks and the joint posterior.

        The joint posterior (key ``qz``) is the average of the two posteriors for paired
        cells -- ``N((mu_r + mu_a) / 2, (s_r^2 + s_a^2) / 4)`` -- and the available one for
        cells with a single modality. Modality presence: a cell has RNA (ATAC) when its
        RNA (ATAC) row is not all zero.
        """
        has_rna = (x_rna.sum(1) > 0).float()
        has_atac = (x_atac.sum(1) > 0).float()
        shape = (n_samples,) if n_samples > 1 else ()
        rna, fac_rna = self._encode_parts("rna", x_rna, batch_index, None, labels, shape)
        atac, fac_atac = self._encode_parts("atac", x_atac, batch_index, atac_nonzero, labels,
                                            shape)
        qz_rna, qz_atac = rna["qz"], atac["qz"]
        both = (has_rna * has_atac).unsqueeze(-1)
        w_rna = torch.where(both > 0, 0.5, has_rna.unsqueeze(-1))
        w_atac = 1.0 - w_rna
        loc = w_rna * qz_rna.loc + w_atac * qz_atac.loc
        scale = (w_rna.pow(2) * qz_rna.scale.pow(2) + w_atac.pow(2) * qz_atac.scale.pow(2)).sqrt()
        qz = Normal(loc, scale.clamp(min=1e-6))
        library = torch.log(x_rna.sum(1, keepdim=True).clamp(min=1.0))
        mixture = {}
        if self.posterior == "mixture":
            mixture = {f"{k}_{m}": parts[k] for m, parts in (("rna", rna), ("atac", atac))
                       for k in ("qc_logits", "probs", "loc", "scale")}
        return {
            **mixture,
            QZ_KEY: qz,
            Z_KEY: qz.rsample(shape),
            "qz_rna": qz_rna,
            "qz_atac": qz_atac,
            "z_rna": rna["z"],
            "z_atac": atac["z"],
            "factor_rna": fac_rna,
            "factor_atac": fac_atac,
            "has_rna": has_rna,
            "has_atac": has_atac,
            LIBRARY_KEY: library,
        }

    def _get_generative_input(self, tensors: dict, inference_outputs: dict) -> dict:
        keys = ("z_rna", "z_atac", "factor_rna", "factor_atac", LIBRARY_KEY)
        out = {k: inference_outputs[k] for k in keys}
        out["batch_index"] = tensors[REGISTRY_KEYS.BATCH_KEY]
        return out

    @auto_move_data
    def generative(
        self,
        z_rna: torch.Tensor,
        z_atac: torch.Tensor,
        factor_rna: torch.Tensor,
        factor_atac: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
    ) -> dict:
        """Decode both latents with both decoders.

        RNA: one stacked pass over ``[z_rna; z_atac]``. ATAC: ``z_atac`` with its own factor
        over all peaks, ``z_rna`` with the RNA-predicted factor over a random peak subset
        while training (see ``cross_peak_fraction``).
        """
        b2 = torch.cat([batch_index, batch_index])
        _, px = self.decode_rna(torch.cat([z_rna, z_atac]), b2, torch.cat([library, library]))
        atac_own = self.decode_atac(z_atac, batch_index, factor_atac)
        peaks = None
        if self.training and self.cross_peak_fraction < 1.0:
            k = max(round(self.cross_peak_fraction * self.n_peaks), 1)
            peaks = torch.randperm(self.n_peaks, device=z_rna.device)[:k]
        atac_cross = self.decode_atac(z_rna, batch_index, factor_rna, peaks)
        return {"px": px, "atac_own": atac_own, "atac_cross": atac_cross, "cross_peaks": peaks}

    def _atac_nll(
        self, out: torch.Tensor, y: torch.Tensor | None, nonzero: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-cell ATAC negative log-likelihood ``(n,)``; see :func:`peak_nll`."""
        return peak_nll(out, y, self.atac_likelihood, nonzero)

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """Four-way reconstruction + KL of each posterior to the shared prior + alignment.

        Returns
        -------
        :class:`~scvi.module.base.LossOutput`: ``reconstruction_loss`` is a dict of the four
        per-cell terms (masked by modality presence), ``kl_local["kl_divergence_z"]`` the
        summed prior KL of the available posteriors, ``extra_metrics`` the batch means of
        each term, the alignment term and the mixture entropy.
        """
        inf = inference_outputs
        m_r, m_a = inf["has_rna"], inf["has_atac"]
        paired = m_r * m_a
        rec = four_way_reconstruction(self, tensors, inf, generative_outputs)
        labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
        qz_r, qz_a = inf["qz_rna"], inf["qz_atac"]
        if self.posterior == "mixture":
            layer = self.prior_layer
            kl_r = layer.kl_mixture_posterior(inf["qc_logits_rna"], inf["loc_rna"],
                                              inf["scale_rna"], labels)
            kl_a = layer.kl_mixture_posterior(inf["qc_logits_atac"], inf["loc_atac"],
                                              inf["scale_atac"], labels)
            # the two posteriors of a cell agree on the component and on the latent
            align = symmetric_kl(qz_r, qz_a) + symmetric_categorical_kl(
                inf["probs_rna"], inf["probs_atac"])
        else:
            kl_r = self.prior_layer.kl(qz_r, inf["z_rna"], labels)
            kl_a = self.prior_layer.kl(qz_a, inf["z_atac"], labels)
            align = symmetric_kl(qz_r, qz_a)
        kl_z = kl_r * m_r + kl_a * m_a
        align = align * paired
        total_rec = sum(rec.values())
        loss = torch.mean(total_rec + kl_weight * kl_z + self.alignment_weight * align)
        extra = {f"reconstruction_{k}": v.mean().detach() for k, v in rec.items()}
        extra["alignment_symkl"] = (align.sum() / paired.sum().clamp(min=1)).detach()
        if self.is_mixture:
            extra["mixture_entropy"] = self.prior_layer.mixture_entropy().detach()
            loss = self.batch_balance.add_to_loss(
                loss, lambda: self._soft_assignments(inf), tensors[REGISTRY_KEYS.BATCH_KEY],
                self.prior_layer.initialized, extra,
            )
        return LossOutput(
            loss=loss,
            reconstruction_loss=rec,
            kl_local={KL_Z_KEY: kl_z},
            extra_metrics=extra,
        )

    # -- assignments -------------------------------------------------------------------------
    @torch.inference_mode()
    def cluster_probabilities(self, inference_outputs: dict) -> torch.Tensor:
        """Prior responsibilities at the joint posterior (its uncertainty integrated out), or,
        with the mixture posterior, q(c|x) averaged over the cell's modalities; ``(n, K)``."""
        return self._soft_assignments(inference_outputs)

    def _soft_assignments(self, inference_outputs: dict) -> torch.Tensor:
        """:meth:`cluster_probabilities`, differentiable (the batch-balance penalty's input)."""
        if self.posterior == "mixture":
            w_rna = inference_outputs["has_rna"].unsqueeze(1)
            w_atac = inference_outputs["has_atac"].unsqueeze(1)
            probs = w_rna * inference_outputs["probs_rna"] + w_atac * inference_outputs["probs_atac"]
            return probs / probs.sum(1, keepdim=True).clamp(min=1e-12)
        qz = inference_outputs[QZ_KEY]
        return self.prior_layer.responsibilities(qz.loc, qz.scale)

    # -- marginal likelihood -----------------------------------------------------------------
    @torch.inference_mode()
    def marginal_ll(
        self,
        tensors: dict[str, torch.Tensor],
        n_mc_samples: int,
        return_mean: bool = False,
        n_mc_samples_per_pass: int = 1,
        modality: Literal["joint", "rna", "atac"] = "joint",
    ) -> torch.Tensor | float:
        """Importance-sampled log-likelihood under the shared prior, per cell.

        ``"joint"``: ``log p(x, y)`` of a paired cell with one latent generating both
        modalities (proposal: the joint posterior, decoded by both decoders; the ATAC factor
        from the ATAC encoder, like the observed library size). ``"rna"``: ``log p(x)`` with
        ``q(z|x)``; ``"atac"``: ``log p(y)`` with ``q(z|y)``. ``p(z)`` is the prior of the loss
        (:meth:`PriorLayer.log_prob`). Cells without the scored modality get their
        available modality's term only (``"joint"``) or a meaningless value.

        Parameters
        ----------
        tensors
            One minibatch.
        n_mc_samples
            Importance samples per cell.
        return_mean
            Return the mean over cells.
        n_mc_samples_per_pass
            Samples drawn per pass.
        modality
            Which likelihood, see above.

        Returns
        -------
        Tensor of shape ``(n_cells,)``, or its mean.
        """
        if modality not in ("joint", "rna", "atac"):
            raise ValueError(f"modality must be 'joint', 'rna' or 'atac', got {modality!r}.")
        log_px = paired_log_likelihood(self, tensors, modality, n_mc_samples, n_mc_samples_per_pass)
        return log_px.mean() if return_mean else log_px


__all__ = ["MultiMixVAE"]
