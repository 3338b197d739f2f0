"""Torch modules (generative models and losses) behind the user-facing models."""

from ._mixvae import MixVAE
from ._multimixvae import MultiMixVAE
from ._prior_layer import PriorLayer, known_components, log_mean_exp, mixture_moments

__all__ = ["MixVAE", "MultiMixVAE", "PriorLayer", "known_components", "log_mean_exp", "mixture_moments"]
