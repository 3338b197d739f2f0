"""User-facing models (thin scvi-tools model classes over the torch modules)."""

from ._clusters import smooth_over_neighbours
from ._mixvi import MixVI
from ._multimixvi import MultiMixVI

__all__ = ["MultiMixVI", "MixVI", "smooth_over_neighbours"]
