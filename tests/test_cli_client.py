"""The client library and the `echogate` command line against a real server."""
from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import threading

import grpc
import pytest

from echogate.grpc_api.server import EchogateServer
from echogate.v1 import gate_pb2 as pb
from echogate_client.client import AsyncClient, Client, RetryPolicy
from echogate_client.records import RecordError, transcript_from_record, turns_from_text
from tests.conftest import (DATASETS, make_settings, needs_datasets, run_cli, server_in_thread, strict_json,
                            transcript)

RECORDS = [
    {"id": "r1", "turns": [{"role": "customer", "text": "where is my parcel"},
                           {"role": "agent", "text": "Let me check that for you."}]},
    {"id": "r2", "text": "A plain paragraph of text, scored as one agent turn."},
    {"id": "r3", "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "Hello!"}],
     "source": "other"},
]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_records_convert_turns_and_plain_text():
    t = transcript_from_record(RECORDS[0], 1)
    assert [x.text for x in t.turns] == ["where is my parcel", "Let me check that for you."]
    assert len(transcript_from_record(RECORDS[1], 2).turns) == 1
    assert transcript_from_record({"text": "x"}, 7).id == "line-7"
    with pytest.raises(RecordError, match="line 3: turns\\[0\\].role"):
        transcript_from_record({"turns": [{"role": "narrator", "text": "x"}]}, 3)


def test_role_names_of_message_formats_are_read():
    """Gemini's message lists call the answering side `model`; a name's case and spaces around it
    do not matter."""
    gemini = transcript_from_record({"turns": [{"role": "user", "text": "hi"},
                                               {"role": " Model ", "text": "Hello!"}]}, 1)
    assert [t.role for t in gemini.turns] == [pb.ROLE_CUSTOMER, pb.ROLE_AGENT]


def test_message_lists_with_content_are_read():
    """OpenAI's and Anthropic's message lists carry a turn's text as `content`: a string, or a list
    of content blocks whose text parts count (an image block has none)."""
    openai = transcript_from_record({"turns": [{"role": "user", "content": "where is my order"},
                                               {"role": "assistant", "content": "It ships today."}]}, 1)
    assert [(t.role, t.text) for t in openai.turns] == [(pb.ROLE_CUSTOMER, "where is my order"),
                                                        (pb.ROLE_AGENT, "It ships today.")]
    blocks = [{"type": "text", "text": "Here is the label."}, {"type": "image", "source": {}},
              {"type": "text", "text": "Anything else?"}]
    anthropic = transcript_from_record({"turns": [{"role": "user", "content": "label?"},
                                                  {"role": "assistant", "content": blocks}]}, 1)
    assert anthropic.turns[1].text == "Here is the label.\nAnything else?"


def test_message_lists_and_sharegpt_conversations_are_read_as_turns():
    """Logged LLM conversations come as OpenAI's or Anthropic's `messages` and chat training sets as
    ShareGPT's `conversations` (`from`, `value`). Prompts and tool traffic are turns the model does
    not weigh (ROLE_SYSTEM), even in a list with no assistant message (a message list's system
    message is a prompt, never the answering side); an Anthropic record's top-level system prompt
    is no turn."""
    openai = transcript_from_record({"messages": [
        {"role": "system", "content": "You are a helpful support assistant."},
        {"role": "user", "content": "where is order 42?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"shipped\"}"},
        {"role": "assistant", "content": "Order 42 shipped yesterday."}]}, 1)
    assert [(t.role, t.text) for t in openai.turns] == [
        (pb.ROLE_SYSTEM, "You are a helpful support assistant."), (pb.ROLE_CUSTOMER, "where is order 42?"),
        (pb.ROLE_AGENT, ""), (pb.ROLE_SYSTEM, '{"status": "shipped"}'), (pb.ROLE_AGENT, "Order 42 shipped yesterday.")]
    unanswered = transcript_from_record({"messages": [{"role": "system", "content": "Answer briefly."},
                                                      {"role": "user", "content": "hi"},
                                                      {"role": "tool", "content": "[]"}]}, 1)
    assert [t.role for t in unanswered.turns] == [pb.ROLE_SYSTEM, pb.ROLE_CUSTOMER, pb.ROLE_SYSTEM]
    anthropic = transcript_from_record({"system": "Be kind.", "messages": [{"role": "user", "content": "hi"},
                                                                          {"role": "assistant", "content": "Hello!"}]}, 1)
    assert [(t.role, t.text) for t in anthropic.turns] == [(pb.ROLE_CUSTOMER, "hi"), (pb.ROLE_AGENT, "Hello!")]
    sharegpt = transcript_from_record({"id": "s1", "conversations": [{"from": "human", "value": "my card is blocked"},
                                                                     {"from": "gpt", "value": "I can help."}]}, 1)
    assert [(t.role, t.text) for t in sharegpt.turns] == [(pb.ROLE_CUSTOMER, "my card is blocked"),
                                                          (pb.ROLE_AGENT, "I can help.")]
    # a `text` line named as only a message list names a role is prose, not a turn
    for prose in ("Function: returns the refund amount.\nagent: none", "Tool: a torque wrench"):
        assert [(t.role, t.text) for t in transcript_from_record({"text": prose}, 1).turns] == [(pb.ROLE_AGENT, prose)]


