"""Render the model card from a training report, so the card always matches the model."""
from __future__ import annotations

import math

from echogate.repetition import TURN_FEATURES
from echogate.training.data import CHUNK_SUFFIX
from echogate.training.folds import OTHER_FILE_FOLD

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


def _orders(orders) -> str:
    return ", ".join(map(str, orders)) if orders else "none"


def render(report: dict) -> str:
    cfg = report["config"]
    rows = "\n".join(
        f"| {r['fold']} | {r['slice']} | {r['n']} | {r['machine']} | {_f(r['auroc'])} | {_f(r['tpr_at_1pct_fpr'])} "
        f"| {_f(r['ece'])} | {_f(r['mean_prob_human'])} | {_f(r['mean_prob_machine'])} |"
        for r in report["validation"])
    train_on = ", ".join(cfg["train_datasets"]) if cfg.get("train_datasets") else "every file below"
    weights = cfg.get("dataset_weights") or {}
    weighting = ("; then " + ", ".join(f"`{d}` x{w:g}" for d, w in sorted(weights.items())) +
                 " (the files with both labels on matched content teach origin rather than collection)"
                 if weights else "")
    pairing = (f" Each l2r rewrite also trains against its own human original as a difference row (the pair's"
               f" machine-minus-human n-grams labelled machine, and the negation labelled human), the pairs weighing"
               f" {cfg['pair_weight']:g} x the paired texts' weight: content cancels in a difference, so these rows"
               f" teach how a machine rewrites rather than what a collection is about."
               if cfg.get("pair_weight") else "")
    byte_files = cfg["byte_ngram_datasets"]
    byte_rule = (f" Byte n-grams train in full only from {', '.join(f'`{d}`' for d in byte_files)}, the files with"
                 f" both labels on matched content; in every other file the label follows the collection, so its byte"
                 f" n-grams (which learn topic along with origin) train at {cfg['other_byte_ngram_scale']:g} x, beside"
                 f" its writing-style and skeleton n-grams. Scoring reads every stream of every text in full."
                 if byte_files else "")
    chunk_files = cfg["chunk_datasets"]
    chunking = (f" The single texts of {', '.join(f'`{d}`' for d in chunk_files)} also train cut into chunks:"
                f" runs of consecutive sentences of at least {cfg['chunk_min_words']} words, each keeping its"
                f" paragraph's label, a dataset of their own ({', '.join(f'`{d}{CHUNK_SUFFIX}`' for d in chunk_files)}), weighed and trained as"
                f" their file is; they give matched content at the length of a message or a paraphrased sentence."
                if chunk_files else "")
    other_files = sorted({r["fold"] for r in report["validation"] if r["fold"].startswith(OTHER_FILE_FOLD)})
    other_folds = (f"\n- {', '.join(f'`{f}`' for f in other_files)}: each a file beside the shared datasets, held out"
                   f" whole, as a collection the model never saw; calibrated on, not in the macro AUROC."
                   if other_files else "")
    share = cfg.get("lowercase_share", 0)
    lowering = (f" Every document also trains lower-cased, the copy taking {share:g} of the document's weight and"
                f" the original the rest, so text written in lower case throughout (some chat logs, older dialogue"
                f" corpora) is read with weights learnt for it." if share else "")
    cal = report["calibration"]
    power = cal["transcript"]["count_power"]
    turn_power = cal["transcript"]["turn_count_power"]
    pooled_reading = (": the mean of its turns' single-text scores, weighted by role and sqrt(n-gram count)"
                      if (turn_power, power) == (0.5, 1.0) else "")
    fixed = cfg["transcript_seen_weight"]
    dialogue_seen = (f"{fixed:g}, fixed by TrainConfig.transcript_seen_weight" if fixed is not None
                     else f"{cal['transcript']['seen_weight']:.2f}, learnt")
    seen = (f"single texts {cal['turn']['seen_weight']:.2f} per unit of log1p(count), learnt; dialogues "
            f"{dialogue_seen}: see Known weaknesses")
    rep = report["repetition"]
    rep_rows = "\n".join(
        f"| {r['held_out']} | {r['kind']} | {r['n']} | {r['machine']} | {_f(r['auroc'])} | {_f(r['tpr_at_1pct_fpr'])} "
        f"| {_f(r['ece'])} |" for r in rep["validation"])
    head = ", ".join(f"{name} {w:.2f}" for name, w in zip(TURN_FEATURES, rep["head"]["weights"]))
    libraries = ", ".join(f"{name} {v}" for name, v in report["libraries"].items())
    cpu = report.get("cpu")  # reports before bot-origin-0.18.0 do not record it
    on_cpu = f" of {cpu['model']}" if cpu else ""
    if cpu and cpu["avx2_fma"] is not None:
        on_cpu += f" ({'with' if cpu['avx2_fma'] else 'without'} AVX2 and FMA)"
    return f"""# Model card: {cfg['version']}

`bot_origin.onnx` estimates how likely each turn, and each transcript, of a support conversation
was written by a machine (an LLM or a scripted bot) rather than a person.

## What it is
- A linear model over hashed byte n-grams (orders {_orders(cfg['orders'])}), writing-style n-grams
  (orders {_orders(cfg['shape_orders'])}) and function-word skeleton n-grams (orders
  {_orders(cfg.get('function_orders'))}: the text with scikit-learn's English stop words kept and
  every other letter replaced by its case, so n-grams see how common words are strung together
  with the topic masked) and word n-grams (orders {_orders(cfg['word_orders'])}: runs of ASCII
  letters, case-insensitive), {cfg['table_size']:,} hashed weights (int16 fixed point), computed **inside the
  ONNX graph** from raw UTF-8 bytes (see `service/echogate/training/graph.py`). Text is
  normalised first (NFKC, zero-width characters removed, Cyrillic, Greek and Armenian letters
  that look Latin read as Latin inside words, whitespace collapsed, text in capitals and words
  with capitals inside them lower-cased: `echogate.text.normalize`, version recorded in the
  model metadata), so the cheap disguises of machine text move a score little or not at all
  (`bench/evasion.py`). The model then reads every run of digits as one "0"
  (`echogate.text.model_texts`): numbers say nothing of who wrote a text, and their digits had
  taught it CuCom's long order numbers. It also reads tokenised text joined up ("i 'm fine ,
  thanks ." as "i'm fine, thanks."), as older dialogue corpora and the bots trained on them
  write both sides: with both sides tokenised, unseen-domain STAR turns had lost up to 0.16
  AUROC.
- Transcript score: the role-weighted pool of its turns' n-grams (weights {cfg['role_weights']}).
- Raw score: the sum of a text's n-gram weights over (its n-gram count) ** power. Single texts
  read it at {cal['turn']['count_power']:g}, as the model trains. A dialogue's count is pooled
  from its turns' counts, each raised to {turn_power:g} and role-weighted, and read at {power:g}
  (TrainConfig.transcript_turn_count_power, transcript_count_power){pooled_reading}, so that a
  dialogue's score does not grow with its number of turns whichever way they lean. The model's
  intercept is left to the calibration's offset, fitted on held-out scores (see graph.Calibration).
- Calibration maps (logit = scale x raw + offset + seen_weight x corpus signal): single texts
  {cal['turn']['scale']:.3f} / {cal['turn']['offset']:.3f} / {cal['turn']['seen_weight']:.3f}, dialogues
  {cal['transcript']['scale']:.3f} / {cal['transcript']['offset']:.3f} / {cal['transcript']['seen_weight']:.3f}.
- **Corpus signal.** The graph's `turn_seen` input is log1p(how many earlier transcripts had
  the same turn, ASCII letters lower-cased and slot words masked: names, places, dates and numbers,
  which template bots fill in), kept by `echogate.corpus.CorpusMemory` over the stream of scored
  transcripts. Scripted bots repeat themselves; people rarely do. It enters
  the calibrated logit scaled by min(1, the turn's bytes / {cfg['seen_full_bytes']}) (people repeat short
  turns too), with a non-negative weight ({seen}).
- Probabilities are calibrated on **out-of-fold** scores (each from a model that never saw
  that data), every fold weighing the same: single texts on those with exact labels (STAR
  turns, l2r paragraphs, BANKING77 messages), dialogues on the held-out dialogue folds. The
  offset is then refitted with both labels of each fold weighing the same, so the
  collections' machine shares do not become the prior. A one-turn record takes the
  single-text calibration. The corpus signal for calibration is
  simulated as `echogate score` sees it: each dataset shuffled into streams of
  {cfg.get('stream_size', 0):,} records, each stream starting with an empty memory.
- Trained on: {train_on}. Logistic regression, C={cfg['c']}, L-BFGS stopped at {cfg['max_iter']} iterations (an early
  stop that regularises; see TrainConfig.max_iter) in `echogate.training.logistic`, whose line
  search asks scipy's L-BFGS-B's Wolfe conditions of each step and whose arithmetic is the same
  on every CPU with AVX2 and FMA; classes balanced so that every
  (dataset, label, kind) group weighs the same{weighting}.{pairing}{chunking}{byte_rule}{lowering} Seed {cfg['seed']}.

## Repetitiveness output
- `turn_repetitiveness` = sigmoid(weights . repetition features + bias), features from
  `echogate.repetition` (shares of a turn's word trigrams and content words that its own side,
  or the other side, said earlier in the conversation). Weights: {head}; bias {rep['head']['bias']:.2f}.
- `transcript_repetitiveness`: the share of the agent side (every turn when there is none)
  that is repetition, within the conversation or of the corpus: the mean over those turns of
  1 - (1 - turn_repetitiveness) x (1 - c / (c + {rep['head']['corpus_half_count']:g})), c = seen_before
  (a turn seen {rep['head']['corpus_half_count']:g} times before counts as half repetition).
- No shared file labels repetition, so the head is fitted on controlled edits of real dialogues
  (`echogate.training.repetition`): at a random agent turn either the original stays (negative)
  or a redundant turn replaces it: an earlier agent turn re-sent (`verbatim`), re-sent with words
  dropped (`partial`), one earlier sentence appended (`sentence`), or the customer's last turn
  restated (`echo`). Classes balanced: the probability reads "redundant" at even odds. Below,
  each collection's edits scored by a head fitted on the others (`machine` = redundant turns);
  `all` is every kind against the originals. These are edits we designed, not human
  judgements of redundancy: read them as a check that the head ranks repeats, not as its
  accuracy on real bots.

| held-out collection | kind | n | redundant | AUROC | TPR@1%FPR | ECE |
|---|---|---|---|---|---|---|
{rep_rows}

## Data and licenses
{DATASETS}
Attribution as the licenses require; the data is read from `../shared/datasets`, never copied here.

## Validation: whole datasets, generators and domains held out
Each fold trains on everything except what it holds out, and the calibration used for its row
is fitted on the *other* folds, so every number here is for data the model never saw:
- `cucom_vs_taskmaster4`, `spc_vs_sgd`: a machine and a human dialogue dataset held out
  together. Harsher than real use: the remaining machine dialogues then come from one
  collection only, so these folds measure how far origin survives a change of collection.
- `l2r_unseen_domains+G`: a third of the l2r text domains *and* generator G held out at once
  (G's rewrites of those domains against their human originals); slice `chunks`: the same
  paragraphs cut into runs of sentences of at least {cfg['chunk_min_words']} words, a proxy for short paraphrases.
- `star_unseen_domains_i`: half of STAR's task domains held out; single agent turns whose
  template appears in no training domain, against the typed turns of those domains, and
  those domains' whole dialogues.
- `banking77`: short human messages only (no AUROC; its mean probability is the false-positive
  tendency on short human text).
- `in_collection_support`: not a change of collection but new conversations of known ones: half
  of the CuCom, SGD and Taskmaster-4 conversations (by a hash of their ids) held out with every
  turn cut from them, LLM support dialogues against human ones, scored with the shipped
  calibration. What a platform whose traffic resembles the training data can expect. Reported
  only: never calibrated on, not in the macro AUROC.{other_folds}

`turns` are single texts (a turn, a paragraph, a message: what a one-turn record is), `<20w` the
short ones, `transcripts` dialogues of several turns. Macro AUROC over the headline rows (single
texts for l2r and STAR, dialogues elsewhere): **{_f(report.get('macro_auroc', float('nan')))}**.

| fold | slice | n | machine | AUROC | TPR@1%FPR | ECE | mean p (human) | mean p (machine) |
|---|---|---|---|---|---|---|---|---|
{rows}

## Known weaknesses (read before trusting a score)
- **Origin versus collection.** In most files the label follows the dataset, so part of what
  any model learns here is the collection's topic and conventions. The held-out dialogue folds
  above show how much survives a change of collection; read scores on a new source as a
  ranking first, and set thresholds from a labelled sample of it: `echogate eval` gives the
  bot-origin threshold that flags at most 0.1%, 1%, 5% or 10% of the sample's humans
  (docs/policy.md).
- **Short texts** (under 20 words) carry little evidence; their scores stay near the prior
  unless the corpus signal fires.
- **The corpus signal cuts both ways on dialogues.** Human crowd-written collections (SGD,
  Taskmaster) reuse formulaic agent lines, while LLM-written conversations are each new. With its
  weight in the dialogue calibration fitted (0.91 in bot-origin-0.12.3), the held-out
  cucom_vs_taskmaster4 dialogues ranked at 0.502 AUROC (TPR at 1% FPR 0.000) against 0.708 (0.108)
  on the model's score alone, while template dialogues of unseen STAR domains gained at most
  0.006 AUROC and 0.056 TPR at 1% FPR (0.774 against 0.718 on one fold): their wording already
  gives them away. A dialogue's own score therefore takes it at weight
  {dialogue_seen}.
  It still raises the scores of a dialogue's repeated turns (the single-text calibration, where it
  is what catches template turns of unseen domains) and the transcript's repetitiveness, which the
  policy reads.
- **A bot whose every reply is a person's wording goes unseen by the transcript score.** A
  pre-LLM retrieval bot answers with what human agents once wrote. `bench/retrieval_bot.py` builds
  one from SGD's and Taskmaster-4's human dialogues. Mixed with the human originals, its
  dialogues rank at 0.48 / 0.50 AUROC on the transcript score (bot-origin-0.20.0). Its agent turns
  rank at 0.62 / 0.64, and the share of its agent side seen before at 0.84 / 0.77: the corpus
  signal is the only evidence against it. That signal stays out of a dialogue's score for the
  reason above (docs/benchmarks.md).
- **A dialogue's score reads its evidence as a mean, not a sum** (powers {turn_power:g} and
  {power:g} above), so neither a long dialogue nor one of many turns is read with more confidence
  than its wording carries. Held-out dialogues rank higher that way (a plain sum over sqrt(count),
  bot-origin-0.13.0: cucom_vs_taskmaster4 0.708, spc_vs_sgd 0.502, STAR unseen domains 0.856 /
  0.967), but short dialogues, whose means are noisier, move towards the extremes: on
  cucom_vs_taskmaster4 the TPR at 1% FPR fell from 0.108, and its most machine-like human
  dialogues are shorter than most. One dialogue calibration spans collections whose turn means
  sit at different levels, so its ECE on the collection folds is higher than a single text's
  (docs/benchmarks.md).
- **The corpus signal needs a stream.** A template bot's turn is recognised by repetition only
  after it has been seen; the first occurrences score on style alone, and the longer the stream
  the more of it is caught: the STAR rows above were scored in streams of
  {cfg.get('stream_size', 0):,} records; in streams of 1,000 and 10,000, bot-origin-0.16.0's fold
  models gave unseen-domain template turns AUROC 0.940 and 0.977 against 0.962
  (docs/benchmarks.md). Human agents who paste
  the same macro many times look scripted too (that is often the right call for training data,
  but it is not "machine-written"), and since slot words are masked, so do agents who type
  the same sentence with another customer's name or order number in it.
- **Byte n-grams are learnt at a reduced scale from collection-labelled files.** What marks LLM
  support text in CuCom's vocabulary ("I sincerely apologize") is learnt at
  {cfg['other_byte_ngram_scale']:g} x, like CuCom's topic; on held-out CuCom conversations this costs a
  little against training them in full (see TrainConfig.other_byte_ngram_scale).
- **Single turns of known collections pay for unseen generators.** Raising l2r's weight from
  x10 to x50 (its chunks from x20 to x100; bot-origin-0.19.0 to 0.20.0) raised its unseen-generator
  paragraphs by about 0.02 AUROC but lowered in_collection_support turns from 0.849 to 0.789, its
  dialogues' TPR at 1% FPR from 0.995 to 0.974, and one STAR unseen-domain fold's template turns
  from 0.963 to 0.950 (docs/benchmarks.md).
- Non-native English, paraphrased LLM text, unseen generators and decoding with repetition
  penalties are not represented in the training data beyond l2r's three generators. **Short
  paraphrases** are harder than paragraphs: the `chunks` rows above (a sentence or two of
  held-out l2r text) rank well below their paragraphs' `turns` rows.
- **Disguises beyond normalisation.** Look-alike letters of scripts other than Cyrillic, Greek
  and Armenian, case swapped only at the start of words, and rewording (a paraphrasing tool, a
  person editing the text) all reach the model; normalisation undoes only what changes how a
  text is spelt, not what it says. Text in a language other than English scores on what little
  of the n-grams it shares with the training data.
- **Text in lower case throughout** (some chat logs, older dialogue corpora) has none of the
  evidence that capitals carry. The model also trains on every document lower-cased, so it reads
  such text with weights learnt for it: with both sides lower-cased, held-out l2r and STAR folds
  rank within 0.02 AUROC of the text as written (raw scores, bench/tokenised_folds.py), where a
  model trained on cased text alone lost up to 0.08, and lower-cased human text is flagged far
  less often (`bench/evasion.py`). The copies cost single turns of the training collections a
  little (in_collection_support turns 0.869, against 0.885 without them). Tokenised text is joined
  up before the model reads it.

## Retrain
```sh
.venv/bin/echogate train --data ../shared/datasets --out /tmp/model   # writes bot_origin.onnx, training_report.json, MODEL_CARD.md
cp /tmp/model/* service/echogate/models/
```
Optional `--config overrides.json` sets any `TrainConfig` field
(`service/echogate/training/config.py`, where each is explained), each replacing its default
whole; a field it does not have, or a value of the wrong type or range, is refused by name
before any data is read. Labelled files of one's own added to the data folder train with the
shared ones, their turns read in any shape `echogate score` reads; each is held out whole in a
fold of its own (`unseen_file:NAME`), validated and calibrated on as a collection the model never
saw, outside the macro AUROC. Training took
{report['train_seconds']:.0f} s on 2 cores{on_cpu} for {report['documents']:,} documents, within a 24 GB machine, with
{libraries}. With 285,676 documents the machine's used memory peaked at 15.2 GB (bot-origin-0.19.0's
configuration retrained on an Intel Xeon: two fold processes of about 7 GB resident, part of it
the training rows they share from disk, beside the 7 GB main process; 21.4 GB before the trainer
stacked its training rows once, `TrainingRows`). The final fit trains on that stacked matrix
itself, without a copy: 8.0 GB in use while it runs (11.6 GB when it copied). `{{"jobs": 1}}`
fits one held-out fold at a time, in less memory and more time. The fit stops
before it converges, so the smallest numerical difference takes it elsewhere. Up to
bot-origin-0.16.0 the CPU was such a difference: scikit-learn's L-BFGS took its sums from OpenBLAS
and NumPy code picked for the CPU, and one held-out fold (cucom_vs_taskmaster4 dialogues) read
0.828, 0.842, 0.852 and 0.869 AUROC from the same data, code and library versions on four CPU code
paths. Since 0.17.0 the trainer's own L-BFGS (`echogate.training.logistic`) adds in one order on
every CPU: `bench/fit_determinism.py` fits that fold to the same weights, bit for bit, under
OpenBLAS's Haswell and Prescott kernels, one thread, NumPy's baseline loops and a C library
without AVX-512, where scikit-learn's fit of it moved under both OpenBLAS settings (its dialogues
0.735-0.760 AUROC after 100 iterations). Since 0.18.0 its line search also lengthens a step that
still descends steeply, as scipy's does: after 100 iterations that fold's objective stands at
0.238 (0.17.0's search, which only shortened steps: 0.272; scikit-learn's: 0.235-0.250), with the
same bits under all four paths. Other releases of NumPy, SciPy or
the C library, or a CPU without AVX2 and FMA (the C library's exp and log1p run other code there),
can still move the weights: start from the versions above, and read differences of up to 0.04 on
one dialogue fold between such builds as noise. Only the weights were checked this way. The
calibration's and the repetitiveness head's few parameters are fitted to convergence, so another
CPU should move them by less than the file's float32 precision. For the repetitiveness head that
was measured: fitted on an Intel Xeon (bot-origin-0.18.0) and on an AMD EPYC (0.19.0), its
parameters differ by at most 4e-15 and round to the same float32 values. The whole file was
checked too: bot-origin-0.19.0, built on an AMD EPYC, retrained on an Intel Xeon with AVX-512 to
the same bytes (SHA-256 849e889c...; its calibration and repetitiveness head differ from the AMD
fit by at most 4e-15 and round to the same float32 values, and every held-out AUROC and TPR in
its report is equal), and again to the same bytes on an AMD EPYC with AVX-512.
"""
