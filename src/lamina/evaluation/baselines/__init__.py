"""Non-deep baselines computed on the same test split, so a model has something to beat."""
