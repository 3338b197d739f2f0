"""Training plans for mixvi modules (Lightning, via scvi-tools)."""

from ._training_plan import MixTrainingPlan, NonFiniteLossError, check_finite_loss

__all__ = ["MixTrainingPlan", "NonFiniteLossError", "check_finite_loss"]
