"""Torch modules (generative models and losses) behind the user-facing models."""

from ._mixvae import MixVAE, known_components, mixture_moments
from ._multimixvae import MultiMixVAE

__all__ = ["MultiMixVAE", "MixVAE", "known_components", "mixture_moments"]
