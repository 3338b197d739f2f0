"""Training plans for mixvi modules (Lightning, via scvi-tools)."""

from ._training_plan import (
    MixTrainingPlan,
    NonFiniteLossError,
    ResumeCheckpoint,
    check_finite_loss,
    describe_nonfinite_loss,
)

__all__ = [
    "MixTrainingPlan",
    "NonFiniteLossError",
    "ResumeCheckpoint",
    "check_finite_loss",
    "describe_nonfinite_loss",
]
