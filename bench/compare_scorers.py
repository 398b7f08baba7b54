"""Two versions of the scorer in one process, called alternately on the same SGD batches.

  git worktree add /tmp/base <commit>          # the version to compare against
  cp service/echogate/v1/*.py /tmp/base/service/echogate/v1/   # its generated code, if not built
  python bench/compare_scorers.py /tmp/base [--seconds 8]

On a shared VM a slow spell lasts seconds and moves two runs of the same code by 10-20%, more
than most changes; alternating call by call in one process exposes both versions to the same
spells, and medians ignore the spells' tails. Prints per batch size (256, 32, 1) each
version's transcripts/s from its median call and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_scorer(root: Path, explain_above: float):
    """A Scorer (and the types module to build its transcripts) from the checkout at `root`."""
    for name in [m for m in sys.modules if m == "echogate" or m.startswith("echogate.")]:
        del sys.modules[name]  # the other version's modules stay alive through its objects
    sys.path.insert(0, str(root / "service"))
    try:
        import echogate.model
        import echogate.scoring
        import echogate.settings
        import echogate.types

        assert Path(echogate.__file__).is_relative_to(root), echogate.__file__
        model = echogate.model.BotOriginModel(echogate.settings.default_model_path(), intra_op_threads=1)
        return echogate.scoring.Scorer(model, explain_above=explain_above), echogate.types
    finally:
        sys.path.remove(str(root / "service"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("other", type=Path, help="checkout of the version to compare against")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--seconds", type=float, default=8.0, help="per batch size")
    parser.add_argument("--explain-above", type=float, default=0.5,
                        help="score from which phrases are quoted (0: every transcript, as on all-machine traffic)")
    args = parser.parse_args()
    versions = {"other": load_scorer(args.other.resolve(), args.explain_above),
                "this": load_scorer(ROOT, args.explain_above)}
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)  # as `echogate serve` tunes it
    with (args.data / "sgd.jsonl").open() as fh:
        records = [json.loads(line) for _, line in zip(range(4096), fh)]
    transcripts = {name: [t.Transcript(str(i), "bench", tuple(t.Turn(t.Role(x["role"]), x["text"]) for x in r["turns"]))
                          for i, r in enumerate(records)] for name, (_, t) in versions.items()}
    for batch in (256, 32, 1):
        calls: dict[str, list[float]] = {name: [] for name in versions}
        end, i = time.perf_counter() + args.seconds, 0
        while time.perf_counter() < end:
            start = (i * batch) % (len(records) - batch + 1)
            for name, (scorer, _) in versions.items():
                t0 = time.perf_counter()
                scorer.score(transcripts[name][start : start + batch])
                calls[name].append(time.perf_counter() - t0)
            i += 1
        median = {name: float(np.median(c)) for name, c in calls.items()}
        print(f"batch {batch:4d}: other {batch / median['other']:6.0f}/s, this {batch / median['this']:6.0f}/s; "
              f"this takes {median['this'] / median['other']:.3f} of the other's time ({i} calls each)")


if __name__ == "__main__":
    main()
