"""Torch modules (generative models and losses) behind the user-facing models."""

from ._mixvae import MixVAE, known_components, mixture_moments

__all__ = ["MixVAE", "known_components", "mixture_moments"]
