"""Hyperparameter search: Ray Tune runs trials, each one a Ray Train run of its own."""
