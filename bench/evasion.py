"""How far the cheap disguises of machine text, and numbers added to any text, move the shipped
model's scores.

  python bench/evasion.py [--data ../shared/datasets] [--n 1000] [--json out.json] [--model FILE.onnx]

A writer who wants bot text to pass the gate as human can disguise it without changing what it
says: letters of other scripts that look Latin (RAID's homoglyph attack), case swapped at random,
zero-width characters, other spaces, full-width letters, typos, everything in lower case. Each
disguise is applied to a seeded sample of `--n` machine and `--n` human records of three shared
files (CuCom dialogues, l2r rewrites and originals, STAR template and typed turns; SGD dialogues
stand in for CuCom's missing human side), and each (file, disguise) is scored as one stream, in
batches of 256 through echogate.scoring.Scorer with a fresh corpus memory, as `echogate score`
scores a file. The last rows add an order or tracking number to every other turn instead:
numbers say nothing of who wrote a text, and human support logs are full of them. Printed: the
machine texts' mean probability and share at or over 0.5 (the default policy's tag threshold),
and the same two for the human texts.

The model trained on these files, so the undisguised rows read high: what this measures is how
far each disguise moves a score, not the model's accuracy (MODEL_CARD.md has that, held out).
"""
from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from echogate.model import BotOriginModel
from echogate.scoring import Scorer
from echogate.settings import default_model_path
from echogate.training.data import read_records
from echogate.types import Role, Transcript, Turn

ROOT = Path(__file__).resolve().parents[1]
# file with machine texts -> file with the human texts scored beside them
FILES = {"cucom_ecommerce": "sgd", "l2r": "l2r", "star_agent_turns": "star_agent_turns"}
# Cyrillic letters that look like Latin ones (a handful of confusables.txt), as a homoglyph attack uses them
CYRILLIC = dict(zip("aeopcxyiAEOPCTHKMB", "\u0430\u0435\u043e\u0440\u0441\u0445\u0443\u0456\u0410\u0415\u041e"
                                          "\u0420\u0421\u0422\u041d\u041a\u041c\u0412"))


def per_letter(rate: float, change: Callable[[str], str | None]) -> Callable[[str, random.Random], str]:
    """A disguise that changes each letter `change` has a substitute for, with probability `rate`."""
    def apply(text: str, rng: random.Random) -> str:
        return "".join((change(c) or c) if c.isalpha() and rng.random() < rate else c for c in text)
    return apply


def every_other_turn(suffix: str) -> Callable[[str, random.Random], str]:
    """`suffix` added to about half of the turns."""
    return lambda text, rng: text + suffix if rng.random() < 0.5 else text


def typos(rate: float) -> Callable[[str, random.Random], str]:
    """Two neighbouring inner letters swapped in a share of the words longer than three letters."""
    def apply(text: str, rng: random.Random) -> str:
        words = text.split(" ")
        for i, w in enumerate(words):
            if len(w) > 3 and rng.random() < rate:
                j = rng.randrange(1, len(w) - 2)
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        return " ".join(words)
    return apply


DISGUISES: dict[str, Callable[[str, random.Random], str]] = {
    "none": lambda text, rng: text,
    "homoglyphs 10%": per_letter(0.1, CYRILLIC.get),
    "homoglyphs 50%": per_letter(0.5, CYRILLIC.get),
    "case swapped 5%": per_letter(0.05, str.swapcase),
    "case swapped 10%": per_letter(0.1, str.swapcase),
    "case swapped 30%": per_letter(0.3, str.swapcase),
    "zero-width spaces": lambda text, rng: "\u200b".join(text),
    "no-break spaces": lambda text, rng: text.replace(" ", "\u00a0"),
    "full-width letters": lambda text, rng: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text),
    "typos 10%": typos(0.1),
    "upper case": lambda text, rng: text.upper(),
    "lower case": lambda text, rng: text.lower(),
    "order number added": every_other_turn(" My order number is 483-2918475-1928374."),
    "tracking id added": every_other_turn(" Tracking: 1Z999AA10123456784"),
}


def records(path: Path, label: str, n: int) -> list[dict]:
    """A seeded sample of n records with this label, in file order."""
    matching = [r for r in read_records(path) if r["label"] == label]
    keep = sorted(random.Random(0).sample(range(len(matching)), min(n, len(matching))))
    return [matching[i] for i in keep]


def as_transcript(i: int, record: dict, disguise: Callable[[str, random.Random], str]) -> Transcript:
    rng = random.Random(i)
    turns = record.get("turns") or [{"role": "agent", "text": record["text"]}]
    return Transcript(f"r{i}", "bench", tuple(Turn(Role.CUSTOMER if t["role"] in ("customer", "user") else Role.AGENT,
                                                   disguise(t["text"], rng)) for t in turns if t["text"].strip()))


def scores(model: BotOriginModel, recs: list[dict], disguise: Callable[[str, random.Random], str]) -> np.ndarray:
    scorer = Scorer(model, explain_above=2.0)  # a fresh corpus memory: one stream per file and disguise
    transcripts = [as_transcript(i, r, disguise) for i, r in enumerate(recs)]
    out = []
    for start in range(0, len(transcripts), 256):
        out += [s.scores.bot_origin for s in scorer.score(transcripts[start:start + 256])]
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--n", type=int, default=1000, help="machine and human records per file")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--model", type=Path, default=default_model_path(), help="ONNX file (default: the shipped one)")
    args = parser.parse_args()
    model = BotOriginModel(args.model)
    rows = []
    print(f"model {model.version}; per file: machine mean p, share >= 0.5; human mean p, share >= 0.5")
    for machine_file, human_file in FILES.items():
        machine = records(args.data / f"{machine_file}.jsonl", "machine", args.n)
        human = records(args.data / f"{human_file}.jsonl", "human", args.n)
        for name, disguise in DISGUISES.items():
            m, h = scores(model, machine, disguise), scores(model, human, disguise)
            rows.append({"file": machine_file, "disguise": name, "machine_mean": round(float(m.mean()), 3),
                         "machine_flagged": round(float((m >= 0.5).mean()), 3),
                         "human_mean": round(float(h.mean()), 3),
                         "human_flagged": round(float((h >= 0.5).mean()), 3)})
            print(f"{machine_file:17s} {name:18s} {m.mean():.3f}  {(m >= 0.5).mean():.3f}  {h.mean():.3f}  "
                  f"{(h >= 0.5).mean():.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": model.version, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