def test_system_turns_answer_where_a_record_has_no_agent():
    """DSTC, MultiWOZ and SGD name the answering side `system` (MultiWOZ also `sys`); beside an
    agent, `system` is a platform message, which the model does not weigh."""
    multiwoz = transcript_from_record({"turns": [{"role": "usr", "text": "a cheap hotel"},
                                                 {"role": "sys", "text": "I have 3 options."}]}, 1)
    assert [t.role for t in multiwoz.turns] == [pb.ROLE_CUSTOMER, pb.ROLE_AGENT]  # sys answers: no agent turn
    dstc = transcript_from_record({"turns": [{"role": "USER", "text": "a table for two"},
                                             {"role": "SYSTEM", "text": "What time would you like?"}]}, 1)
    assert [t.role for t in dstc.turns] == [pb.ROLE_CUSTOMER, pb.ROLE_AGENT]
    platform = transcript_from_record({"turns": [{"role": "system", "text": "Chat transferred to Ana."},
                                                 {"role": "agent", "text": "Hi, Ana here."}]}, 2)
    assert [t.role for t in platform.turns] == [pb.ROLE_SYSTEM, pb.ROLE_AGENT]


def test_a_dialogue_written_as_role_lines_is_read_back_into_its_turns():
    """The shared datasets' `text` of a dialogue joins its turns as `role: text` lines; a record
    with only that text reads as the same turns, a turn's own line breaks included, and any
    other text stays one plain agent turn."""
    joined = "customer: Hi, my order is late.\nAgent: Sorry to hear that!\n\nLet me check.\nuser: thanks"
    t = transcript_from_record({"text": joined}, 1)
    assert [(x.role, x.text) for x in t.turns] == [(pb.ROLE_CUSTOMER, "Hi, my order is late."),
                                                   (pb.ROLE_AGENT, "Sorry to hear that!\n\nLet me check."),
                                                   (pb.ROLE_CUSTOMER, "thanks")]
    for plain in ("Note: the parcel left on Monday.\nagent: none", "A paragraph without roles.", "\nagent: hi"):
        assert [(x.role, x.text) for x in transcript_from_record({"text": plain}, 1).turns] == [(pb.ROLE_AGENT, plain)]
    assert turns_from_text("Support: we are closed today") == [{"role": "Support", "text": "we are closed today"}]


@needs_datasets
def test_every_shared_dialogue_scores_the_same_from_its_text_alone(tmp_path):
    """Records of the shared files with their turns dropped read back into exactly those turns, so
    `echogate score` gives every one the same verdict; the plain texts stay single texts."""
    records, plain = [], 0
    for name in sorted(DATASETS.glob("*.jsonl")):
        for line in name.open():
            r = json.loads(line)
            if r.get("turns"):
                records.append(r)
                assert [(x.role, x.text) for x in transcript_from_record({"text": r["text"]}, 1).turns] == \
                       [(x.role, x.text) for x in transcript_from_record(r, 1).turns], r["id"]
            else:
                plain += 1
                assert turns_from_text(r["text"]) is None, r["id"]
    assert len(records) > 40_000 and plain > 40_000
    sample = records[::50]
    texts = [{"id": r["id"], "text": r["text"]} for r in sample]
    scored = [run_cli("score", str(_write(tmp_path / f"{k}.jsonl", rs)))
              for k, rs in (("turns", sample), ("text", texts))]
    assert all(r.returncode == 0 for r in scored), [r.stderr for r in scored]
    by_turns, by_text = ([json.loads(line)["echogate"] for line in r.stdout.splitlines()] for r in scored)
    assert [(e["bot_origin"], e["repetitiveness"], e["decision"]) for e in by_text] == \
           [(e["bot_origin"], e["repetitiveness"], e["decision"]) for e in by_turns]
    assert all(e["turns"] == [] for e in by_text)  # the record gave no turns: the verdict lists none


