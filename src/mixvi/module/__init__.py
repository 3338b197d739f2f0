"""Torch modules (generative models and losses) behind the user-facing models."""

from ._mixvae import MixVAE
from ._multimixvae import MultiMixVAE
from ._prior_layer import PriorLayer, known_components, log_mean_exp, mixture_moments
from ._sparse_encoder import SparseInputEncoder
from ._translation_calibration import TranslationCalibration

__all__ = [
    "MixVAE",
    "MultiMixVAE",
    "PriorLayer",
    "SparseInputEncoder",
    "TranslationCalibration",
    "known_components",
    "log_mean_exp",
    "mixture_moments",
]
