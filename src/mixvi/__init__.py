"""mixvi: single-cell multi-omics integration with trainable Gaussian-mixture priors."""

from importlib.metadata import PackageNotFoundError, version

from . import data, datasets, metrics, priors
from . import pl
from ._settings import settings
from .model import MixVI
from .model import MultiMixVI

try:
    __version__ = version("mixvi")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"

__all__ = ["MultiMixVI", "MixVI", "data", "datasets", "metrics", "pl", "priors", "settings", "__version__"]
