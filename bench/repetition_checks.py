"""Checks of the repetition signals on the shared data (no labels of repetition exist there).

  python bench/repetition_checks.py [--data ../shared/datasets]

STAR's wizards either picked a fixed template (machine) or typed a reply (human) for each
agent turn; template agents re-send the same sentences within a dialogue and across
dialogues, people vary theirs. The dialogues go through the server's Scorer in file order
(batches of 256, an empty corpus memory at the start), as `echogate score` sends them.

1. Within a conversation: AUROC of the per-turn repetitiveness (the model's head) and of
   its strongest feature alone (trigram_self) for template versus typed agent turns, and
   the Gopher-family statistics of template-dominated versus human-dominated dialogues.
2. Across the corpus: how many template and typed turns had been seen in an earlier
   dialogue, the AUROC of seen_before alone, and of the transcript repetitiveness (which
   combines both) for template-dominated versus human dialogues.
3. Compression ratio of the agent side: how well it separates the same dialogues, and how
   closely it follows the side's length and distinct-3, on STAR and the other dialogue files.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from echogate.evaluation import auroc
from echogate.model import BotOriginModel
from echogate.repetition import TRANSCRIPT_STATS, analyse_texts
from echogate.scoring import Scorer
from echogate.settings import default_model_path
from echogate.text import normalize, normalize_all
from echogate.types import Role, Transcript, Turn

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = parser.parse_args()
    dialogues = [json.loads(line) for line in (args.data / "star_dialogues.jsonl").open()]
    transcripts, origin = [], []
    for i, d in enumerate(dialogues):
        turns = tuple(Turn(Role.AGENT if t["role"] == "agent" else Role.CUSTOMER, t["text"]) for t in d["turns"])
        transcripts.append(Transcript(str(i), "star", turns))
        origin += [t.get("origin") if t["role"] == "agent" else None for t in d["turns"]]
    scorer = Scorer(BotOriginModel(default_model_path()))
    scored = [s for start in range(0, len(transcripts), 256) for s in scorer.score(transcripts[start : start + 256])]
    turn_rep = np.array([t.repetitiveness for s in scored for t in s.scores.turns])
    seen = np.array([t.seen_before for s in scored for t in s.scores.turns])
    doc_rep = np.array([s.scores.repetitiveness for s in scored])

    features = analyse_texts(normalize_all([t.text for x in transcripts for t in x.turns]),
                             [t.role for x in transcripts for t in x.turns],
                             np.repeat(np.arange(len(transcripts)), [len(x.turns) for x in transcripts]),
                             len(transcripts))

    agent = np.array([o in ("machine", "human") for o in origin])
    machine = np.array([o == "machine" for o in origin])
    y = np.array([d["label"] == "machine" for d in dialogues])
    print(f"STAR dialogues: {len(dialogues)} ({y.sum()} template-dominated), agent turns with an origin: {agent.sum()}")
    print("1. within a dialogue, template vs typed agent turns:")
    print(f"   repetitiveness (head) AUROC {auroc(machine[agent], turn_rep[agent]):.3f}; "
          f"mean {turn_rep[agent & machine].mean():.3f} vs {turn_rep[agent & ~machine].mean():.3f}")
    trigram_self = features.turn[:, 0]
    print(f"   trigram_self alone    AUROC {auroc(machine[agent], trigram_self[agent]):.3f}")
    print("   per dialogue, template-dominated vs human (mean; AUROC of the statistic):")
    for j, name in enumerate(TRANSCRIPT_STATS):
        value = features.transcript[:, j]
        print(f"     {name:30s} {value[y].mean():.3f} vs {value[~y].mean():.3f}; AUROC {auroc(y, value):.3f}")
    print("2. across the corpus, in file order:")
    print(f"   seen in an earlier dialogue: template turns {np.mean(seen[agent & machine] > 0):.1%}, typed turns "
          f"{np.mean(seen[agent & ~machine] > 0):.1%}; AUROC of seen_before alone "
          f"{auroc(machine[agent], seen[agent]):.3f}")
    print(f"   transcript repetitiveness, template-dominated vs human dialogues: AUROC {auroc(y, doc_rep):.3f}; "
          f"mean {doc_rep[y].mean():.3f} vs {doc_rep[~y].mean():.3f}")
    print("3. compression ratio of the agent side (higher: more repetitive):")
    ratio = features.transcript[:, TRANSCRIPT_STATS.index("compression_ratio")]
    distinct = features.transcript[:, TRANSCRIPT_STATS.index("distinct_3")]
    print(f"   STAR template-dominated vs human: AUROC {auroc(y, ratio):.3f} (1 - distinct_3: {auroc(y, -distinct):.3f})")
    for name in ("star_dialogues", "sgd", "synthetic_persona_chat", "cucom_ecommerce"):
        if name == "star_dialogues":  # analysed above
            records, rep = dialogues, features
        else:
            records = [json.loads(line) for _, line in zip(range(4000), (args.data / f"{name}.jsonl").open())]
            rep = analyse_texts(normalize_all([t["text"] for r in records for t in r["turns"]]),
                                [t["role"] for r in records for t in r["turns"]],
                                np.repeat(np.arange(len(records)), [len(r["turns"]) for r in records]), len(records))
        ratio = rep.transcript[:, TRANSCRIPT_STATS.index("compression_ratio")]
        length = np.array([sum(len(normalize(t["text"]).encode()) for t in r["turns"] if t["role"] == "agent")
                           for r in records])
        has = length > 0
        print(f"   {name:24s} Spearman with the side's length {spearmanr(ratio[has], length[has]).statistic:+.2f}, "
              f"with distinct_3 {spearmanr(ratio[has], rep.transcript[has, TRANSCRIPT_STATS.index('distinct_3')]).statistic:+.2f}")


if __name__ == "__main__":
    main()
