"""Read the shared datasets into training documents.

A document is what the model scores: a whole transcript (several turns, role-weighted)
or a single turn. Labels follow the datasets' README: for dialogues the label says who
wrote the agent side; where both sides were written by the same hand (SGD, Taskmaster,
CuCom, Synthetic-Persona-Chat) customer turns share it, while STAR customers are people
and STAR agent turns carry exact per-turn origins. In other files a turn's own `origin`, where
it has one, is its label whatever its role; without one, customers are people and the agent
side takes the record's label.
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from echogate.grpc_api.convert import ROLE_FROM_PB
from echogate_client.records import TURN_TEXT_FIELDS, RecordError, turn_list, turn_roles, turn_text, turns_from_text

# Datasets whose customer side was written by the same hand as the agent side.
SAME_HAND_BOTH_SIDES = {"sgd", "taskmaster4", "cucom_ecommerce", "synthetic_persona_chat", "banking77"}


@dataclass(frozen=True)
class Doc:
    dataset: str  # the file stem, e.g. "star_dialogues"
    label: int  # 1 = machine-written
    generator: str | None
    domain: str
    kind: str  # "transcript" or "turn"
    roles: tuple[str, ...]
    texts: tuple[str, ...]
    # Documents with the same `content` key say the same thing (an l2r original and its
    # rewrites: "domain/item"); None where the file matches no content.
    content: str | None = None
    # The record a dialogue's documents come from (the transcript and its single-turn
    # documents share it), so a held-out conversation can take its turns along; None for
    # plain-text records.
    conversation: str | None = None

    @property
    def words(self) -> int:
        return sum(len(t.split()) for t, r in zip(self.texts, self.roles) if r == "agent")


# A chunk of a paragraph is a document of its own, of the dataset named with this suffix
# ("l2r_chunks"), so weights, folds and report slices can tell it from its paragraph.
CHUNK_SUFFIX = "_chunks"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A trailing run of sentences shorter than this many words is dropped rather than kept as a chunk.
MIN_TAIL_WORDS = 5


def source_dataset(dataset: str) -> str:
    """The file a document comes from: a chunk's is the file its paragraph was cut from."""
    return dataset.removesuffix(CHUNK_SUFFIX)


def is_chunk(dataset: str) -> bool:
    """Whether a document of this dataset is a chunk cut from a longer text (chunk_docs)."""
    return dataset.endswith(CHUNK_SUFFIX)


def sentence_chunks(text: str, min_words: int) -> list[str]:
    """The text cut after sentence ends into runs of consecutive sentences, each closed as soon
    as it holds `min_words` words (a tail under MIN_TAIL_WORDS words is dropped)."""
    chunks, run, words = [], [], 0
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        run.append(sentence)
        words += len(sentence.split())
        if words >= min_words:
            chunks.append(" ".join(run))
            run, words = [], 0
    if words >= MIN_TAIL_WORDS:
        chunks.append(" ".join(run))
    return chunks


def chunk_docs(docs: list[Doc], datasets: tuple[str, ...], min_words: int) -> list[Doc]:
    """Short single texts cut from the single texts of `datasets` (see sentence_chunks), each
    keeping its paragraph's label, generator and domain under the dataset name + CHUNK_SUFFIX.

    A hidden group holds LLM paraphrases and summaries against human ones, texts of a sentence
    or two, and short texts are where a detector misfires; l2r's paragraphs are long (a median
    of about 100 words). Their chunks give the same matched content at the length of a message.
    Chunks pair with nothing: a rewrite's sentences do not align with its original's."""
    return [Doc(d.dataset + CHUNK_SUFFIX, d.label, d.generator, d.domain, "turn", ("agent",), (chunk,))
            for d in docs if d.dataset in datasets and d.kind == "turn"
            for chunk in sentence_chunks(d.texts[0], min_words)]


class TrainingDataError(ValueError):
    """Training data that cannot be read: says which folder, or which file, line and field."""


def read_records(path: Path) -> Iterator[dict]:
    """Each record of a training file (numbered_records without the line numbers)."""
    for _, record in numbered_records(path):
        yield record


def numbered_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each record of a training file, checked against the schema of
    ../shared/datasets/README.md as far as training reads it: TrainingDataError names the file,
    line and field of the first that is not (load_docs checks role names as it reads them).
    Turns may come in any of the shapes `echogate score` reads (records.TURN_LISTS: OpenAI's and
    Anthropic's `messages`, ShareGPT's `conversations`), so a labelled file that `echogate eval`
    grades also trains."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingDataError(f"{path} line {n}: not valid JSON ({exc.msg})") from None
            wrong = _schema_error(record)
            if wrong:
                raise TrainingDataError(f"{path} line {n}: {wrong}")
            yield n, record


