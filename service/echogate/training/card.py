"""Render the model card from a training report, so the card always matches the model."""
from __future__ import annotations

import math

DATASETS = """\
| file | label | license | source repository |
|---|---|---|---|
| `sgd.jsonl` | human | CC BY-SA 4.0 | google-research-datasets/dstc8-schema-guided-dialogue |
| `taskmaster4.jsonl` | human | CC BY 4.0 | google-research-datasets/Taskmaster |
| `banking77.jsonl` | human | CC BY 4.0 | PolyAI BANKING77 (via arslanmit/chatbotAnalyticsLab) |
| `cucom_ecommerce.jsonl` | machine | Apache-2.0 | vakyansh/cucom |
| `synthetic_persona_chat.jsonl` | machine | CC BY 4.0 | google-research-datasets/Synthetic-Persona-Chat |
| `l2r.jsonl` | both | CC BY 3.0 | L2R data, Hao et al. 2024 (via scott-matkosky/AI_Text_Detector) |
| `star_agent_turns.jsonl`, `star_dialogues.jsonl` | both | MIT | RasaHQ/STAR |
"""


def _f(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def render(report: dict) -> str:
    cfg = report["config"]
    rows = "\n".join(
        f"| {r['fold']} | {r['slice']} | {r['n']} | {r['machine']} | {_f(r['auroc'])} | {_f(r['tpr_at_1pct_fpr'])} "
        f"| {_f(r['ece'])} | {_f(r['mean_prob_human'])} | {_f(r['mean_prob_machine'])} |"
        for r in report["validation"])
    train_on = ", ".join(cfg["train_datasets"]) if cfg.get("train_datasets") else "every file below"
    return f"""# Model card: {cfg['version']}

`bot_origin.onnx` estimates how likely each turn, and each transcript, of a support conversation
was written by a machine (an LLM or a scripted bot) rather than a person.

## What it is
- A linear model over hashed byte n-grams (orders {cfg['orders']}) and writing-style n-grams
  (orders {cfg['shape_orders'] or 'none'}), {cfg['table_size']:,} hashed weights, computed **inside the
  ONNX graph** from raw UTF-8 bytes (see `service/echogate/training/graph.py`). Text is
  normalised first (NFKC, zero-width characters removed, whitespace collapsed:
  `echogate.text.normalize`, version recorded in the model metadata).
- Transcript score: the role-weighted pool of its turns' n-grams (weights {cfg['role_weights']}).
- Probabilities are Platt-calibrated on **out-of-fold** scores (each from a model that never saw
  that dataset), separately for turns and transcripts.
- Trained on: {train_on}. Logistic regression, C={cfg['c']}, classes balanced so that every
  (dataset, label, kind) group weighs the same. Seed {cfg['seed']}.

## Data and licenses
{DATASETS}
Attribution as the licenses require; the data is read from `../shared/datasets`, never copied here.

## Validation: whole datasets held out
Each fold trains on every other dataset and scores the held-out ones. `turns` are single turns,
`<20w` the short ones. AUROC is undefined where a fold holds one label (banking77: all human;
read its mean probability as a false-positive tendency).

| fold | slice | n | machine | AUROC | TPR@1%FPR | ECE | mean p (human) | mean p (machine) |
|---|---|---|---|---|---|---|---|---|
{rows}

## Known weaknesses (read before trusting a score)
- **It does not generalise across datasets yet.** Held-out AUROCs near 0.5 mean the model
  learnt what distinguishes the training *datasets* (topic, formatting, the collection's
  conventions), not machine authorship. In this data the label follows the dataset for most
  files; only `l2r` and STAR have both labels on matched content. Use its scores to rank within
  one source, never as an absolute verdict, and keep the policy thresholds conservative.
- Short texts (under 20 words) carry little evidence; their scores stay near the prior.
- Non-native English, paraphrased LLM text, unseen generators and decoding with repetition
  penalties are untested here and expected to be weak.
- Scripted bots that repeat verbatim are better caught by corpus-level repetition than by style.

## Retrain
```sh
.venv/bin/echogate train --data ../shared/datasets --out /tmp/model   # writes bot_origin.onnx, training_report.json, MODEL_CARD.md
cp /tmp/model/* service/echogate/models/
```
Optional `--config overrides.json` sets any `TrainConfig` field. Training took
{report['train_seconds']:.0f} s on 2 cores for {report['documents']:,} documents.
"""
