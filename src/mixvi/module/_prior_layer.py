"""The latent prior of a mixvi module: one piece shared by MixVAE and MultiMixVAE.

It owns the prior (normal, GMM or tree), the components tied to known labels, the
N(0, I) pre-training switch, the KL estimators, the cluster responsibilities, the
log density used by the marginal likelihood and the batch-dependence penalty.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.distributions import Normal

from mixvi.priors import LatentPrior, MixturePrior, PriorName, StandardNormalPrior, make_prior

PosteriorName = Literal["gaussian", "mixture"]
POSTERIORS = ("gaussian", "mixture")


def known_components(labels: torch.Tensor, n_label_components: int) -> torch.Tensor:
    """Map registered label codes to prior components; ``-1`` for unlabelled cells.

    scvi-tools puts the unlabelled category last, so codes ``< n_label_components``
    are known labels and are tied to the component of the same index.

    Parameters
    ----------
    labels
        Label codes, shape ``(n_cells, 1)``.
    n_label_components
        Number of known label categories.

    Returns
    -------
    Long tensor of shape ``(n_cells,)``.
    """
    codes = labels.view(-1).long()
    return torch.where(codes < n_label_components, codes, torch.full_like(codes, -1))


def mixture_moments(
    probs: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of a Gaussian mixture, per cell.

    Parameters
    ----------
    probs
        Component probabilities, shape ``(n_cells, K)``.
    loc, scale
        Component parameters, shape ``(n_cells, K, n_latent)``.

    Returns
    -------
    ``(mean, std)``, each of shape ``(n_cells, n_latent)``.
    """
    w = probs.unsqueeze(-1)
    mean = (w * loc).sum(-2)
    second = (w * (scale.pow(2) + loc.pow(2))).sum(-2)
    return mean, (second - mean.pow(2)).clamp(min=1e-8).sqrt()


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log mean exp`` along ``dim``: the importance-sampling estimate of ``log p(x)`` from
    log-weights ``log p(x|z_s) + log p(z_s) - log q(z_s|x)``."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


