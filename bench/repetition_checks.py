"""Checks of the repetition signals on the shared data (no labels of repetition exist there).

  python bench/repetition_checks.py [--data ../shared/datasets]

1. Within a conversation: STAR dialogues mark each agent turn as a fixed template (machine)
   or typed by the wizard (human). Template agents re-send the same sentences within a
   dialogue; people vary theirs. Reports the AUROC of the per-turn repetitiveness score
   (echogate.repetition) for template versus typed agent turns, and the mean per-transcript
   score of template-dominated versus human-dominated dialogues.
2. Across the corpus: the same STAR agent turns streamed in file order through the corpus
   memory, as `echogate score` does; reports how many template and typed turns had been seen
   in an earlier dialogue, and the AUROC of seen_before alone.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from echogate import repetition
from echogate.corpus import CorpusMemory, turn_keys
from echogate.evaluation import auroc
from echogate.text import normalize, pack_turns

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    args = parser.parse_args()
    dialogues = [json.loads(line) for line in (args.data / "star_dialogues.jsonl").open()]
    texts, roles, doc, origin, labels = [], [], [], [], []
    for i, d in enumerate(dialogues):
        labels.append(d["label"] == "machine")
        for t in d["turns"]:
            texts.append(normalize(t["text"]))
            roles.append("agent" if t["role"] == "agent" else "customer")
            doc.append(i)
            origin.append(t.get("origin"))
    doc = np.array(doc)
    agent = np.array([r == "agent" and o in ("machine", "human") for r, o in zip(roles, origin)])
    machine = np.array([o == "machine" for o in origin])
    rep = repetition.turn_scores(texts, roles, doc)
    per_doc = repetition.transcript_scores(rep, roles, doc, len(dialogues))
    y = np.array(labels)
    print(f"STAR dialogues: {len(dialogues)}, agent turns with an origin label: {agent.sum()}")
    print(f"within-dialogue repetition, template vs typed agent turns: AUROC {auroc(machine[agent], rep[agent]):.3f}; "
          f"mean {rep[agent & machine].mean():.3f} vs {rep[agent & ~machine].mean():.3f}")
    print(f"per-transcript repetitiveness, template-dominated vs human dialogues: AUROC {auroc(y, per_doc):.3f}; "
          f"mean {per_doc[y].mean():.3f} vs {per_doc[~y].mean():.3f}")
    stream, byte_turn = pack_turns(texts, 4096)
    counts = np.bincount(doc, minlength=len(dialogues)).tolist()
    seen = CorpusMemory().observe([str(i) for i in range(len(dialogues))], turn_keys(stream, byte_turn, roles),
                                  counts)
    print(f"seen in an earlier dialogue: template turns {np.mean(seen[agent & machine] > 0):.1%}, typed turns "
          f"{np.mean(seen[agent & ~machine] > 0):.1%}; AUROC of seen_before alone "
          f"{auroc(machine[agent], seen[agent]):.3f}")


if __name__ == "__main__":
    main()
