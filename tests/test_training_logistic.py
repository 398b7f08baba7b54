"""The trainer's logistic fit: scikit-learn's objective, and the same weights whatever code paths
the CPU gives NumPy, OpenBLAS and the C library."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from echogate.training.logistic import CURVATURE, SUFFICIENT_DECREASE, Trial, fit_logistic, wolfe_search

# A weighted problem with more features than rows, so the fit is far from converged after a few
# dozen iterations: where the trainer stops it, and where differing last bits would show.
PROBLEM = """
import hashlib, numpy as np, scipy.sparse as sp
from echogate.training.logistic import fit_logistic
rng = np.random.default_rng(7)
n, d, per_row = 3000, 20000, 30
x = sp.csr_matrix((rng.random(n * per_row).astype(np.float32),
                   (np.repeat(np.arange(n), per_row), rng.integers(0, d, n * per_row))), shape=(n, d))
y = (x @ rng.normal(size=d) + rng.normal(size=n) > 0).astype(int)
fitted = fit_logistic(x, y, rng.uniform(0.5, 2.0, n), c=10.0, max_iter=40, tol=0.0)
print(fitted.iterations, hashlib.sha256(fitted.weights.tobytes() + np.float64(fitted.intercept).tobytes()).hexdigest())
"""


def objective(x: sp.csr_matrix, y: np.ndarray, w: np.ndarray, c: float, coef: np.ndarray, intercept: float) -> float:
    margin = np.where(y > 0, 1.0, -1.0) * (x @ coef + intercept)
    return float((w * np.logaddexp(0.0, -margin)).sum() / w.sum() + coef @ coef / (2 * c * w.sum()))


def test_fit_logistic_reaches_the_optimum_scikit_learn_reaches_with_the_same_c():
    rng = np.random.default_rng(0)
    n, d = 4000, 300
    x = sp.random(n, d, density=0.05, format="csr", random_state=1, dtype=np.float32)
    y = (x @ rng.normal(size=d) + 0.3 * rng.normal(size=n) > 0.2).astype(int)
    w = rng.uniform(0.5, 2.0, n)
    ours = fit_logistic(x, y, w, c=0.5, max_iter=2000, tol=1e-8)
    theirs = LogisticRegression(C=0.5, max_iter=2000, tol=1e-8).fit(x, y, sample_weight=w)
    assert ours.iterations < 2000
    # scikit-learn stops on its relative-decrease rule a little short of where this fit stops
    ours_value = objective(x, y, w, 0.5, ours.weights, ours.intercept)
    theirs_value = objective(x, y, w, 0.5, theirs.coef_[0], theirs.intercept_[0])
    assert theirs_value - 1e-6 < ours_value <= theirs_value
    np.testing.assert_allclose(ours.weights, theirs.coef_[0], atol=5e-3)
    assert ours.intercept == pytest.approx(theirs.intercept_[0], abs=5e-3)
    # the raw score leaves the intercept out: the graph's calibration takes its place
    np.testing.assert_allclose(ours.evidence(x), x @ ours.weights)


def test_fit_logistic_stops_at_max_iter_and_scores_every_row():
    rng = np.random.default_rng(1)
    x = sp.random(500, 2000, density=0.02, format="csr", random_state=2)
    y = rng.integers(0, 2, 500)
    fitted = fit_logistic(x, y, np.ones(500), c=100.0, max_iter=5)
    assert fitted.iterations == 5
    assert fitted.evidence(x).shape == (500,) and np.abs(fitted.weights).max() > 0


def test_fit_logistic_reports_each_iteration_and_fits_the_same_weights_with_or_without_a_listener():
    """The trainer's final fit drives a progress bar from on_iteration: one call per iteration,
    whether the fit runs to max_iter or converges first, and the bar changes nothing fitted."""
    rng = np.random.default_rng(1)
    x = sp.random(300, 50, density=0.1, format="csr", random_state=3)
    y = rng.integers(0, 2, 300)
    for max_iter in (4, 1000):
        calls: list[None] = []
        fitted = fit_logistic(x, y, np.ones(300), c=1.0, max_iter=max_iter, on_iteration=lambda: calls.append(None))
        assert len(calls) == fitted.iterations and (fitted.iterations == 4 if max_iter == 4 else 4 < len(calls) < 1000)
        unheard = fit_logistic(x, y, np.ones(300), c=1.0, max_iter=max_iter)
        np.testing.assert_array_equal(fitted.weights, unheard.weights)


def parabola(minimum: float) -> tuple[Trial, list[float], Callable[[float], Trial]]:
    """(step - minimum)^2 along a line, its start at step 0, and the steps the search evaluated."""
    tried: list[float] = []

    def evaluate(step: float) -> Trial:
        tried.append(step)
        return Trial(step, (step - minimum) ** 2, 2 * (step - minimum), np.array([step]), np.array([0.0]))
    return Trial(0.0, minimum ** 2, -2 * minimum, np.zeros(1), np.zeros(1)), tried, evaluate


def meets_wolfe_conditions(start: Trial, trial: Trial) -> bool:
    return (trial.value <= start.value + SUFFICIENT_DECREASE * trial.step * start.slope
            and abs(trial.slope) <= -CURVATURE * start.slope)


@pytest.mark.parametrize("minimum, first_step, most_evaluations", [(100.0, 1.0, 3), (1.0, 1000.0, 4), (3.0, 2.0, 1)])
def test_line_search_lengthens_a_short_step_and_shortens_a_long_one(minimum, first_step, most_evaluations):
    """A step that still descends steeply is lengthened (an Armijo-only search would take step 1
    towards a minimum at 100, and L-BFGS would move a hundredth as far as it could), one that
    overshoots is cut back by interpolation (halving would take ten evaluations from 1000), and one
    that meets both conditions is taken as it is."""
    start, tried, evaluate = parabola(minimum)
    accepted = wolfe_search(evaluate, start, first_step)
    assert accepted is not None and meets_wolfe_conditions(start, accepted), tried
    assert len(tried) <= most_evaluations, tried


def test_line_search_gives_up_where_no_step_decreases_the_value():
    def rising(step: float) -> Trial:
        return Trial(step, 1.0 + step, -1e-12, np.array([step]), np.zeros(1))  # claims descent but rises
    assert wolfe_search(rising, Trial(0.0, 1.0, -1e-12, np.zeros(1), np.zeros(1)), 1.0) is None


def run_problem(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", PROBLEM], capture_output=True, text=True, check=True,
                          env={**os.environ, **env}, timeout=120)
    return done.stdout.strip()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the code paths pinned here are x86-64's")
def test_fit_logistic_gives_the_same_bits_on_every_cpu_code_path():
    """Each run stands for another CPU: OpenBLAS told to use an older core's kernels and one
    thread, NumPy kept to its baseline loops, the C library told the CPU has no AVX-512.
    scikit-learn's L-BFGS moves with OpenBLAS's kernels (docs/benchmarks.md); this fit must not."""
    import numpy._core._multiarray_umath as umath  # which dispatched loop sets NumPy would pick here

    present = [name for name in umath.__cpu_dispatch__ if umath.__cpu_features__.get(name)]
    paths = {
        "as found": {},
        "OpenBLAS Prescott kernels, one thread": {"OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "1",
                                                  "OMP_NUM_THREADS": "1"},
        "OpenBLAS Haswell kernels": {"OPENBLAS_CORETYPE": "Haswell"},
        "NumPy's baseline loops only": {"NPY_DISABLE_CPU_FEATURES": " ".join(present)} if present else {},
        "no AVX-512 for the C library": {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX512BW,-AVX512DQ,-AVX512VL"},
    }
    results = {name: run_problem(env) for name, env in paths.items()}
    assert len(set(results.values())) == 1, json.dumps(results, indent=1)
    assert results["as found"].split()[0] == "40"  # stopped early, as the trainer stops it


def test_feature_scale_fits_the_scaled_columns_and_returns_the_unscaled_columns_weights():
    """fit_logistic(x, feature_scale=s) is the fit of x with column j times s[j] (the matrix never
    built), its weights returned for x's own columns: they score x as the scaled fit scores x * s."""
    rng = np.random.default_rng(3)
    n, d = 3000, 200
    x = sp.random(n, d, density=0.05, format="csr", random_state=4, dtype=np.float32)
    y = (x @ rng.normal(size=d) + 0.3 * rng.normal(size=n) > 0.2).astype(int)
    w = rng.uniform(0.5, 2.0, n)
    scale = rng.uniform(0.5, 4.0, d)
    scaled = fit_logistic(x, y, w, c=0.5, max_iter=2000, tol=1e-8, feature_scale=scale)
    explicit = fit_logistic((x @ sp.diags(scale.astype(np.float32))).tocsr(), y, w, c=0.5, max_iter=2000, tol=1e-8)
    np.testing.assert_allclose(scaled.weights, explicit.weights * scale, atol=1e-3)  # float32 products differ
    np.testing.assert_allclose(scaled.evidence(x), explicit.evidence((x @ sp.diags(scale)).tocsr()), rtol=1e-3,
                               atol=1e-3)
    # the penalty holds the scaled columns' weights: the unscaled fit is another model
    plain = fit_logistic(x, y, w, c=0.5, max_iter=2000, tol=1e-8)
    assert np.abs(plain.weights - scaled.weights).max() > 1e-2
