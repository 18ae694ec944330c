"""Lamina: a distributed deep-learning training pipeline (DVC, Ray Data, Ray Train, MLflow)."""

__version__ = "0.1.0"