class PriorLayer(nn.Module):
    """Latent prior with label components and N(0, I) pre-training, for any mixvi module.

    Parameters
    ----------
    n_latent
        Latent dimensionality ``d``.
    prior
        ``"normal"``, ``"gmm"`` or ``"hierarchical"`` (see :func:`mixvi.priors.make_prior`).
    n_components
        Mixture components ``K`` (tree leaves for ``"hierarchical"``).
    posterior
        ``"gaussian"`` or ``"mixture"`` (the module's posterior family; the mixture
        posterior needs a mixture prior).
    n_label_components
        Number of known label categories tied to the first prior components; ``0``
        disables the label prior.
    pretrain_normal
        Use the N(0, I) KL until :meth:`mark_initialized` (the training plan fits the
        mixture to the data first), so an untrained latent is not pulled onto randomly
        placed components. Applies to both posterior families.
    prior_kwargs
        Passed to the prior (``learn_scales``, ``n_kl_samples``, ``kl_estimator``, ...).
    resolution
        ``None``: all ``n_components`` are used, placed by k-means. A number: the number of
        components in use is chosen from the data when the mixture is first fitted (Leiden
        communities at this resolution, at most ``n_components``; see
        :func:`mixvi.priors.initialize_from_latent`).
    """

    def __init__(
        self,
        n_latent: int,
        prior: PriorName = "gmm",
        n_components: int = 10,
        posterior: PosteriorName = "gaussian",
        n_label_components: int = 0,
        pretrain_normal: bool = True,
        prior_kwargs: dict | None = None,
        resolution: float | None = None,
    ):
        super().__init__()
        self.resolution = resolution
        self.prior: LatentPrior = make_prior(prior, n_latent, n_components, **(prior_kwargs or {}))
        self.is_mixture = isinstance(self.prior, MixturePrior)
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be 'gaussian' or 'mixture', got {posterior!r}.")
        if posterior == "mixture" and not self.is_mixture:
            raise ValueError(
                "posterior='mixture' needs a mixture prior (prior='gmm' or 'hierarchical')."
            )
        if n_label_components and not self.is_mixture:
            raise ValueError("A label prior needs a mixture prior (prior='gmm' or 'hierarchical').")
        n_assignable = self.prior.n_free_components() if self.is_mixture else 1
        if n_label_components > n_assignable:
            raise ValueError(
                f"{n_label_components} known labels need at least as many mixture components "
                f"(got {n_assignable}); raise n_components."
            )
        self.n_latent = n_latent
        self.posterior = posterior
        self.n_label_components = int(n_label_components)
        self.standard_normal = StandardNormalPrior(n_latent)
        needs_init = bool(pretrain_normal and self.is_mixture)
        self.register_buffer("prior_initialized", torch.tensor(not needs_init))
        # a Python copy of the buffer, so the loss branches without reading a device tensor
        self._initialized = not needs_init
        self.register_buffer("gumbel_temperature", torch.tensor(1.0))
        self._gumbel_tau = 1.0  # Python copy: the sampler needs a float, not a device read

    # -- state -------------------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        """Number of prior components (all tree nodes for ``"hierarchical"``)."""
        return self.prior.n_components

    @property
    def initialized(self) -> bool:
        """Whether the mixture (not N(0, I)) is the prior of the loss."""
        return self._initialized

    def mark_initialized(self) -> None:
        """Switch the loss from N(0, I) to the (now data-fitted) mixture."""
        self.prior_initialized.fill_(True)
        self._initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "prior_initialized"
        if key in state_dict:
            self._initialized = bool(state_dict[key])
        if prefix + "gumbel_temperature" in state_dict:
            self._gumbel_tau = float(state_dict[prefix + "gumbel_temperature"])

    # -- mixture posterior -------------------------------------------------------------------
    def set_gumbel_temperature(self, tau: float) -> None:
        """Temperature of the Gumbel-softmax relaxation of the mixture posterior."""
        self.gumbel_temperature.fill_(float(tau))
        self._gumbel_tau = float(tau)

    def mixture_posterior(
        self, qc_logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
        labels: torch.Tensor | None = None, sample_shape: tuple[int, ...] = (),
    ) -> dict:
        """Probabilities, a reparametrised sample and moments of q(c|x) q(z|x, c).

        A labelled cell's posterior is its label's component (q(c|x) the point mass).

        Parameters
        ----------
        qc_logits
            ``(n, K)``.
        loc, scale
            ``(n, K, d)``.
        labels
            Registered label codes ``(n, 1)`` (label prior).
        sample_shape
            Leading shape of the samples.

        Returns
        -------
        dict with ``probs`` ``(n, K)``, ``z`` (``sample_shape + (n, d)``) and ``qz`` (the
        moment-matched Normal, ``(n, d)``).
        """
        K = qc_logits.shape[-1]
        probs = self.prior.posterior_log_probs(qc_logits).exp()
        component = self.known_components(labels)
        if component is not None:
            onehot = nn.functional.one_hot(component.clamp(min=0), K).to(probs.dtype)
            probs = torch.where((component >= 0).unsqueeze(1), onehot, probs)
        z = self.sample_mixture_posterior(qc_logits, loc, scale, sample_shape, component)
        mean, std = mixture_moments(probs, loc, scale)
        return {"probs": probs, "z": z, "qz": Normal(mean, std)}

    def sample_mixture_posterior(
        self,
        qc_logits: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        sample_shape: tuple[int, ...] = (),
        component: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gumbel-softmax draw of ``c`` then reparametrised ``z`` in the chosen component.

        The straight-through estimator keeps the forward draw one-hot (a sample from
        the chosen component) while gradients flow through the relaxed weights. Cells with
        a known ``component`` (``>= 0``, shape ``(n_cells,)``) draw from that component.

        Returns
        -------
        Tensor of shape ``sample_shape + (n_cells, n_latent)``.
        """
        masked = self.prior.posterior_log_probs(qc_logits)
        logits = masked.expand(sample_shape + masked.shape)
        y = nn.functional.gumbel_softmax(logits, tau=self._gumbel_tau, hard=True)
        if component is not None:
            onehot = nn.functional.one_hot(component.clamp(min=0), masked.shape[-1]).to(y.dtype)
            y = torch.where((component >= 0).unsqueeze(-1), onehot, y)
        eps = torch.randn(sample_shape + loc.shape, device=loc.device)
        return (y.unsqueeze(-1) * (loc + scale * eps)).sum(-2)

    @staticmethod
    def mixture_log_density(
        probs: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        """``log sum_c q(c|x) N(z; mu_c, sigma_c^2)`` of samples ``z`` ``(..., n, d)``."""
        log_qc = torch.log(probs.clamp(min=1e-30))
        per_c = Normal(loc, scale).log_prob(z.unsqueeze(-2)).sum(-1)  # (..., n, K)
        return torch.logsumexp(per_c + log_qc, dim=-1)

    def known_components(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Component of each labelled cell (``-1`` unknown), or ``None`` without a label prior."""
        if not self.n_label_components or labels is None:
            return None
        return known_components(labels, self.n_label_components)

    # -- KL ----------------------------------------------------------------------------------
    def kl(
        self, qz: Normal, z: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """KL of a Gaussian posterior to the prior of the loss, shape ``(n_cells,)``.

        Parameters
        ----------
        qz
            ``loc``/``scale`` of shape ``(n_cells, d)``.
        z
            Reparametrised samples of ``qz`` for Monte-Carlo estimators.
        labels
            Registered label codes ``(n_cells, 1)`` (label prior only).
        """
        if not self._initialized:
            return self.standard_normal.kl(qz)
        return self.prior.kl(qz, z, self.known_components(labels))

    def kl_mixture_posterior(
        self,
        qc_logits: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """KL of a mixture posterior q(c|x) q(z|x,c) to the prior, shape ``(n_cells,)``.

        Before the mixture is fitted (``pretrain_normal``), every component of q(z|x, c)
        is pulled to N(0, I) (``sum_c q(c|x) KL(q(z|x,c) || N(0, I))``) and q(c|x) gets no
        KL, which keeps the latent unshaped by the unfitted mixture.

        Parameters
        ----------
        qc_logits
            ``(n_cells, K)``.
        loc, scale
            ``(n_cells, K, d)``.
        labels
            Registered label codes ``(n_cells, 1)``.
        """
        component = self.known_components(labels)
        if not self._initialized:
            qc = self.prior.posterior_log_probs(qc_logits).exp()
            per_c = self.standard_normal.kl(Normal(loc, scale))  # (n, K)
            if component is not None:
                own = per_c.gather(1, component.clamp(min=0).unsqueeze(1)).squeeze(1)
                return torch.where(component >= 0, own, (qc * per_c).sum(-1))
            return (qc * per_c).sum(-1)
        kl_c, kl_z = self.prior.kl_mixture_posterior(qc_logits, loc, scale, component)
        return kl_c + kl_z

    # -- densities ---------------------------------------------------------------------------
    def log_prob(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z)`` under the prior of the loss, shape ``z.shape[:-1]``.

        A labelled cell gets the joint ``log pi_c + log N(z; m_c, s_c^2)``, so that with
        labels the marginal likelihood is ``log p(x, c)``.
        """
        if not self._initialized:
            return self.standard_normal.log_prob(z)
        return self.prior.log_prob(z, self.known_components(labels))

    def responsibilities(
        self, qz_loc: torch.Tensor, qz_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Component probabilities ``(n_cells, K)``; see
        :meth:`mixvi.priors.MixturePrior.responsibilities`."""
        return self.prior.responsibilities(qz_loc, qz_scale)

    def mixture_entropy(self) -> torch.Tensor:
        """Entropy of the mixture weights (nats)."""
        return self.prior.mixture_entropy()


__all__ = [
    "POSTERIORS",
    "PosteriorName",
    "PriorLayer",
    "known_components",
    "log_mean_exp",
    "mixture_moments",
]
