"""The standard health service and server reflection answer; shutdown flips health first."""
from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from echogate.grpc_api.server import SERVICE_NAME, EchogateServer


async def test_health_serving_for_server_and_service(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_and_describes_the_api(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask(**kw):
            async for resp in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kw)])):
                return resp

        listed = await ask(list_services="")
        names = {s.name for s in listed.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
        described = await ask(file_containing_symbol=SERVICE_NAME)
        assert described.file_descriptor_response.file_descriptor_proto


async def test_shutdown_reports_not_serving_before_stopping(settings):
    srv = await EchogateServer(settings).start()
    async with grpc.aio.insecure_channel(srv.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(srv.stop(grace=2.0))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping
