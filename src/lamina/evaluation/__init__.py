"""Scoring a trained model on the held-back test split: metrics, baselines, plots."""
