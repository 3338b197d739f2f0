"""Training plans for mixvi modules (Lightning, via scvi-tools)."""

from ._checkpoint import ResumeCheckpoint
from ._nonfinite import NonFiniteLossError, check_finite_loss, describe_nonfinite_loss
from ._training_plan import MixTrainingPlan

__all__ = [
    "MixTrainingPlan",
    "NonFiniteLossError",
    "ResumeCheckpoint",
    "check_finite_loss",
    "describe_nonfinite_loss",
]
