"""Who may call what: TLS and mutual TLS with a plain health port, token scopes and sources, and
the audit log, against a real server (certificates made by openssl for each run)."""
from __future__ import annotations

import json
import shutil
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from echogate.grpc_api.server import EchogateServer
from echogate.security import hash_token
from echogate.settings import SecuritySettings
from echogate.types import Role, Transcript, Turn
from echogate.v1 import gate_pb2 as pb
from echogate_client.client import AsyncClient, tls_credentials
from echogate_client.cli import main
from tests.conftest import make_settings, transcript

TOKENS = {"ingest-acme": (["ingest"], ["acme"]), "reader-acme": (["read"], ["acme"]),
          "reader-all": (["read", "review"], []), "admin": (["admin"], [])}


def secret(name: str) -> str:
    return f"secret-of-{name}"


@pytest.fixture
def tokens_settings(tmp_path):
    return make_settings(tmp_path, security={
        "tokens": [{"name": n, "sha256": hash_token(secret(n)), "scopes": scopes, "sources": sources}
                   for n, (scopes, sources) in TOKENS.items()],
        "audit_log": str(tmp_path / "audit.jsonl")})


async def test_no_or_unknown_token_is_unauthenticated(tokens_settings):
    async with EchogateServer(tokens_settings) as srv:
        for token in (None, "not-a-token"):
            async with AsyncClient(srv.address, token=token) as client:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await client.gate([transcript("a", "hi", source="acme")])
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with grpc.aio.insecure_channel(srv.address) as channel:  # health needs no token
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_scopes_and_sources_keep_platforms_apart(tokens_settings):
    async with EchogateServer(tokens_settings) as srv:
        async with AsyncClient(srv.address, token=secret("ingest-acme")) as ingest:
            [v] = await ingest.gate([transcript("a1", "hi there", "hello, how can I help?", source="acme")])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ingest.gate([transcript("b1", "hi", source="acme"), transcript("b2", "hi", source="beta")])
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "'beta'" in err.value.details() and "transcripts[1]" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ingest.get_record(v.record_id)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "'read' scope" in err.value.details()
        async with AsyncClient(srv.address, token=secret("reader-all")) as reader_all:
            assert (await reader_all.get_record(v.record_id)).transcript.id == "a1"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await reader_all.gate([transcript("c1", "hi", source="acme")])
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await srv.core.gate([Transcript("b9", "beta", (Turn(Role.AGENT, "hello there, another platform"),))])
        async with AsyncClient(srv.address, token=secret("reader-acme")) as reader:
            records = [r async for r in reader.query_records()]  # narrowed to its own sources
            assert [r.transcript.source for r in records] == ["acme"]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [r async for r in reader.query_records(pb.RecordFilter(sources=["beta"]))]
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert (await reader.count_records()).total == 1
        async with AsyncClient(srv.address, token=secret("admin")) as admin:
            assert (await admin.stub.Reload(pb.ReloadRequest(), metadata=admin.metadata)).policy_version
    audit = [json.loads(line) for line in open(tokens_settings.security.audit_log)]
    actions = [(e["who"], e["action"]) for e in audit]
    assert ("reader-acme", "query_records") in actions and ("admin", "reload") in actions


async def test_a_read_token_cannot_see_another_sources_record(tokens_settings):
    async with EchogateServer(tokens_settings) as srv:
        [beta] = await srv.core.gate([Transcript("x", "beta", (Turn(Role.AGENT, "hello there friend"),))])
        async with AsyncClient(srv.address, token=secret("reader-acme")) as reader:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await reader.get_record(beta.record_id)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_cli_exports_and_purges_are_audited(tmp_path, capsys):
    config = tmp_path / "echogate.yaml"
    config.write_text(f"store: {{url: {tmp_path / 'a.db'}}}\nsecurity: {{audit_log: {tmp_path / 'audit.jsonl'}}}\n")
    assert main(["export", "--config", str(config), "--format", "jsonl", str(tmp_path / "out.jsonl")]) == 0
    assert main(["purge", "--config", str(config), "--older-than", "30"]) == 0
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in entries] == ["export", "purge"]
    assert all(e["who"].startswith("local:") and e["time"] for e in entries)


def test_token_command_prints_a_settings_entry_that_validates(capsys):
    import yaml

    
    assert main(["token", "--name", "acme-bot", "--scopes", "ingest", "--sources", "acme"]) == 0
    out = capsys.readouterr()
    token = out.err.rsplit(" ", 1)[1].strip()
    security = SecuritySettings.model_validate(yaml.safe_load(out.out)["security"])
    assert security.tokens[0].sha256 == hash_token(token) and token not in out.out


# --- TLS ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, via openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=echogate test CA")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=echogate {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext")
    return d


async def test_tls_serves_encrypted_and_health_stays_plain_on_its_port(tmp_path, pki):
    settings = make_settings(tmp_path, security={
        "tls": {"cert_file": str(pki / "server.pem"), "key_file": str(pki / "server.key")}, "health_port": 0})
    async with EchogateServer(settings) as srv:
        async with AsyncClient(srv.address, credentials=tls_credentials(str(pki / "ca.pem")), timeout_s=5) as client:
            [v] = await client.gate([transcript("tls1", "hello", "hi, how can I help?")])
            assert v.record_id
        async with AsyncClient(srv.address, timeout_s=2) as plain:  # plain text to the TLS port fails
            plain.retry = type(plain.retry)(attempts=1)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await plain.gate([transcript("tls2", "hello")])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.health_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_mutual_tls_turns_away_clients_without_a_certificate(tmp_path, pki):
    settings = make_settings(tmp_path, security={"tls": {
        "cert_file": str(pki / "server.pem"), "key_file": str(pki / "server.key"),
        "client_ca_file": str(pki / "ca.pem")}})
    async with EchogateServer(settings) as srv:
        no_cert = tls_credentials(str(pki / "ca.pem"))
        async with AsyncClient(srv.address, credentials=no_cert, timeout_s=2) as client:
            client.retry = type(client.retry)(attempts=1)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.gate([transcript("m1", "hello")])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with_cert = tls_credentials(str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"))
        async with AsyncClient(srv.address, credentials=with_cert, timeout_s=5) as client:
            [v] = await client.gate([transcript("m2", "hello", "hi there, what can I do?")])
            assert v.record_id
