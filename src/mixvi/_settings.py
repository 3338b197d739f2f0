"""Global settings of mixvi: the random seed (shared with scvi-tools) and determinism."""

from __future__ import annotations

import os

import torch


class MixviSettings:
    """Global options, available as :data:`mixvi.settings`.

    ``seed`` is scvi-tools' seed (:attr:`scvi.settings.seed`): setting either one seeds
    Python's ``random``, NumPy and torch (Lightning's ``seed_everything``) and the
    mixture's k-means initialisation. With a seed, two trainings on CPU with the same
    data, arguments and number of threads give bit-identical weights and latents.

    Examples
    --------
    >>> import mixvi
    >>> mixvi.settings.seed = 0
    >>> mixvi.settings.deterministic = True   # GPU: deterministic kernels (slower)
    """

    @property
    def seed(self) -> int | None:
        """Random seed for Python, NumPy, torch and the mixture initialisation."""
        import scvi

        return scvi.settings.seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        import scvi

        scvi.settings.seed = value

    @property
    def deterministic(self) -> bool:
        """Use only deterministic torch kernels (``torch.use_deterministic_algorithms``).

        CPU training is already deterministic for a given seed. On GPU some kernels
        (scatter/index-add, cuBLAS reductions) are not; setting this to ``True`` also sets
        ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when it is unset (it must be set before the
        first CUDA call to take effect). Deterministic kernels can be slower.
        """
        return torch.are_deterministic_algorithms_enabled()

    @deterministic.setter
    def deterministic(self, value: bool) -> None:
        if value:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(bool(value), warn_only=False)

    def __repr__(self) -> str:
        return f"MixviSettings(seed={self.seed!r}, deterministic={self.deterministic!r})"


settings = MixviSettings()

__all__ = ["MixviSettings", "settings"]
