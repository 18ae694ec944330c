"""Forecasting baselines and metrics in the series' own units, on the model's test targets.

A forecaster is only worth registering if it beats what needs no training: repeating the last
value (naive), repeating the value one season earlier (seasonal naive), and a least-squares
linear autoregression on the same input window. All are one step ahead and scored on exactly
the test targets the model is scored on.
"""

from __future__ import annotations

import numpy as np


def _lagged(values: np.ndarray, targets: np.ndarray, window: int) -> np.ndarray:
    """(N, window + 1): the `window` values before each target, then 1 for the intercept."""
    inputs = values[targets[:, None] + np.arange(-window, 0)]
    return np.hstack([inputs, np.ones((len(targets), 1))])


def series_baselines(
    values: np.ndarray,
    train_target_index: np.ndarray,
    test_target_index: np.ndarray,
    window: int,
    season: int = 52,
) -> dict[str, float]:
    """Test MAEs of the naive, seasonal-naive and linear AR(`window`) one-step forecasts.

    `values` is the raw (unscaled) series; the AR coefficients are fitted on the train targets'
    windows only, so no test value leaks into the baseline either.
    """
    values = np.asarray(values, dtype=np.float64)
    truth = values[test_target_index]
    coefficients, *_ = np.linalg.lstsq(
        _lagged(values, train_target_index, window), values[train_target_index], rcond=None
    )
    linear_ar = _lagged(values, test_target_index, window) @ coefficients
    return {
        "baseline/naive_mae": float(np.abs(truth - values[test_target_index - 1]).mean()),
        "baseline/seasonal_naive_mae": float(
            np.abs(truth - values[test_target_index - season]).mean()
        ),
        "baseline/linear_ar_mae": float(np.abs(truth - linear_ar).mean()),
    }


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """MAE and RMSE over every predicted step, in original units (inverse-transform first)."""
    errors = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return {
        "test/mae": float(np.abs(errors).mean()),
        "test/rmse": float(np.sqrt(np.square(errors).mean())),
    }
