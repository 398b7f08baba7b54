"""Weighted, L2-regularised logistic regression fitted by L-BFGS, with the same arithmetic on every
x86-64 CPU with AVX2 and FMA, so `echogate train` fits the same weights wherever it runs.

Why not scikit-learn's LogisticRegression: its L-BFGS (scipy's L-BFGS-B) takes its dot products
from OpenBLAS, whose kernel and thread split are picked for the CPU at hand, and NumPy picks
AVX-512 or AVX2 loops the same way. The trainer stops the fit before it converges
(TrainConfig.max_iter), and over 300 iterations those last-bit differences grow into another
model: one held-out fold of the same data, code and library versions read 0.828, 0.842, 0.852
and 0.869 AUROC on four CPU code paths (docs/benchmarks.md). Here:

- every dot product and sum is NumPy's pairwise sum of an element-wise product, which adds in
  the same order whatever the vector width;
- products with the features are scipy's sparse kernels (plain C++, built for the baseline), in
  single precision as the features are stored (as scikit-learn ran them: a double-precision copy
  of a fold's features would not fit two folds at a time in 24 GB);
- the loss is scipy.special's log_expit and expit, which call the C library's exp and log1p:
  glibc picks one variant for every CPU with AVX2 and FMA (x86-64-v3, every x86 server CPU since
  about 2015), another without them.

The objective is scikit-learn's, so C reads as LogisticRegression's C:
  (1/S) sum_i w_i log(1 + exp(-s_i z_i)) + |coef|^2 / (2 C S),  S = sum_i w_i,
with z = x coef + intercept, s = +1 for label 1 and -1 for label 0, the intercept not penalised.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_expit

# L-BFGS keeps this many correction pairs (scipy's L-BFGS-B default, which the model shipped with
# through bot-origin-0.16.0)
MEMORY = 10
# The line search's Wolfe conditions, as scipy's L-BFGS-B sets them for MINPACK-2's dcsrch: the
# value must fall by at least SUFFICIENT_DECREASE of what the slope promises, and the slope must
# flatten to at most CURVATURE of its size at the start. A step that is still descending steeply is
# lengthened, up to EXTRAPOLATION times per evaluation, so the fit moves as far per iteration as
# scipy's did: after 100 iterations of one fold, an Armijo-only search that never lengthens a step
# stood at 0.272, scipy's at 0.235-0.250 and this one at 0.238 (docs/benchmarks.md).
SUFFICIENT_DECREASE = 1e-3
CURVATURE = 0.9
EXTRAPOLATION = 4.0
MAX_EVALUATIONS = 20


@dataclass(frozen=True)
class LinearFit:
    """A fitted linear scorer: weights over the feature columns and an intercept."""
    weights: np.ndarray
    intercept: float
    iterations: int

    def evidence(self, x: sp.csr_matrix) -> np.ndarray:
        """x . weights, without the intercept: the graph's raw score of each row (see graph.Calibration)."""
        return x @ self.weights


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """a . b as NumPy's pairwise sum of the products: BLAS's ddot adds in an order that depends on the CPU."""
    return float(np.add.reduce(a * b))


class LogisticObjective:
    """The objective above over one training set: its value at any weights, and its gradient
    where the fit needs it. Also what bench/fit_determinism.py reads a stopped fit by."""

    def __init__(self, x: sp.csr_matrix, y: np.ndarray, sample_weight: np.ndarray, c: float,
                 feature_scale: np.ndarray | None = None):
        self.x = sp.csr_matrix(x, dtype=np.float32)
        self.sign = np.where(np.asarray(y) > 0, 1.0, -1.0)
        total = float(np.add.reduce(sample_weight))
        self.share = np.asarray(sample_weight, np.float64) / total
        self.penalty = 1.0 / (c * total)
        # the weights are those of x's columns times feature_scale (fit_logistic)
        self.scale = None if feature_scale is None else np.asarray(feature_scale, np.float64)

    def column_weights(self, weights: np.ndarray) -> np.ndarray:
        """The weights of x's own columns: the fitted weights times feature_scale."""
        return weights if self.scale is None else weights * self.scale

    def margins(self, weights: np.ndarray, intercept: float) -> np.ndarray:
        return self.sign * ((self.x @ self.column_weights(weights).astype(np.float32)).astype(np.float64) + intercept)

    def value(self, weights: np.ndarray, intercept: float, margins: np.ndarray | None = None) -> float:
        margins = self.margins(weights, intercept) if margins is None else margins
        return -dot(self.share, log_expit(margins)) + 0.5 * self.penalty * dot(weights, weights)

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """At theta = (weights..., intercept)."""
        weights, intercept = theta[:-1], theta[-1]
        margins = self.margins(weights, intercept)
        residual = -self.share * self.sign * expit(-margins)
        gradient = np.empty_like(theta)
        gradient[:-1] = self.column_weights((self.x.T @ residual.astype(np.float32)).astype(np.float64))
        gradient[:-1] += self.penalty * weights
        gradient[-1] = np.add.reduce(residual)
        return self.value(weights, intercept, margins), gradient


def fit_logistic(x: sp.csr_matrix, y: np.ndarray, sample_weight: np.ndarray, c: float, max_iter: int,
                 tol: float = 1e-4, on_iteration: Callable[[], object] | None = None,
                 feature_scale: np.ndarray | None = None) -> LinearFit:
    """Minimise the objective above from zero weights for at most `max_iter` L-BFGS iterations,
    stopping earlier once no gradient component exceeds `tol` (scikit-learn's stopping rule).
    `on_iteration` is called as each iteration starts (a progress bar's update).

    With `feature_scale`, the fit is that of x with each column multiplied by its scale (an
    inverse document frequency, say), without building that matrix: the margins read x with the
    weights times the scale, and the L2 penalty is on the weights of the scaled columns. The
    returned weights are x's own columns' (the fitted ones times the scale), so they score x as
    it is."""
    objective = LogisticObjective(x, y, sample_weight, c, feature_scale)
    theta = np.zeros(objective.x.shape[1] + 1)
    value, gradient = objective.value_and_gradient(theta)
    history: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=MEMORY)
    iteration = 0
    while iteration < max_iter and np.abs(gradient).max() > tol:
        iteration += 1
        if on_iteration is not None:
            on_iteration()
        direction = -two_loop(gradient, history)
        slope = dot(gradient, direction)
        if slope >= 0:  # not a descent direction (a stale curvature pair): restart from steepest descent
            history.clear()
            direction, slope = -gradient, -dot(gradient, gradient)
        accepted = wolfe_search(along(objective, theta, direction), Trial(0.0, value, slope, theta, gradient),
                                1.0 if history else 1.0 / np.sqrt(dot(gradient, gradient)))
        if accepted is None:
            break  # no step decreases the objective: as converged as this arithmetic allows
        s, g_change = accepted.theta - theta, accepted.gradient - gradient
        curvature = dot(s, g_change)
        if curvature > 1e-10 * dot(g_change, g_change):  # keep the pair only where it is a valid (positive) curvature
            history.append((s, g_change, 1.0 / curvature))
        theta, value, gradient = accepted.theta, accepted.value, accepted.gradient
    return LinearFit(objective.column_weights(theta[:-1]).copy(), float(theta[-1]), iteration)


@dataclass(frozen=True)
class Trial:
    """One point the line search evaluated: its step along the direction, the objective there, and
    the objective's slope along the direction there."""
    step: float
    value: float
    slope: float
    theta: np.ndarray
    gradient: np.ndarray


def along(objective: LogisticObjective, theta: np.ndarray, direction: np.ndarray) -> Callable[[float], Trial]:
    """The objective at theta + step * direction, as a function of the step, for the line search."""
    def evaluate(step: float) -> Trial:
        candidate = theta + step * direction
        value, gradient = objective.value_and_gradient(candidate)
        return Trial(step, value, dot(gradient, direction), candidate, gradient)
    return evaluate


def wolfe_search(evaluate: Callable[[float], Trial], start: Trial, step: float) -> Trial | None:
    """A step from `start` that meets the Wolfe conditions above (Nocedal and Wright's Algorithms
    3.5 and 3.6 in one loop), or failing that within MAX_EVALUATIONS, the lowest point that meets
    the sufficient decrease; None where no point does. `low` is the lowest such point so far, and
    `high` the other end of an interval known to hold an acceptable step (None until one is found).
    Only Python's scalar arithmetic chooses steps, so they are the same on every CPU."""
    low, high = start, None
    for _ in range(MAX_EVALUATIONS):
        trial = evaluate(step)
        if trial.value > start.value + SUFFICIENT_DECREASE * trial.step * start.slope or trial.value >= low.value:
            high = trial
        elif abs(trial.slope) <= -CURVATURE * start.slope:
            return trial
        elif high is None and trial.slope < 0:  # still descending steeply beyond every step tried: go further
            step = min(max(cubic_minimum(low, trial, trial.step * EXTRAPOLATION), 1.1 * trial.step),
                       EXTRAPOLATION * trial.step)
            low = trial
            continue
        else:
            if high is None or trial.slope * (high.step - low.step) >= 0:
                high = low
            low = trial
        # the next trial: the cubic's minimiser, kept a tenth of the interval off either end so the
        # interval shrinks by at least that much each time
        inner = 0.1 * abs(high.step - low.step)
        step = min(max(cubic_minimum(low, high, 0.5 * (low.step + high.step)), min(low.step, high.step) + inner),
                   max(low.step, high.step) - inner)
    return None if low is start else low


def cubic_minimum(a: Trial, b: Trial, fallback: float) -> float:
    """The minimiser of the cubic through two trials' values and slopes (Nocedal and Wright, eq. 3.59),
    or `fallback` where that cubic has none."""
    d1 = a.slope + b.slope - 3.0 * (a.value - b.value) / (a.step - b.step)
    radicand = d1 * d1 - a.slope * b.slope
    if radicand < 0:
        return fallback
    d2 = math.copysign(math.sqrt(radicand), b.step - a.step)
    denominator = b.slope - a.slope + 2.0 * d2
    if denominator == 0:
        return fallback
    return b.step - (b.step - a.step) * (b.slope + d2 - d1) / denominator


def two_loop(gradient: np.ndarray, history: deque[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """The inverse-Hessian estimate times `gradient`, from the stored correction pairs (Nocedal's
    two-loop recursion), scaled by the newest pair's curvature."""
    q = gradient.copy()
    alphas = []
    for s, g_change, rho in reversed(history):
        alpha = rho * dot(s, q)
        q -= alpha * g_change
        alphas.append(alpha)
    if history:
        s, g_change, rho = history[-1]
        q *= 1.0 / (rho * dot(g_change, g_change))
    for (s, g_change, rho), alpha in zip(history, reversed(alphas)):
        q += (alpha - rho * dot(g_change, q)) * s
    return q
