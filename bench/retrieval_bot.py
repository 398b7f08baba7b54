"""A stand-in for a hidden group: a pre-LLM support bot trained on human support data.

  python bench/retrieval_bot.py [--data ../shared/datasets] [--model FILE.onnx] [--out DIR] [--json out.json]

Before LLMs, many support bots answered by retrieval: a model trained on logged human
conversations picks, for the customer's last words, the reply a human agent once gave in the most
similar context (PolyAI's ConveRT and Google's Smart Reply worked so). Such a bot writes nothing
itself, so every reply is a person's wording; the issue's reference detector scored the hidden
group of pre-LLM neural support bots at 0.46 AUROC. None of the shared files holds one, so this
builds one from real data and real text: for each agent turn of a held-out dialogue, the reply
whose preceding two turns are most similar (TF-IDF of word unigrams and bigrams, cosine) among the
training dialogues. SGD's bot learns from its `train` split and answers `test` customers;
Taskmaster-4's learns from half of its dialogues (by a hash of the id) and answers the other half.

Each file's held-out human dialogues and the bot's versions of them (the same customer turns, the
agent's replied by the bot) are shuffled (seeded) into one stream and scored by `echogate score`'s
own code (echogate.offline.score_file: in order, in batches of 256, a fresh corpus memory per
file); the AUROCs are read from its output. Printed per file: AUROC of the transcript score, of
each agent turn's score (bot replies against human agents' turns), and of the corpus signal alone
(Scores.corpus_duplicate: the share of the agent side seen in earlier transcripts), with the mean
transcript probability of each side.

The model trained on these files' human dialogues, so its style evidence sees both sides as
human: what this measures is how much the shipped model catches when a bot's every word is a
person's, not its accuracy on a held-out collection (MODEL_CARD.md). `--out DIR` keeps each
stream as JSONL (`label` per record, `origin` per agent turn) for `echogate eval`.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from echogate.evaluation import auroc
from echogate.offline import score_file
from echogate.training.data import read_records

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261206
CONTEXT_TURNS = 2  # turns before an agent turn that make its context


def _sgd_split(record_id: str) -> str | None:
    """SGD keeps its original split in the id (sgd/train/..., sgd/dev/..., sgd/test/...)."""
    split = record_id.split("/")[1]
    return split if split in ("train", "test") else None


def _half(record_id: str) -> str:
    return "train" if zlib.crc32(record_id.encode()) % 2 == 0 else "test"


# file -> which records the bot learns from ("train") and which it answers ("test")
FILES: dict[str, Callable[[str], str | None]] = {"sgd": _sgd_split, "taskmaster4": _half}


def _contexts(turns: list[dict]) -> list[tuple[int, str]]:
    """(index, the preceding CONTEXT_TURNS turns joined) for each agent turn after the first turn."""
    return [(i, " ".join(t["text"] for t in turns[max(0, i - CONTEXT_TURNS):i]))
            for i, turn in enumerate(turns) if turn["role"] == "agent" and i > 0]


def bot_stream(records: list[dict], split: Callable[[str], str | None], rng: random.Random) -> list[dict]:
    """The held-out human dialogues and the retrieval bot's versions of them, shuffled: records of
    the shared schema with `label` and, on agent turns, `origin`."""
    train = [r for r in records if r.get("turns") and split(r["id"]) == "train"]
    test = [r for r in records if r.get("turns") and split(r["id"]) == "test"]
    contexts, replies = [], []
    for r in train:
        for i, context in _contexts(r["turns"]):
            contexts.append(context)
            replies.append(r["turns"][i]["text"])
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    index = vectorizer.fit_transform(contexts)
    asked = [(k, i, context) for k, r in enumerate(test) for i, context in _contexts(r["turns"])]
    queries = vectorizer.transform([context for _, _, context in asked])
    best = np.concatenate([(queries[s:s + 2048] @ index.T).toarray().argmax(1)
                           for s in range(0, queries.shape[0], 2048)])
    # agent turns carry who wrote them (what `echogate eval` grades per turn); a bot's version
    # keeps the human's turns but for the replies it chose (a greeting before any context stays)
    humans = [{"id": r["id"], "label": "human",
               "turns": [{**t, "origin": "human"} if t["role"] == "agent" else t for t in r["turns"]]}
              for r in test]
    bots = [{"id": h["id"] + "/retrieval_bot", "label": "machine", "turns": list(h["turns"])} for h in humans]
    for (k, i, _), reply in zip(asked, best):
        bots[k]["turns"][i] = {"role": "agent", "text": replies[reply], "origin": "machine"}
    stream = humans + bots
    rng.shuffle(stream)
    return stream


def score_stream(jsonl: str, model: Path | None) -> dict:
    """AUROC of transcripts, agent turns and the corpus signal, from `echogate score`'s own output
    (echogate.offline.score_file) for the stream's JSONL text."""
    out = io.StringIO()
    score_file(io.StringIO(jsonl), out, model_path=str(model) if model else None)
    labels, probs, corpus, turn_labels, turn_probs = [], [], [], [], []
    for line in out.getvalue().splitlines():
        record = json.loads(line)
        scored = record["echogate"]
        labels.append(record["label"] == "machine")
        probs.append(scored["bot_origin"])
        corpus.append(scored["corpus_duplicate"])
        for turn, turn_scores in zip(record["turns"], scored["turns"]):
            if "origin" in turn:
                turn_labels.append(turn["origin"] == "machine")
                turn_probs.append(turn_scores["bot_origin"])
    y, p = np.array(labels), np.array(probs)
    return {"transcripts": len(y), "transcript_auroc": auroc(y, p), "agent_turn_auroc": auroc(turn_labels, turn_probs),
            "corpus_signal_auroc": auroc(y, corpus), "mean_p_human": float(p[~y].mean()),
            "mean_p_bot": float(p[y].mean()), "model": scored["model_version"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--model", type=Path, default=None, help="an ONNX file (the shipped model by default)")
    parser.add_argument("--out", type=Path, default=None, help="keep each stream as DIR/<file>_retrieval_bot.jsonl")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print("| file | transcripts | transcript AUROC | agent-turn AUROC | corpus signal alone | mean p human / bot |")
    print("|---|---|---|---|---|---|")
    results = {}
    for name, split in FILES.items():
        stream = bot_stream(list(read_records(args.data / f"{name}.jsonl")), split, random.Random(SEED))
        jsonl = "".join(json.dumps(r) + "\n" for r in stream)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}_retrieval_bot.jsonl").write_text(jsonl)
        r = results[name] = score_stream(jsonl, args.model)
        print(f"| {name} | {r['transcripts']} | {r['transcript_auroc']:.3f} | {r['agent_turn_auroc']:.3f} | "
              f"{r['corpus_signal_auroc']:.3f} | {r['mean_p_human']:.3f} / {r['mean_p_bot']:.3f} |")
    print(f"model {r['model']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