@pytest.mark.parametrize("customer, agent", [("apprentice", "Wizard"), ("seeker", "recommender"),
                                             ("customer", "company"), ("Caller", "representative")])
def test_role_names_of_dialogue_corpora_are_read(customer, agent):
    """Exports of Wizard of Wikipedia, ReDial and the Twitter customer-support corpus score as they
    are instead of stopping the run on an unknown role; ABCD's tool `action` turns are platform text."""
    t = transcript_from_record({"turns": [{"role": customer, "text": "hi"}, {"role": agent, "text": "Hello!"},
                                          {"role": "action", "text": "Account has been pulled up for Ana."}]}, 1)
    assert [x.role for x in t.turns] == [pb.ROLE_CUSTOMER, pb.ROLE_AGENT, pb.ROLE_SYSTEM]


def test_score_command_appends_echogate_object_in_order(tmp_path):
    path = _write(tmp_path / "in.jsonl", RECORDS)
    result = run_cli("score", str(path))
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in out] == ["r1", "r2", "r3"]
    for original, scored in zip(RECORDS, out):
        assert {k: v for k, v in scored.items() if k != "echogate"} == original
        e = scored["echogate"]
        assert set(e) >= {"bot_origin", "repetitiveness", "corpus_duplicate", "decision", "tags", "reasons", "turns"}
        assert len(e["turns"]) == len(original.get("turns") or [])
        assert all(set(t) == {"bot_origin", "repetitiveness", "seen_before"} for t in e["turns"])
        assert set(e["repetition"]) == {"duplicate_turn_fraction", "duplicate_turn_char_fraction",
                                        "top_trigram_fraction", "distinct_3", "compression_ratio"}


def test_score_command_scores_each_message_of_a_message_list(tmp_path):
    """A `messages` or `conversations` record gets one per-turn score per message, in order, the
    scores a `turns` record of the same dialogue gets (each file starts a fresh corpus memory)."""
    dialogue = [("user", "my parcel never came"), ("assistant", "I'm sorry! I will send a new one today.")]
    forms = [{"turns": [{"role": r, "text": t} for r, t in dialogue]},
             {"messages": [{"role": r, "content": t} for r, t in dialogue]},
             {"conversations": [{"from": r, "value": t} for r, t in dialogue]}]
    scored = []
    for i, record in enumerate(forms):
        result = run_cli("score", str(_write(tmp_path / f"{i}.jsonl", [record])))
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert {k: v for k, v in out.items() if k != "echogate"} == record
        scored.append(out["echogate"])
    assert len(scored[0]["turns"]) == 2
    assert scored[1] == scored[0] and scored[2] == scored[0]


def test_score_command_counts_turns_seen_earlier_in_the_file(tmp_path):
    """A file is scored as a stream: a canned reply is counted against every earlier record."""
    canned = "Thank you for reaching out! Your ticket has been escalated to our specialists."
    records = [{"id": f"t{i}", "turns": [{"role": "customer", "text": q}, {"role": "agent", "text": canned}]}
               for i, q in enumerate(["parcel lost", "refund please", "wrong size", "late again"])]
    result = run_cli("score", str(_write(tmp_path / "in.jsonl", records)))
    assert result.returncode == 0, result.stderr
    out = [json.loads(line)["echogate"] for line in result.stdout.splitlines()]
    assert [e["turns"][1]["seen_before"] for e in out] == [0, 1, 2, 3]
    assert [e["corpus_duplicate"] for e in out] == [0.0, 1.0, 1.0, 1.0]


def test_score_command_keeps_each_record_byte_for_byte_and_reads_stdin(tmp_path):
    """The output line is the input line with the echogate object added: number spelling, key order,
    escapes and spacing are the user's own. `-` reads standard input."""
    lines = ['{"z": 1.50e2, "text": "Caf\\u00e9 opens at 9. How can I help you today?", "id": "a"}',
             '{ "turns" : [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "Hello!"}] }']
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    from_file, from_stdin = run_cli("score", str(path)), run_cli("score", "-", stdin=path.read_text())
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_file.stderr + from_stdin.stderr
    assert from_file.stdout == from_stdin.stdout
    for line, scored in zip(lines, from_file.stdout.splitlines()):
        assert scored.startswith(line[:-1] + ", \"echogate\": {")
        assert json.loads(scored)["echogate"]["model_version"].startswith("bot-origin-")
    rescored = run_cli("score", "-", stdin=from_file.stdout)  # a scored file scored again: one echogate key
    assert rescored.returncode == 0, rescored.stderr
    for before, after in zip(from_file.stdout.splitlines(), rescored.stdout.splitlines()):
        assert after.count('"echogate"') == 1 and json.loads(after).keys() == json.loads(before).keys()


