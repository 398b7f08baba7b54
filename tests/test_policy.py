"""The decision policy: file validation with line numbers, rules and overrides, the real-data floor
(window arithmetic, restarts, retries), and live reload by RPC and SIGHUP."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from echogate.budget import SyntheticBudgetWindows
from echogate.grpc_api.server import EchogateServer
from echogate.policy import Policy, PolicyError, load_policy_file
from echogate.model import BotOriginModel
from echogate.scoring import ScoredTranscript, Scorer
from echogate.settings import PolicySettings, default_model_path
from echogate.types import DeclaredOrigin, Decision, Role, Scores, Transcript, Turn, TurnScore
from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc
from echogate_client.client import AsyncClient
from tests.conftest import make_settings, transcript

POLICY = """\
version: test-1
tag_bot_origin: 0.5
review_bot_origin: 0.8
block_bot_origin: 0.97
tags: [gated]
synthetic_budget:
  max_share: 0.2
  window_seconds: 3600
sources:
  strict-bot:
    tag_bot_origin: 0.2
    declared_bot: block
    tags: [vendor-x]
    synthetic_budget_max_share: 0.05
"""


def scored(bot: float, rep: float = 0.0, turns: int = 2) -> ScoredTranscript:
    return ScoredTranscript(Scores(bot, rep, tuple(TurnScore(bot, rep, 0) for _ in range(turns))), "h",
                            tuple(1.0 for _ in range(turns)), "m1")


def make(source: str = "acme", declared: DeclaredOrigin = DeclaredOrigin.UNKNOWN) -> Transcript:
    return Transcript("t", source, (Turn(Role.CUSTOMER, "my parcel is late"), Turn(Role.AGENT, "Let me check.")),
                      declared_origin=declared)


@pytest.fixture
def policy(tmp_path) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return Policy(load_policy_file(path))


# --- the file --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (POLICY.replace("review_bot_origin: 0.8", "review_bot_origin: 1.8"), r"line 3: review_bot_origin: .*less than or equal to 1"),
    (POLICY.replace("    tags: [vendor-x]", "    tagz: [vendor-x]"), r"line 13: sources\.strict-bot\.tagz: Extra inputs"),
    (POLICY.replace("tag_bot_origin: 0.2", "tag_bot_origin: 0.9"), r"line 11: sources\.strict-bot\.tag_bot_origin <= review"),
    (POLICY.replace("declared_bot: block", "declared_bot: delete"), r"line 12: sources\.strict-bot\.declared_bot: Input should be 'tag' or 'block'"),
    (POLICY.replace("  max_share: 0.2\n", ""), r"line 6: synthetic_budget\.max_share: Field required"),
    ("version: [unclosed\n", r"line 2: not valid YAML"),
])
def test_policy_file_errors_name_line_and_field(tmp_path, text, expected):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy_file(path)
    assert str(path) in str(err.value)
    assert re.search(expected, str(err.value)), str(err.value)


def test_the_shipped_example_policy_loads():
    from pathlib import Path
    example = Path(__file__).resolve().parents[1] / "deploy" / "policy.example.yaml"
    assert load_policy_file(example).sources


# --- the rules -------------------------------------------------------------------------------

def test_thresholds_and_the_deciding_reason_first(policy):
    assert policy.decide(make(), scored(0.1)).decision is Decision.ACCEPT
    assert policy.decide(make(), scored(0.6)).decision is Decision.TAG
    assert policy.decide(make(), scored(0.85)).decision is Decision.REVIEW
    out = policy.decide(make(), scored(0.85, rep=0.95))
    assert out.decision is Decision.BLOCK and out.reasons[0].startswith("repetitive:")
    assert out.reasons[1].startswith("bot_origin_high:")
    assert "gated" in out.tags


def test_a_reason_names_the_turn_whose_wording_was_seen_before_with_other_names_and_numbers():
    """The shipped model and the corpus memory: a template filled with other values each time is
    one turn to the memory, and the reason tells the reviewer so."""
    template = "Your table for {} at {} is booked for {} at {} pm, we look forward to seeing you."
    fills = [(2, "Nando's", "Friday", 7), (4, "The Ivy", "Monday", 8), (3, "Zizzi", "Sunday", 6), (6, "Dishoom", "Friday", 9)]
    transcripts = [Transcript(f"t{i}", "acme", (Turn(Role.CUSTOMER, f"can I book a table for {n} please?"),
                                                Turn(Role.AGENT, template.format(n, place, day, hour))))
                   for i, (n, place, day, hour) in enumerate(fills)]
    out = Scorer(BotOriginModel(default_model_path())).score(transcripts)
    assert [o.scores.turns[1].seen_before for o in out] == [0, 1, 2, 3]
    always = Policy(PolicySettings(tag_bot_origin=0.0, review_bot_origin=0.99, block_bot_origin=0.999))
    reason = always.decide(transcripts[-1], out[-1]).reasons[0]
    assert "turn 1 (agent, " in reason and "its wording seen in 3 earlier transcripts, names and numbers aside" in reason


def test_per_source_overrides_change_thresholds_tags_and_declared_actions(policy):
    out = policy.decide(make("strict-bot"), scored(0.3))
    assert out.decision is Decision.TAG and out.tags[:2] == ("gated", "vendor-x")
    assert policy.decide(make("acme"), scored(0.3)).decision is Decision.ACCEPT
    assert policy.decide(make("strict-bot", DeclaredOrigin.BOT), scored(0.0)).decision is Decision.BLOCK
    assert policy.decide(make("acme", DeclaredOrigin.BOT), scored(0.0)).decision is Decision.TAG


def test_declared_bot_is_decided_without_the_model(policy):
    for bot in (0.0, 0.99):
        out = policy.decide(make(declared=DeclaredOrigin.SYNTHETIC), scored(bot, rep=0.99))
        assert out.decision is Decision.TAG and len(out.reasons) == 1
        assert out.reasons[0].startswith("declared_synthetic:") and "model was not asked" in out.reasons[0]


def test_declared_human_scored_machine_goes_to_review():
    policy = Policy(PolicySettings(declared_human_scored_machine="review", review_bot_origin=0.8,
                                   block_bot_origin=0.99))
    out = policy.decide(make(declared=DeclaredOrigin.HUMAN), scored(0.9))
    assert out.decision is Decision.REVIEW and "origin_conflict" in out.tags
    assert any(r.startswith("declared_human_scored_machine:") for r in out.reasons)
    strict = Policy(PolicySettings(declared_human_scored_machine="block"))
    assert strict.decide(make(declared=DeclaredOrigin.HUMAN), scored(0.85)).decision is Decision.BLOCK


# --- the real-data floor ---------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_floor_turns_accepts_into_tags_past_the_budget_and_forgets_after_the_window(policy):
    clock = Clock()
    windows = SyntheticBudgetWindows(clock=clock)
    decisions = []
    for p in [0.1, 0.3, 0.3, 0.3, 0.1, 0.1]:  # running share if accepted: .1 .2 .233 .25 .2 .183
        out = policy.decide(make(), scored(p), windows, reserve=True)
        decisions.append(out.decision)
    assert decisions == [Decision.ACCEPT, Decision.ACCEPT, Decision.TAG, Decision.TAG, Decision.ACCEPT,
                         Decision.ACCEPT]
    tagged = policy.decide(make(), scored(0.45), windows)
    assert "synthetic_budget" in tagged.tags and tagged.reasons[0].startswith("synthetic_budget:")
    assert windows.share("acme", 3600) == pytest.approx((0.1 + 0.3 + 0.1 + 0.1) / 4)
    assert policy.decide(make(), scored(0.45), windows, reserve=False).decision is Decision.TAG
    assert windows.share("acme", 3600) == pytest.approx(0.15)  # a preview reserves nothing
    clock.now += 3600 + 61  # the window has moved past every bucket
    assert windows.share("acme", 3600) == 0.0
    assert policy.decide(make(), scored(0.19), windows, reserve=True).decision is Decision.ACCEPT
    # strict-bot has its own, smaller budget
    assert policy.decide(make("strict-bot"), scored(0.1), windows).decision is Decision.TAG


async def test_the_floor_survives_a_restart_and_ignores_retries(tmp_path):
    path = tmp_path / "policy.yaml"
    # the twelve agent turns are one template (digits fold): repetitiveness thresholds off, to test the floor
    path.write_text("version: floor-1\ntag_bot_origin: 0.9\nreview_bot_origin: 0.95\nblock_bot_origin: 0.99\n"
                    "tag_repetitiveness: 1.0\nblock_repetitiveness: 1.0\n"
                    "synthetic_budget: {max_share: 1.0, window_seconds: 86400}\n")
    settings = make_settings(tmp_path, policy_file=str(path))
    batch = [transcript(f"f{i}", "hello, my order number 12 is late", f"Sorry about order {i}, checking now.",
                        source="acme") for i in range(12)]
    async with EchogateServer(settings) as srv, AsyncClient(srv.address) as client:
        first = await client.gate(batch)
        share = srv.core.budget.share("acme", 86400)
        await client.gate(batch)  # retries: stored verdicts come back, the window must not count them again
        assert srv.core.budget.share("acme", 86400) == pytest.approx(share)
    accepted = [v.bot_origin for v in first if v.decision == pb.DECISION_ACCEPT]
    assert len(accepted) >= 6
    assert share == pytest.approx(sum(accepted) / len(accepted), rel=1e-5)
    async with EchogateServer(settings) as srv:  # a new process rebuilds the window from the store
        assert srv.core.budget.share("acme", 86400) == pytest.approx(share, rel=1e-5)
        assert srv.core.budget._windows["acme"].count == len(accepted)
        text = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics").read().decode()
    assert 'echogate_synthetic_budget_max_share{source="acme"} 1.0' in text


# --- reload ----------------------------------------------------------------------------------

async def test_reload_swaps_a_valid_policy_and_keeps_the_old_one_on_errors(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: v1\ntag_bot_origin: 0.5\n")
    settings = make_settings(tmp_path, policy_file=str(path))
    async with EchogateServer(settings) as srv, AsyncClient(srv.address) as client:
        [before] = await client.score([transcript("r1", "hi", "hello there, how can I help you today?")])
        assert before.policy_version == "v1"
        path.write_text("version: v2\ntag_bot_origin: 0.0\nreview_bot_origin: 0.99\nblock_bot_origin: 0.999\n")
        reply = await client.stub.Reload(pb.ReloadRequest())
        assert reply.policy_version == "v2" and reply.model_version == before.model_version
        [after] = await client.score([transcript("r1", "hi", "hello there, how can I help you today?")])
        assert after.policy_version == "v2" and after.decision == pb.DECISION_TAG

        path.write_text("version: v3\ntag_bot_origin: 2\n")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.Reload(pb.ReloadRequest())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "line 2: tag_bot_origin" in err.value.details() and "still serving" in err.value.details()
        srv.settings.model_path = str(tmp_path / "missing.onnx")
        path.write_text("version: v4\n")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.Reload(pb.ReloadRequest())
        assert "model file not found" in err.value.details()  # a bad model keeps the new policy out too
        info = await client.server_info()
        assert info.policy_version == "v2"


def test_sighup_reloads_the_policy_of_a_running_server(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: hup-1\n")
    config = tmp_path / "echogate.yaml"
    config.write_text(f"policy_file: {path}\nstore: {{url: {tmp_path / 'hup.db'}}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "echogate_client.cli", "serve", "--port", "0",
                             "--metrics-port", "0", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        address = None
        deadline = time.monotonic() + 60
        while address is None and time.monotonic() < deadline:
            if match := re.search(r"listening on (\S+)", proc.stderr.readline()):
                address = match.group(1)
        with grpc.insecure_channel(address) as channel:
            stub = gate_pb2_grpc.QualityGateStub(channel)
            assert stub.GetServerInfo(pb.GetServerInfoRequest()).policy_version == "hup-1"
            path.write_text("version: hup-2\n")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while stub.GetServerInfo(pb.GetServerInfoRequest()).policy_version != "hup-2":
                assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
