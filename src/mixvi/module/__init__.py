"""Torch modules (generative models and losses) behind the user-facing models."""

from ._batch_balance import BatchBalancePenalty, batch_mutual_information
from ._mixvae import MixVAE
from ._multimixvae import MultiMixVAE
from ._prior_layer import PriorLayer, known_components, log_mean_exp, mixture_moments
from ._sparse_encoder import SparseInputEncoder
from ._translation_calibration import TranslationCalibration

__all__ = [
    "BatchBalancePenalty",
    "MixVAE",
    "MultiMixVAE",
    "PriorLayer",
    "SparseInputEncoder",
    "TranslationCalibration",
    "batch_mutual_information",
    "known_components",
    "log_mean_exp",
    "mixture_moments",
]
