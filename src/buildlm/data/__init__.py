"""buildlm.data."""
