"""buildlm.infer: turning a trained model into text (stage 9 of the learning path)."""

from buildlm.infer.generate import generate

__all__ = ["generate"]
