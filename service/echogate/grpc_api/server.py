"""Server assembly and lifecycle.

`EchogateServer` is an async context manager: tests start a real server on a free port
(port 0) and talk to it over a real channel. `serve()` runs one until SIGTERM/SIGINT and
shuts down gracefully: health NOT_SERVING first (load balancers stop sending), then
in-flight calls drain within the grace period, then the store commits what is queued.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from echogate.gate import GateCore
from echogate.grpc_api.interceptor import ServerInterceptor
from echogate.grpc_api.servicer import QualityGateServicer
from echogate.metrics import Metrics
from echogate.security import Authenticator
from echogate.settings import Settings, TLSSettings
from echogate.store import open_store
from echogate.v1 import gate_pb2, gate_pb2_grpc

log = logging.getLogger("echogate")

SERVICE_NAME = gate_pb2.DESCRIPTOR.services_by_name["QualityGate"].full_name


class EchogateServer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.core: GateCore | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._metrics: Metrics | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> "EchogateServer":
        s = self.settings
        self._metrics = Metrics()
        store = open_store(s.store.url, max_group=s.store.max_group)
        try:
            self.core = GateCore(s, self._metrics, store)
        except Exception:
            store.close()
            raise
        # The transport limit sits above the configured one so that an oversized message
        # reaches validation and gets INVALID_ARGUMENT with details, not a bare transport error.
        transport_limit = s.limits.max_message_bytes + 1024 * 1024
        self._server = grpc.aio.server(
            interceptors=[ServerInterceptor(self._metrics, Authenticator(s.security))],
            options=[("grpc.max_receive_message_length", transport_limit),
                     ("grpc.max_send_message_length", transport_limit),
                     ("grpc.max_connection_age_ms", int(s.max_connection_age_seconds * 1000)),
                     ("grpc.max_connection_age_grace_ms", int(s.max_connection_age_grace_seconds * 1000))],
        )
        gate_pb2_grpc.add_QualityGateServicer_to_server(QualityGateServicer(self.core), self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server)
        tls = s.security.tls
        if tls is None:
            self.port = self._server.add_insecure_port(f"{s.host}:{s.port}")
        else:
            self.port = self._server.add_secure_port(f"{s.host}:{s.port}", _server_credentials(tls))
        await self._server.start()
        if s.security.health_port is not None:
            # probes cannot present client certificates: health alone, in plain text, on its own port
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(f"{s.host}:{s.security.health_port}")
            await self._health_server.start()
        if s.metrics_port is not None:
            self.metrics_port = self._metrics.serve(s.host, s.metrics_port)
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("echogate listening on %s (metrics on port %s, model %s, store %s)", self.address,
                 self.metrics_port, self.core.model_version, s.store.url)
        return self

    async def stop(self, grace: float | None = None) -> None:
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(self.settings.grace_seconds if grace is None else grace)
        self._server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
        if self.core is not None:
            self.core.close()  # commits what is queued, then releases the store
        if self._metrics is not None:
            self._metrics.close()
        log.info("echogate stopped")

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> "EchogateServer":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop(grace=1.0)


def _server_credentials(tls: TLSSettings) -> grpc.ServerCredentials:
    """TLS credentials; with a client CA, clients must present a certificate it signed (mTLS)."""
    def read(path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()
    ca = read(tls.client_ca_file) if tls.client_ca_file else None
    return grpc.ssl_server_credentials([(read(tls.key_file), read(tls.cert_file))], root_certificates=ca,
                                       require_client_auth=ca is not None)


def tune_gc() -> None:
    """The model, settings and imports live for the whole process: move them out of the
    collector's view, and collect young objects less often. Every request allocates many
    short-lived objects; fewer, cheaper collections trim the latency tail."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads policy and model."""
    server = await EchogateServer(settings).start()
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    async def reload_and_audit() -> None:
        try:
            model_version, policy_version = await server.core.reload()
        except Exception as exc:  # noqa: BLE001 - reload() logged why; the old model and policy stay
            server.core.audit.record("signal:SIGHUP", "reload", ok=False, error=str(exc))
        else:
            server.core.audit.record("signal:SIGHUP", "reload", ok=True, model_version=model_version,
                                     policy_version=policy_version)

    def reload() -> None:  # SIGHUP: re-read policy and model; a failure is logged and changes nothing
        task = asyncio.create_task(reload_and_audit())
        reloads.add(task)
        task.add_done_callback(reloads.discard)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("shutting down (grace %.0fs)", settings.grace_seconds)
    await server.stop()
