"""Does a held-out fold's fit depend on the CPU's code paths? The trainer's fit against scikit-learn's.

  python bench/fit_determinism.py [--data ../shared/datasets] [--fold cucom_vs_taskmaster4]
      [--iterations 300] [--cache /tmp/fit_determinism]

One fold's training rows and held-out rows are built once with the trainer's own functions
(`training_docs`, `document_features`, `TrainingRows`, `make_folds`) and cached.
Then each fitter, the trainer's (`echogate.training.logistic.fit_logistic`) and scikit-learn's
LogisticRegression (lbfgs, what bot-origin-0.16.0 and earlier trained with), fits them in a fresh
process for every code path below. Each code path stands for another CPU: OpenBLAS told to run an
older core's kernels or one thread, NumPy kept to its baseline loops, the C library told the CPU
has no AVX-512. A row per fit: a hash of the weights, the iterations, the objective where the fit stopped
(logistic.py's, which is scikit-learn's), the held-out AUROC of the fold's dialogues and turns (raw
scores, as `train.read_scores` reads them), and the fit's seconds.
Results in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FITTERS = ("trainer", "scikit-learn")


def code_paths() -> dict[str, dict[str, str]]:
    """Environments that each make this machine's libraries run as on another CPU."""
    import numpy._core._multiarray_umath as umath

    dispatched = " ".join(name for name in umath.__cpu_dispatch__ if umath.__cpu_features__.get(name))
    return {
        "as found": {},
        "OpenBLAS Haswell kernels": {"OPENBLAS_CORETYPE": "Haswell"},
        "OpenBLAS Prescott kernels, one thread": {"OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "1",
                                                  "OMP_NUM_THREADS": "1"},
        "NumPy baseline loops, C library without AVX-512": {
            "NPY_DISABLE_CPU_FEATURES": dispatched,
            "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX512BW,-AVX512DQ,-AVX512VL"},
    }


def build_cache(data: Path, fold: str, cache: Path) -> None:
    """The fold's training matrix, labels and weights, and its held-out rows as the model reads them."""
    import numpy as np
    import scipy.sparse as sp

    from echogate.training.config import TrainConfig
    from echogate.training.folds import make_folds
    from echogate.training.rows import TrainingData
    from echogate.training.train import training_docs

    cfg = TrainConfig()
    docs = training_docs(data, cfg)
    run = TrainingData.build(docs, cfg)
    test, excluded = make_folds(docs)[fold]
    features, labels, weights = run.rows.select(run.y, run.w, ~excluded)
    cache.mkdir(parents=True, exist_ok=True)
    sp.save_npz(cache / "train.npz", features, compressed=False)
    sp.save_npz(cache / "test.npz", run.x[test].tocsr(), compressed=False)
    np.savez(cache / "arrays.npz", y=labels, w=weights, test_y=run.y[test], transcript=run.transcript[test],
             pooled=run.pooled[test], c=cfg.c, count_power=cfg.transcript_count_power)


def fit_once(fitter: str, iterations: int, cache: Path) -> dict:
    """One fit in this process (its environment already set), as a JSON-ready row."""
    import numpy as np
    import scipy.sparse as sp

    from echogate import evaluation
    from echogate.training.logistic import LinearFit, LogisticObjective, fit_logistic
    from echogate.training.train import read_scores

    x, arrays = sp.load_npz(cache / "train.npz"), np.load(cache / "arrays.npz")
    start = time.perf_counter()
    if fitter == "trainer":
        model = fit_logistic(x, arrays["y"], arrays["w"], float(arrays["c"]), iterations)
    else:
        from sklearn.linear_model import LogisticRegression
        clf = LogisticRegression(C=float(arrays["c"]), max_iter=iterations).fit(x, arrays["y"],
                                                                                sample_weight=arrays["w"])
        model = LinearFit(clf.coef_[0], float(clf.intercept_[0]), int(clf.n_iter_[0]))
    seconds = time.perf_counter() - start
    objective = LogisticObjective(x, arrays["y"], arrays["w"], float(arrays["c"])).value(model.weights, model.intercept)
    transcript = arrays["transcript"]
    raw = read_scores(model, sp.load_npz(cache / "test.npz"), transcript, float(arrays["count_power"]),
                      arrays["pooled"])
    label = arrays["test_y"]
    return {"weights": hashlib.sha256(model.weights.tobytes()).hexdigest()[:12], "iterations": model.iterations,
            "objective": objective,
            "dialogues": evaluation.auroc(label[transcript], raw[transcript]),
            "turns": evaluation.auroc(label[~transcript], raw[~transcript]), "seconds": round(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--fold", default="cucom_vs_taskmaster4")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fit_determinism"))
    parser.add_argument("--fitters", default=",".join(FITTERS))
    parser.add_argument("--child", choices=FITTERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.cache / args.fold
    if args.child:
        print(json.dumps(fit_once(args.child, args.iterations, cache)))
        return
    if not (cache / "arrays.npz").exists():
        build_cache(args.data, args.fold, cache)
    print(f"{args.fold}, {args.iterations} iterations at most; held-out AUROC of raw scores", flush=True)
    print(f"{'fitter':13s} {'code path':50s} {'weights':12s} {'iter':>4s} {'objective':>10s} {'dialogues':>9s} "
          f"{'turns':>6s} {'s':>5s}")
    for fitter in args.fitters.split(","):
        for path, env in code_paths().items():
            done = subprocess.run([sys.executable, __file__, "--fold", args.fold, "--iterations", str(args.iterations),
                                   "--cache", str(args.cache), "--child", fitter],
                                  env={**os.environ, **env}, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{fitter:13s} {path:50s} {row['weights']:12s} {row['iterations']:4d} {row['objective']:10.7f} "
                  f"{row['dialogues']:9.4f} "
                  f"{row['turns']:6.4f} {row['seconds']:5d}", flush=True)


if __name__ == "__main__":
    main()
