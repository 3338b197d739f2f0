"""User-facing models (thin scvi-tools model classes over the torch modules)."""

from ._mixvi import MixVI
from ._multimixvi import MultiMixVI

__all__ = ["MultiMixVI", "MixVI"]
