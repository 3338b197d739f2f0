"""User-facing models (thin scvi-tools model classes over the torch modules)."""

from ._mixvi import MixVI

__all__ = ["MixVI"]
