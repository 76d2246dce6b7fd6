"""buildlm.hub."""
