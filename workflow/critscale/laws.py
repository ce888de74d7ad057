"""Which law of ``median Lambda_n`` extrapolates best, and how sure that is.

Candidate laws, simplest first: constant (``xi = 0``), ``sqrt(log n)``, ``log n``,
``(log n)^2`` (one free level each), the free law ``c (log n)^xi`` and the power ``c n^p`` (two
parameters).  Criterion: extrapolation to larger ``n``, using every length.  Each of the
``scored`` largest lengths is predicted by each law fitted in log space on *all smaller*
lengths (a rolling origin), and a law's error is the mean squared log error over those
predictions.  Laws within ``tie_tolerance`` of the lowest error are tied and the simplest wins,
so on noise-free data a fixed-exponent law is not beaten by the free law that contains it.

The same criterion runs on every resample of the units (the replicates of
:mod:`critscale.resampling`): a law's *frequency* is the share of replicates it wins, and the
headline law is the most frequent one if that share is at least ``law_share``, else
``"undecided"``.
"""

from __future__ import annotations

import numpy as np

LAWS = ("constant", "sqrt_log", "log", "log_squared", "free", "power")
#: Exponent of ``log n`` of the one-parameter laws.
FIXED_LOG_EXPONENTS = {"constant": 0.0, "sqrt_log": 0.5, "log": 1.0, "log_squared": 2.0}
UNDECIDED = "undecided"
#: Two-parameter laws need two training lengths below the first scored one.
MIN_TRAINING_LENGTHS = 2


def can_score(n_lengths: int, scored: int) -> bool:
    return scored >= 1 and n_lengths - scored >= MIN_TRAINING_LENGTHS


def _ols_prediction(x_train: np.ndarray, y_train: np.ndarray, x_new: float) -> np.ndarray:
    """OLS line of ``y_train[..., k]`` on ``x_train[k]``, evaluated at ``x_new``."""
    centred = x_train - x_train.mean()
    slope = np.sum(y_train * centred, axis=-1) / np.sum(centred**2)
    return y_train.mean(axis=-1) + slope * (x_new - x_train.mean())


def extrapolation_errors(log_n: np.ndarray, log_lambda: np.ndarray, scored: int) -> np.ndarray:
    """``(..., law)`` mean squared log error of each law in :data:`LAWS` over the ``scored``
    largest lengths, each predicted from all smaller lengths.  ``log_lambda`` is ``(..., n)`` on
    the ascending ladder ``log_n``; NaN where a value is not finite."""
    if not can_score(len(log_n), scored):
        raise ValueError(f"scoring {scored} lengths needs {scored + MIN_TRAINING_LENGTHS} lengths, got {len(log_n)}")
    log_log_n = np.log(log_n)
    squared = np.zeros((*log_lambda.shape[:-1], len(LAWS)))
    for target in range(len(log_n) - scored, len(log_n)):
        y_train, truth = log_lambda[..., :target], log_lambda[..., target]
        for index, law in enumerate(LAWS):
            if law in FIXED_LOG_EXPONENTS:
                exponent = FIXED_LOG_EXPONENTS[law]
                level = np.mean(y_train - exponent * log_log_n[:target], axis=-1)
                prediction = level + exponent * log_log_n[target]
            else:
                regressor = log_log_n if law == "free" else log_n
                prediction = _ols_prediction(regressor[:target], y_train, regressor[target])
            squared[..., index] += (prediction - truth) ** 2
    return squared / scored


def winner_index(errors: np.ndarray, tie_tolerance: float) -> np.ndarray:
    """Index into :data:`LAWS` of the lowest error along the last axis, the simplest among those
    within ``tie_tolerance`` of it; ``-1`` where some law has no finite error."""
    scored = np.all(np.isfinite(errors), axis=-1)
    best = np.min(np.where(scored[..., None], errors, np.inf), axis=-1, keepdims=True)
    first_within = np.argmax(errors <= best + tie_tolerance, axis=-1)
    return np.where(scored, first_within, -1)


def law_names(index: np.ndarray) -> np.ndarray:
    """Law names for :func:`winner_index` results; NaN (object) for ``-1``."""
    names = np.asarray(LAWS, dtype=object)[np.clip(index, 0, None)]
    return np.where(index >= 0, names, np.nan)


def winner_frequencies(replicate_winners: np.ndarray) -> np.ndarray:
    """``(unit, law)`` share of the scored replicates each law wins, from ``(B, unit)`` winner
    indices (``-1`` = not scored); NaN for a unit without a scored replicate."""
    scored = (replicate_winners >= 0).sum(axis=0)
    wins = np.stack([(replicate_winners == index).sum(axis=0) for index in range(len(LAWS))], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scored[:, None] > 0, wins / scored[:, None], np.nan)


def headline_laws(frequencies: np.ndarray, law_share: float) -> np.ndarray:
    """Per unit the most frequent law if it wins at least ``law_share`` of the replicates, else
    :data:`UNDECIDED`; NaN (object) where nothing was scored."""
    if not 0 < law_share <= 1:
        raise ValueError(f"fitting law_share must be in (0, 1], got {law_share}")
    scored = np.all(np.isfinite(frequencies), axis=-1)
    best = np.argmax(np.where(scored[:, None], frequencies, -1), axis=-1)
    decided = np.take_along_axis(np.nan_to_num(frequencies, nan=0.0), best[:, None], axis=-1)[:, 0] >= law_share
    return np.where(scored, np.where(decided, np.asarray(LAWS, dtype=object)[best], UNDECIDED), np.nan)
