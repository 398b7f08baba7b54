"""`echogate review`: a reviewer works through the REVIEW queue in the terminal.

Each item is leased to the reviewer (ListReviews), shown with every turn's scores (turns the
model finds machine-like are highlighted), labelled with one key press, given a final
decision and an optional note, and submitted (SubmitReview). Without a terminal (a pipe),
each answer is one line, so the loop can be scripted.
"""
from __future__ import annotations

import sys

import grpc

from echogate.v1 import gate_pb2 as pb
from echogate_client.client import connect
from echogate_client.records import DECISION_NAMES

ROLE_NAMES = {pb.ROLE_CUSTOMER: "customer", pb.ROLE_AGENT: "agent", pb.ROLE_SYSTEM: "system"}
LABELS = {"h": pb.LABEL_HUMAN, "m": pb.LABEL_MACHINE}
DECISIONS = {"a": pb.DECISION_ACCEPT, "t": pb.DECISION_TAG, "b": pb.DECISION_BLOCK}
DEFAULT_DECISION = {pb.LABEL_HUMAN: pb.DECISION_ACCEPT, pb.LABEL_MACHINE: pb.DECISION_TAG}


def _key(prompt: str) -> str:
    """One key press on a terminal; the first character of a line otherwise. '' at end of input."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    if sys.stdin.isatty():
        import termios
        import tty

        fd = sys.stdin.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            key = sys.stdin.read(1)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
        print(key)
        return key.lower()
    line = sys.stdin.readline()
    return line.strip()[:1].lower() if line else ""


def _line(prompt: str) -> str:
    sys.stdout.write(prompt)
    sys.stdout.flush()
    return sys.stdin.readline().strip()


def render(item: pb.ReviewItem, color: bool) -> str:
    """The transcript with per-turn scores; machine-like turns highlighted."""
    v, t = item.record.verdict, item.record.transcript
    hi, dim, end = ("\033[1;31m", "\033[2m", "\033[0m") if color else ("", "", "")
    lines = [f"record {v.record_id}  source {t.source or 'default'}  id {t.id}",
             f"bot origin {v.bot_origin:.2f}  repetitiveness {v.repetitiveness:.2f}  corpus duplicate "
             f"{v.corpus_duplicate:.2f}  model {v.model_version}",
             *(f"  why: {r}" for r in v.reasons)]
    for i, (turn, score) in enumerate(zip(t.turns, v.turns)):
        flag = hi if score.bot_origin >= 0.5 else ""
        seen = f" seen {score.seen_before}x" if score.seen_before else ""
        lines.append(f"{flag}[{i:2d}] {ROLE_NAMES.get(turn.role, '?'):8s} bot {score.bot_origin:.2f} "
                     f"rep {score.repetitiveness:.2f}{seen}{end if flag else ''}  {dim}|{end} {turn.text}")
    return "\n".join(lines)


def review_loop(target: str, reviewer: str, sources: tuple[str, ...] = (), lease_seconds: int = 600) -> int:
    color = sys.stdout.isatty()
    done = 0
    with connect(target) as client:
        while True:
            try:
                items = client.list_reviews(reviewer, 1, lease_seconds, sources)
            except grpc.RpcError as err:
                print(f"echogate review: {err.code().name}: {err.details()}", file=sys.stderr)
                return 1
            if not items:
                print(f"review queue is empty; {done} reviewed in this session")
                return 0
            item = items[0]
            print("\n" + render(item, color))
            key = _key("[h]uman  [m]achine  [s]kip  [q]uit > ")
            if key in ("q", ""):
                print(f"{done} reviewed in this session; the shown item returns to the queue when its lease ends")
                return 0
            if key not in LABELS:
                continue  # skipped: it stays leased to us until the lease ends, then returns to the queue
            label = LABELS[key]
            default = DEFAULT_DECISION[label]
            choice = _key(f"final decision [a]ccept [t]ag [b]lock (enter: {DECISION_NAMES[default]}) > ")
            final = DECISIONS.get(choice, default)
            note = _line("note (enter for none) > ")
            try:
                record = client.submit_review(item.record.verdict.record_id, reviewer, label, final, note)
            except grpc.RpcError as err:
                print(f"not recorded: {err.code().name}: {err.details()}", file=sys.stderr)
                continue
            done += 1
            print(f"recorded: {DECISION_NAMES[record.verdict.decision]} ({record.verdict.reasons[0]})")