def test_score_command_writes_the_batches_before_a_bad_record(tmp_path):
    """Records are read a batch at a time: a bad record stops the run after the batches before its
    own were written, and the exit status says the output is incomplete."""
    records = [{"id": f"r{i}", "text": f"Message number {i} about my order."} for i in range(7)]
    records[4] = {"id": "bad", "turns": [{"role": "narrator", "text": "Once"}]}
    result = run_cli("score", str(_write(tmp_path / "in.jsonl", records)), "--batch-size", "2")
    assert result.returncode == 2 and "line 5: turns[0].role 'narrator'" in result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["r0", "r1", "r2", "r3"]


def test_score_command_stops_quietly_when_its_reader_goes_away(tmp_path):
    """`echogate score big.jsonl | head` ends without a traceback once head has read its lines."""
    path = _write(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": "Thanks for waiting! " * 20} for i in range(3000)])
    proc = subprocess.Popen([sys.executable, "-m", "echogate_client.cli", "score", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline())["id"] == "r0"
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err


@pytest.mark.parametrize("record, why", [
    ([1, 2], "a record must be a JSON object, not list"),
    ({"turns": "hello"}, "turns must be a list"),
    ({"turns": ["hello"]}, "turns[0] must be an object with role and text"),
    ({"turns": [{"role": ["agent"], "text": "x"}]}, "turns[0].role ['agent'] is not one of"),
    ({"text": "hello", "metadata": ["a"]}, "metadata must be an object"),
    ({"messages": {"role": "user"}}, "messages must be a list"),
    ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role 'narrator' is not one of"),
    ({"conversations": [{"from": "narrator", "value": "x"}]}, "conversations[0].from 'narrator' is not one of"),
])
def test_records_of_the_wrong_shape_are_named(record, why):
    with pytest.raises(RecordError, match=f"^line 9: {re.escape(why)}"):
        transcript_from_record(record, 9)


def test_half_a_surrogate_pair_is_read_as_the_replacement_character():
    """A logger that cut a string inside an emoji leaves half a UTF-16 pair, which JSON can escape
    but no protobuf string can carry."""
    record = json.loads('{"id": "x\\ud83d", "turns": [{"role": "agent", "text": "Sorry \\ud83d, and \\ud83d\\ude00"}]}')
    t = transcript_from_record(record, 1)
    assert t.id == "x\ufffd" and t.turns[0].text == "Sorry \ufffd, and \U0001f600"


@pytest.mark.parametrize("command", ["score", "eval"])
def test_file_commands_name_the_bad_line_and_exit_2(tmp_path, command):
    """A record the schema cannot read stops the run with its line and what is wrong, not a traceback."""
    bad = {"id": "x", "label": "human", "turns": [{"role": "narrator", "text": "Once upon a time"}]}
    path = _write(tmp_path / "in.jsonl", [{**RECORDS[0], "label": "human"}, bad])
    result = run_cli(command, str(path))
    assert result.returncode == 2
    assert f"echogate {command}: {path}: line 2: turns[0].role 'narrator'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["score", "eval"])
def test_file_commands_name_a_record_the_limits_reject(tmp_path, command):
    """A record the schema reads but the request limits reject (a blank id) is named by its line
    too, not raised from the scoring thread as a traceback."""
    blank_id = {"id": "  ", "label": "human", "text": "x"}
    path = _write(tmp_path / "in.jsonl", [{**RECORDS[0], "label": "human"}, blank_id])
    result = run_cli(command, str(path))
    assert result.returncode == 2
    assert f"echogate {command}: {path}: line 2: id: must not be empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_score_command_keeps_going_past_records_it_cannot_score(tmp_path):
    """--keep-going writes one line per record, in order: a record that cannot be scored (not JSON,
    not an object, an unknown role, a blank id) comes back with `echogate.error` naming its line,
    and the others score as they do in a file without the bad ones. The exit status is still 2."""
    good = [{"id": f"r{i}", "text": f"Message number {i} about my order."} for i in range(5)]
    narrator, blank_id = {"id": "x", "turns": [{"role": "narrator", "text": "Once"}]}, {"id": " ", "text": "y"}
    lines = [json.dumps(good[0]), "not json", json.dumps(good[1]), "[1, 2]", json.dumps(good[2]), json.dumps(narrator),
             json.dumps(blank_id), json.dumps(good[3]), json.dumps(good[4])]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run_cli("score", str(path), "--keep-going", "--batch-size", "2")
    assert result.returncode == 2, result.stderr
    assert "4 record(s) could not be scored" in result.stderr and "Traceback" not in result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(lines)
    errors = {i + 1: o["echogate"]["error"] for i, o in enumerate(out) if "error" in o["echogate"]}
    assert sorted(errors) == [2, 4, 6, 7]
    assert errors[2].startswith("line 2: not valid JSON") and errors[4].startswith("line 4: a record must be")
    assert errors[6].startswith("line 6: turns[0].role 'narrator'") and errors[7] == "line 7: id: must not be empty"
    assert out[5] == {**narrator, "echogate": {"error": errors[6]}}
    clean = run_cli("score", str(_write(tmp_path / "good.jsonl", good)), "--batch-size", "2")
    assert clean.returncode == 0, clean.stderr
    scored = [o for o in out if "error" not in o["echogate"]]
    assert scored == [json.loads(line) for line in clean.stdout.splitlines()]


def test_eval_command_reports_metrics(tmp_path):
    labelled = [{**RECORDS[0], "label": "human", "dataset": "d"}, {**RECORDS[1], "label": "machine", "dataset": "d"},
                {**RECORDS[2], "label": "human", "dataset": "d"}]
    result = run_cli("eval", str(_write(tmp_path / "l.jsonl", labelled)), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["groups"]["all"]["n"] == 3 and "dataset=d" in report["groups"]
    assert 0 <= report["groups"]["all"]["auroc"] <= 1 and report["unreadable"] == 0 and report["unlabelled"] == {}


def test_eval_command_table_lines_up_past_a_long_group_name(tmp_path):
    """Generator names such as STAR's `template:apartment_ask_application_fee_paid` are longer than
    the table's first column: the column widens, so each row's figures stand under their heads."""
    generator = "template:apartment_ask_application_fee_paid_" + "x" * 20
    labelled = [{**RECORDS[0], "label": "human"}, {**RECORDS[1], "label": "machine", "generator": generator}]
    result = run_cli("eval", str(_write(tmp_path / "l.jsonl", labelled)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    head = lines[0]
    table = lines[: next(i for i, line in enumerate(lines) if not line.strip())]
    assert any(line.startswith(f"generator={generator} ") for line in table)
    assert {len(line) for line in table} == {len(head)} and head.index("AUROC") > len(f"generator={generator}")


def test_eval_command_counts_the_records_it_could_not_grade_by_their_label(tmp_path):
    """A record without a label of human or machine is scored (it is part of the stream) but in no
    group; a misspelt label is named with its count rather than silently left out."""
    records = [{**RECORDS[0], "label": "human"}, {**RECORDS[1], "label": "Machine"}, {**RECORDS[2], "label": "bot"},
               {**RECORDS[0], "id": "x", "label": "bot"}, {**RECORDS[1], "id": "y"}]
    result = run_cli("eval", str(_write(tmp_path / "l.jsonl", records)), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["groups"]["all"]["n"] == 1 and report["unlabelled"] == {'"bot"': 2, '"Machine"': 1, "null": 1}
    assert '4 record(s) have no `label` of human or machine (label, records: "bot" 2, "Machine" 1, null 1)' in \
        result.stderr


def test_eval_command_gives_thresholds_a_policy_can_take(tmp_path):
    """The threshold eval offers for at most 10% of the human records, set as a policy's
    tag_bot_origin, flags no more of them: evaluated again under that policy, the decisions
    table counts exactly the humans and machines the threshold row said it would flag."""
    words = "order parcel refund late sorry please thanks help account card delivery address week store item".split()
    rng = random.Random(7)
    apology = "I sincerely apologize for the inconvenience, and I completely understand your frustration. "
    records = [{"id": f"r{i}", "label": "machine" if i % 3 == 0 else "human",
                "text": (apology if i % 6 == 0 else "") + " ".join(rng.choices(words, k=6 + i % 9))} for i in range(45)]
    path = _write(tmp_path / "l.jsonl", records)
    result = run_cli("eval", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = strict_json(result.stdout)
    decisions = report["decisions"]
    assert decisions["policy_version"] == "default-1"
    assert sum(decisions["human"].values()) == 30 and sum(decisions["machine"].values()) == 15
    rows = {row["max_human_share"]: row for row in report["thresholds"]}
    assert sorted(rows) == [0.001, 0.01, 0.05, 0.1]
    row = rows[0.1]
    assert row["human_flagged"] <= 0.1
    config = tmp_path / "echogate.yaml"
    config.write_text(f"policy: {{version: from-eval, tag_bot_origin: {row['threshold']}, review_bot_origin: 1.0, "
                      "block_bot_origin: 1.0, tag_repetitiveness: 1.0, block_repetitiveness: 1.0}\n")
    result = run_cli("eval", str(path), "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    decisions = strict_json(result.stdout)["decisions"]
    assert decisions["policy_version"] == "from-eval"
    flagged = {label: sum(decisions[label].values()) - decisions[label]["accept"] for label in ("human", "machine")}
    assert flagged == {"human": round(row["human_flagged"] * 30), "machine": round(row["machine_caught"] * 15)}
    assert flagged["human"] <= 3 and flagged["machine"] > 0
    table = run_cli("eval", str(path), "--config", str(config)).stdout
    assert "bot-origin thresholds (records)" in table and f"{row['threshold']:9.4f}" in table
    counts = r"\s+".join(str(decisions["human"][d]) for d in ("accept", "tag", "review", "block"))
    assert re.search(r"human\s+30\s+" + counts, table), table
    assert "0.1%, 1%, 5% and 10%" in " ".join(run_cli("eval", "--help").stdout.split())


def test_eval_command_keeps_going_past_records_it_cannot_score(tmp_path):
    """--keep-going leaves unreadable records out, names each on stderr and counts them; the other
    records grade as in a file without them. The exit status is still 2."""
    labelled = [{**RECORDS[0], "label": "human"}, {**RECORDS[1], "label": "machine"}, {**RECORDS[2], "label": "human"}]
    path = tmp_path / "l.jsonl"
    blank_id = {"id": " ", "label": "machine", "text": "x"}
    path.write_text("\n".join([json.dumps(labelled[0]), "{oops", json.dumps(labelled[1]), json.dumps(blank_id),
                                json.dumps(labelled[2])]) + "\n")
    result = run_cli("eval", str(path), "--json", "--keep-going")
    assert result.returncode == 2, result.stderr
    assert "line 2: not valid JSON" in result.stderr and "line 4: id: must not be empty" in result.stderr
    report = json.loads(result.stdout)
    assert report["unreadable"] == 2
    clean = json.loads(run_cli("eval", str(_write(tmp_path / "clean.jsonl", labelled)), "--json").stdout)
    assert report["groups"] == clean["groups"] and clean["unreadable"] == 0


def test_eval_command_json_is_strict_where_one_label_leaves_a_metric_undefined(tmp_path):
    """A group with one label has no AUROC: `--json` says null, which every JSON reader takes (a
    bare NaN is refused by jq and JavaScript), and the table says n/a."""
    labelled = [{**RECORDS[0], "label": "human", "dataset": "people"}, {**RECORDS[1], "label": "machine", "dataset": "bots"},
                {**RECORDS[2], "label": "human", "dataset": "people"}]
    path = _write(tmp_path / "l.jsonl", labelled)
    result = run_cli("eval", str(path), "--json")
    assert result.returncode == 0, result.stderr
    groups = strict_json(result.stdout)["groups"]
    assert groups["dataset=people"]["auroc"] is None and groups["dataset=people"]["mean_prob_machine"] is None
    assert 0 <= groups["all"]["auroc"] <= 1
    table = run_cli("eval", str(path)).stdout
    assert re.search(r"dataset=people\s+2\s+0\s+n/a\s+n/a\s+\d\.\d{3}", table), table
    unlabelled = run_cli("eval", "-", stdin=json.dumps(RECORDS[0]) + "\n")
    assert unlabelled.returncode == 2 and "<stdin>: no record has a `label`" in unlabelled.stderr


def test_eval_command_grades_turns_by_their_origin_and_short_texts_apart(tmp_path):
    """A turn's own `origin` grades the per-turn score `score` writes for it, in groups named `turns`,
    even in a file with no record `label`; texts under 20 words get groups of their own."""
    apology = ("I sincerely apologize for the inconvenience this delay has caused. I completely understand how "
               "frustrating it must be, and I will look into your order right away.")
    records = [{"id": "a", "dataset": "shop", "turns": [
                   {"role": "customer", "text": "my parcel is late again"},
                   {"role": "agent", "text": "ugh sorry, checking now", "origin": "human"},
                   {"role": "agent", "text": apology, "origin": "machine"}]},
               {"id": "b", "dataset": "shop", "turns": [
                   {"role": "customer", "text": "hi"}, {"role": "agent", "text": "hey, one sec", "origin": "human"},
                   {"role": "agent", "text": "Thank you for your patience! " + apology, "origin": "machine"}]},
               {"id": "c", "text": "no origin here, and no label either"}]
    path = _write(tmp_path / "turns.jsonl", records)
    result = run_cli("eval", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = strict_json(result.stdout)
    assert "all" not in report["groups"] and "reliability" not in report
    assert "thresholds" not in report and "decisions" not in report  # no record is labelled
    scored = [json.loads(line)["echogate"] for line in run_cli("score", str(path)).stdout.splitlines()]
    machine = [scored[0]["turns"][2]["bot_origin"], scored[1]["turns"][2]["bot_origin"]]
    human = [scored[0]["turns"][1]["bot_origin"], scored[1]["turns"][1]["bot_origin"]]
    turns = report["groups"]["turns"]
    assert (turns["n"], turns["machine"]) == (4, 2) and report["groups"]["turns dataset=shop"] == turns
    assert turns["mean_prob_machine"] == pytest.approx(sum(machine) / 2)
    assert turns["mean_prob_human"] == pytest.approx(sum(human) / 2)
    pairs = [(m > h) + 0.5 * (m == h) for m in machine for h in human]
    assert turns["auroc"] == pytest.approx(sum(pairs) / 4)
    short = report["groups"]["turns<20w"]
    assert (short["n"], short["machine"]) == (2, 0) and short["mean_prob_human"] == pytest.approx(sum(human) / 2)
    assert sum(row["count"] for row in report["turn_reliability"]) == 4

    labelled = _write(tmp_path / "labelled.jsonl", [{**r, "label": "human"} for r in records])
    groups = strict_json(run_cli("eval", str(labelled), "--json").stdout)["groups"]
    assert groups["all"]["n"] == 3 and groups["all<20w"]["n"] == 1  # record c is the short one


def test_eval_command_counts_words_as_the_record_was_read(tmp_path):
    """A labelled dialogue given as `content` turns, or as its `role: text` lines alone, is graded
    as the same dialogue given as `text` turns: same score, and short or not by its turns' words
    (not none, nor its role names too)."""
    long_turns = [{"role": "customer", "text": "my parcel was due on Monday and it still has not arrived here"},
                  {"role": "agent", "text": "Sorry about that, I can see it left the depot and will reach you soon"}]
    short_turns = [{"role": "customer", "text": "where is my parcel"}, {"role": "agent", "text": "it ships today"}]
    forms = {
        "turns": lambda turns: {"turns": turns},
        "content": lambda turns: {"turns": [{"role": t["role"], "content": t["text"]} for t in turns]},
        "lines": lambda turns: {"text": "\n".join(f"{t['role']}: {t['text']}" for t in turns)},
        "messages": lambda turns: {"messages": [{"role": t["role"], "content": t["text"]} for t in turns]},
        "sharegpt": lambda turns: {"conversations": [{"from": t["role"], "value": t["text"]} for t in turns]},
    }
    reports = {}
    for name, form in forms.items():
        records = [{"id": "l", "label": "human", **form(long_turns)}, {"id": "s", "label": "machine", **form(short_turns)}]
        result = run_cli("eval", str(_write(tmp_path / f"{name}.jsonl", records)), "--json")
        assert result.returncode == 0, result.stderr
        reports[name] = strict_json(result.stdout)["groups"]
    assert reports["turns"]["all<20w"]["n"] == 1  # the short dialogue only: 7 words; the long one 29
    assert all(reports[name] == reports["turns"] for name in forms)


async def test_gate_command_gates_a_file_and_get_reads_back(tmp_path, server):
    path = _write(tmp_path / "in.jsonl", RECORDS)
    result = await asyncio.to_thread(run_cli, "gate", str(path), "--target", server.address, "--source", "cli",
                                     "--out", str(tmp_path / "v.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "gated 3 transcripts (0 already recorded)" in result.stdout
    verdicts = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [(v["source"], v["id"]) for v in verdicts] == [("cli", "r1"), ("cli", "r2"), ("other", "r3")]
    again = await asyncio.to_thread(run_cli, "gate", "-", "--target", server.address, "--source", "cli",
                                    stdin=path.read_text())  # the same file again, from standard input
    assert "gated 3 transcripts (3 already recorded)" in again.stdout, again.stderr
    got = await asyncio.to_thread(run_cli, "get", "--target", server.address, "--source", "cli", "--id", "r1")
    assert json.loads(got.stdout)["transcript"]["id"] == "r1"


async def test_query_command_lists_counts_and_rejects_bad_conditions(tmp_path, server):
    path = _write(tmp_path / "in.jsonl", RECORDS)
    await asyncio.to_thread(run_cli, "gate", str(path), "--target", server.address, "--source", "cli")
    rows = await asyncio.to_thread(run_cli, "query", "--target", server.address, "--where", "source=cli",
                                   "--format", "jsonl")
    assert rows.returncode == 0, rows.stderr
    lines = [json.loads(line) for line in rows.stdout.splitlines()]
    assert sorted(r["transcript_id"] for r in lines) == ["r1", "r2"]
    assert lines[0]["turns"][0].keys() >= {"role", "text", "bot_origin", "seen_before"}
    table = await asyncio.to_thread(run_cli, "query", "--target", server.address, "--where", "text~PARCEL")
    assert len(table.stdout.splitlines()) == 2 and " r1 " in table.stdout  # header and one row
    counts = await asyncio.to_thread(run_cli, "query", "--target", server.address, "--count-by", "source")
    assert counts.stdout.split() == ["cli", "2", "other", "1", "total", "3"]
    bad = await asyncio.to_thread(run_cli, "query", "--target", server.address, "--where", "bot_origin<=0.3")
    assert bad.returncode == 2 and "bot_origin<=0.3" in bad.stderr


async def test_gate_command_prints_field_violations_by_line(tmp_path, server):
    """The server names a rejected record by its place in the batch; the command names its line in
    the file (a blank line counts as a line, not as a record)."""
    records = [{"id": f"ok-{i}", "text": "Where is my parcel?"} for i in range(5)]
    records[3] = {"id": "x", "turns": [{"role": "agent", "text": "y" * 20_000}]}
    path = _write(tmp_path / "bad.jsonl", records)
    path.write_text("\n" + path.read_text())
    result = await asyncio.to_thread(run_cli, "gate", str(path), "--target", server.address, "--batch-size", "2")
    assert result.returncode == 1
    assert "INVALID_ARGUMENT: the server refused the batch of lines 4-5, 2 transcript(s) before it were gated" \
        in result.stderr and "line 5: turns[0].text" in result.stderr, result.stderr
    assert "transcripts[" not in result.stderr  # the batch-relative path is said by line only


def test_sync_client_retries_until_the_server_is_up(tmp_path):
    """The first attempts hit a closed port (UNAVAILABLE); the retry, same ids, is stored once."""
    settings = make_settings(tmp_path)
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        settings.port = s.getsockname()[1]
    started, done = threading.Event(), threading.Event()

    def run_server():
        async def main():
            async with EchogateServer(settings):
                started.set()
                while not done.is_set():
                    await asyncio.sleep(0.05)
        asyncio.run(main())

    timer = threading.Timer(0.8, lambda: threading.Thread(target=run_server, daemon=True).start())
    timer.start()
    with Client(f"127.0.0.1:{settings.port}", retry=RetryPolicy(attempts=8, initial_backoff_s=0.2)) as client:
        verdicts = list(client.gate_all([transcript(f"b{i}", "hello") for i in range(5)], batch_size=2))
        assert [v.transcript_id for v in verdicts] == [f"b{i}" for i in range(5)]
        assert not any(v.duplicate for v in verdicts)
        assert client.server_info().store_backend == "sqlite"
    done.set()
    assert started.is_set()


def test_sync_client_does_not_retry_invalid_argument(server_thread):
    with Client(server_thread, retry=RetryPolicy(attempts=3)) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.gate([transcript("", "x")])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_async_client_gate_all_and_stream(server):
    async with AsyncClient(server.address) as client:
        verdicts = [v async for v in client.gate_all((transcript(f"a{i}", "hi") for i in range(10)), batch_size=3)]
        assert [v.transcript_id for v in verdicts] == [f"a{i}" for i in range(10)]
        responses = [r async for r in client.gate_stream([[transcript("s1", "x")], [transcript("a0", "hi")]])]
        assert [r.verdicts[0].duplicate for r in responses] == [False, True]
        record = await client.get_record(source="test", transcript_id="a3")
        assert record.transcript.id == "a3"


@pytest.fixture
def server_thread(tmp_path):
    """A server on its own event loop thread, for the blocking client."""
    with server_in_thread(make_settings(tmp_path)) as address:
        yield address
