"""Held-out validation: which documents each fold holds out, and how a fold is reported.

The label follows the collection in most shared files, so folds hold out whole datasets, text
domains with a generator, and task domains; a random split would reward a model that learnt the
collection instead of origin (see make_folds).
"""
from __future__ import annotations

import zlib

import numpy as np

from echogate import evaluation
from echogate.training.data import Doc, is_chunk, source_dataset

L2R_GENERATORS = ("GPT-3-Turbo", "Gemini-1.5-Pro", "Llama-3-70B")
# What each fold is judged on in the macro AUROC: single texts for l2r and STAR, dialogues elsewhere.
HEADLINE_SLICE = {"l2r": "turns", "star": "turns"}


def headline_slice(fold: str) -> str:
    """The slice of a make_folds fold that counts in the macro AUROC."""
    return HEADLINE_SLICE.get(fold.split("_")[0], "transcripts")


# The shared files (../shared/datasets) that make_folds' own folds are cut from. A file beside
# them (a customer's own labelled data) is held out whole in a fold of its own, named so.
SHARED_FILES = frozenset({"sgd", "taskmaster4", "banking77", "cucom_ecommerce", "synthetic_persona_chat", "l2r",
                          "star_agent_turns", "star_dialogues"})
OTHER_FILE_FOLD = "unseen_file:"


def in_macro(fold: str) -> bool:
    """Whether a fold counts in the macro AUROC: the folds that stand for the hidden evaluation's
    groups do, a customer's own file's (OTHER_FILE_FOLD) does not, so the figure compares across
    runs on different data."""
    return not fold.startswith(OTHER_FILE_FOLD)


# Collection-labelled support dialogues whose new conversations the in-collection check holds out.
IN_COLLECTION_DATASETS = ("cucom_ecommerce", "sgd", "taskmaster4")


def make_folds(docs: list[Doc]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Held-out folds as (test, excluded-from-training) masks.

    - whole dialogue datasets, machine paired with human: the label follows the dataset in
      these files, so only a model that learnt origin rather than the collection scores well;
    - l2r: unseen domains *and* an unseen generator at once (three folds, each a third of
      the domains with one generator's rewrites against those domains' human originals);
    - STAR: unseen task domains, scored on agent turns whose template appears in no
      training domain (typed human turns of those domains are the negatives), and on
      those domains' whole dialogues;
    - banking77: short human messages only, read as a false-positive check;
    - every other file (not in SHARED_FILES): held out whole, so data added to the shared files
      is validated, and calibrated on, as a collection the model never saw.

    A chunk (data.chunk_docs) goes wherever the text it was cut from goes.
    """
    dataset = np.array([source_dataset(d.dataset) for d in docs])
    domain = np.array([d.domain for d in docs])
    gen = np.array([d.generator or "" for d in docs])
    label = np.array([d.label for d in docs])
    folds = {}
    for name, held in {"cucom_vs_taskmaster4": ("cucom_ecommerce", "taskmaster4"),
                       "spc_vs_sgd": ("synthetic_persona_chat", "sgd"), "banking77": ("banking77",)}.items():
        test = np.isin(dataset, held)
        folds[name] = (test, test)
    l2r = dataset == "l2r"
    l2r_domains = sorted(set(domain[l2r]))
    for i, g in enumerate(L2R_GENERATORS):
        held_domains = l2r_domains[i :: len(L2R_GENERATORS)]
        in_domains = l2r & np.isin(domain, held_domains)
        folds[f"l2r_unseen_domains+{g}"] = (in_domains & ((label == 0) | (gen == g)), l2r & (in_domains | (gen == g)))
    star = np.isin(dataset, ("star_agent_turns", "star_dialogues"))
    star_domains = sorted(set(domain[star]))
    for i in range(2):
        held_domains = star_domains[i::2]
        in_domains = star & np.isin(domain, held_domains)
        seen_templates = set(gen[star & ~in_domains])
        unseen_turns = (dataset == "star_agent_turns") & ((label == 0) | ~np.isin(gen, list(seen_templates)))
        test = in_domains & (unseen_turns | (dataset == "star_dialogues"))
        folds[f"star_unseen_domains_{i}"] = (test, in_domains)
    for name in sorted(set(dataset.tolist()) - SHARED_FILES):
        held = dataset == name
        folds[OTHER_FILE_FOLD + name] = (held, held)
    return folds


def in_collection_fold(docs: list[Doc]) -> tuple[np.ndarray, np.ndarray]:
    """Half of the conversations of IN_COLLECTION_DATASETS (by a stable hash of the record id),
    held out with every document cut from them.

    New conversations of collections the model trains on: LLM support dialogues (CuCom) against
    human ones (SGD, Taskmaster-4), as a platform whose traffic resembles the training data
    sees them. The other folds say how origin survives a change of collection; this one says
    what the model gives where the collection is known, and shows what the byte n-gram scale
    costs there. It is reported only: never calibrated on, never in the macro AUROC.
    """
    held = np.array([d.dataset in IN_COLLECTION_DATASETS and d.conversation is not None
                     and zlib.crc32(d.conversation.encode()) % 2 == 0 for d in docs])
    return held, held


REPORT_SLICES = ("transcripts", "turns", "chunks")


def report_slice(doc: Doc) -> str:
    """Which of REPORT_SLICES reports the document in a fold: chunks cut from a paragraph apart
    from the single texts ("turns") and dialogues ("transcripts")."""
    return "chunks" if is_chunk(doc.dataset) else f"{doc.kind}s"


def report_rows(docs: list[Doc], probs: np.ndarray, fold: str) -> list[dict]:
    """Validation rows for one held-out fold: by kind (paragraph chunks apart from the single
    texts they were cut from), short texts, and per generator."""
    rows = []
    y = np.array([d.label for d in docs])
    slices = np.array([report_slice(d) for d in docs])
    for name in REPORT_SLICES:
        sel = slices == name
        if sel.any():
            rows.append({"fold": fold, "slice": name, **evaluation.summary(y[sel], probs[sel])})
            short = sel & np.array([evaluation.word_count(d.texts) < evaluation.SHORT_WORDS for d in docs])
            if short.any():
                rows.append({"fold": fold, "slice": f"{name}<{evaluation.SHORT_WORDS}w",
                             **evaluation.summary(y[short], probs[short])})
    gens = sorted({d.generator for d in docs
                   if d.label == 1 and d.generator and not d.generator.startswith("template:")})
    if len(gens) > 1:
        for g in gens:
            sel = np.array([d.label == 0 or d.generator == g for d in docs])
            rows.append({"fold": fold, "slice": f"generator={g}", **evaluation.summary(y[sel], probs[sel])})
    return rows
