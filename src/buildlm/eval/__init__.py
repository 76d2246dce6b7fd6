"""buildlm.eval."""
