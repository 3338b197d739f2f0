"""mixvi: single-cell multi-omics integration with trainable Gaussian-mixture priors.

``import mixvi`` is cheap: the models (:class:`MixVI`, :class:`MultiMixVI`), the
sub-packages and :data:`settings` are loaded on first use (PEP 562 ``__getattr__``), so
``mixvi --help`` does not wait for torch and scvi-tools.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("mixvi")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.1.0"

# public name -> (module, attribute in it; None: the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "MixVI": ("mixvi.model", "MixVI"),
    "MultiMixVI": ("mixvi.model", "MultiMixVI"),
    "settings": ("mixvi._settings", "settings"),
    "data": ("mixvi.data", None),
    "datasets": ("mixvi.datasets", None),
    "metrics": ("mixvi.metrics", None),
    "pl": ("mixvi.pl", None),
    "priors": ("mixvi.priors", None),
    "module": ("mixvi.module", None),
    "train": ("mixvi.train", None),
    "dataloaders": ("mixvi.dataloaders", None),
}

__all__ = ["MixVI", "MultiMixVI", "__version__", "data", "datasets", "metrics", "pl", "priors", "settings"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily
    from . import data, datasets, metrics, pl, priors
    from ._settings import settings
    from .model import MixVI, MultiMixVI


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