def _schema_error(record: object) -> str | None:
    """What a training record lacks, or None."""
    if not isinstance(record, dict):
        return "a record must be a JSON object"
    if record.get("label") not in ("human", "machine"):
        return f"label must be \"human\" or \"machine\", not {json.dumps(record.get('label'))}"
    if not isinstance(record.get("id"), str):
        return "a record needs an id (a string)"
    field, turns = turn_list(record)
    if not turns:
        text = isinstance(record.get("text"), str)
        return None if text else "a record needs turns (or messages, conversations) or a text"
    if not isinstance(turns, list):
        return f"{field} must be a list of {{\"role\", \"text\"}} objects"
    for j, turn in enumerate(turns):
        if not (isinstance(turn, dict) and any(k in turn for k in TURN_TEXT_FIELDS)):
            return f"{field}[{j}] must be an object with a role and a text (or {' or '.join(TURN_TEXT_FIELDS[1:])})"
        if "origin" in turn and turn["origin"] not in ("human", "machine"):
            return f"{field}[{j}].origin must be \"human\" or \"machine\", not {json.dumps(turn['origin'])}"
    return None


def content_key(dataset: str, record_id: str) -> str | None:
    """l2r ids are "l2r/DOMAIN/WRITER/ITEM", where a machine's item i rewrites the human item i
    of the same domain (../shared/datasets/README.md): the key is "DOMAIN/ITEM"."""
    if dataset != "l2r":
        return None
    _, domain, _, item = record_id.split("/")
    return f"{domain}/{item}"


def load_docs(data_dir: Path, max_turn_docs_per_dataset: int, seed: int) -> list[Doc]:
    """All transcript documents, plus a seeded sample of single-turn documents per dataset."""
    rng = random.Random(seed)
    docs: list[Doc] = []
    paths = sorted(data_dir.glob("*.jsonl"))
    if not paths:
        raise TrainingDataError(f"{data_dir}: " + ("no *.jsonl training files here" if data_dir.is_dir()
                                                   else "no such folder"))
    for path in paths:
        turn_docs: list[Doc] = []
        for line, rec in numbered_records(path):
            label = 1 if rec["label"] == "machine" else 0
            dataset, generator, domain = path.stem, rec.get("generator"), rec.get("domain") or ""
            # turns as `echogate score` finds them: in any of records.TURN_LISTS, or a dialogue given
            # only as its `role: text` lines read back into turns (no shared file has either)
            field, raw_turns = turn_list(rec)
            raw_turns = raw_turns or turns_from_text(rec["text"])
            if not raw_turns:
                # Plain text (l2r paragraphs, STAR single agent turns): one agent turn, a single
                # text, scored like a one-turn transcript (see echogate.training.graph).
                docs.append(Doc(dataset, label, generator, domain, "turn", ("agent",), (rec["text"],),
                                content_key(dataset, rec["id"])))
                continue
            try:  # roles read as `echogate score` reads them
                roles = [ROLE_FROM_PB[r].value for r in turn_roles(raw_turns, line, field)]  # the role weights' names
            except RecordError as exc:  # "line n: turns[j].role ... is not one of ..."
                raise TrainingDataError(f"{path} {exc}") from None
            turns = [(raw, role, text) for raw, role in zip(raw_turns, roles) if (text := turn_text(raw)).strip()]
            if not turns:
                continue
            if len(turns) > 1 or dataset != "banking77":
                docs.append(Doc(dataset, label, generator, domain, "transcript",
                                tuple(r for _, r, _ in turns), tuple(t for _, _, t in turns), conversation=rec["id"]))
            for raw, role, text in turns:
                if dataset in SAME_HAND_BOTH_SIDES:
                    turn_label = label
                elif dataset == "star_dialogues" and role != "customer":
                    continue  # STAR agent turns come from star_agent_turns.jsonl
                elif "origin" in raw:  # who wrote this turn, said of it alone (an LLM playing the customer too)
                    turn_label = 1 if raw["origin"] == "machine" else 0
                else:
                    turn_label = 0 if role == "customer" else label
                turn_docs.append(Doc(dataset, turn_label, generator, domain, "turn", (role,), (text,),
                                     conversation=rec["id"]))
        rng.shuffle(turn_docs)
        docs.extend(turn_docs[:max_turn_docs_per_dataset])
    return docs
