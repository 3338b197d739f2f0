"""Training plans for mixvi modules (Lightning, via scvi-tools), and training progress.

:class:`MixTrainingPlan` adds mixture initialisation, Gumbel annealing and a NaN guard to
scvi-tools' plan; :class:`TrainingLog` writes log lines where no progress bar can show and
warns when training ended too early; :func:`batch_predictability` tells whether batches
still separate in an embedding.
"""

from ._best_weights import RestoreBestWeights
from ._checkpoint import ResumeCheckpoint
from ._diagnostics import batch_predictability
from ._nonfinite import NonFiniteLossError, check_finite_loss, describe_nonfinite_loss
from ._progress import (
    TrainingLog,
    TrainingWarning,
    default_log_interval,
    progress_bar_default,
    relative_improvement,
    with_training_log,
)
from ._training_plan import MixTrainingPlan

__all__ = [
    "MixTrainingPlan",
    "RestoreBestWeights",
    "TrainingLog",
    "TrainingWarning",
    "batch_predictability",
    "default_log_interval",
    "progress_bar_default",
    "relative_improvement",
    "with_training_log",
    "NonFiniteLossError",
    "ResumeCheckpoint",
    "check_finite_loss",
    "describe_nonfinite_loss",
]
