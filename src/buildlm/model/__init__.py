"""buildlm.model."""
