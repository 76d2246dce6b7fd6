"""buildlm.viz."""
