"""One interceptor for every RPC: the caller's token, typed errors -> status codes, RED metrics.

Errors are mapped here and nowhere else: InvalidArgument -> INVALID_ARGUMENT with a
google.rpc.BadRequest detail, NotFound -> NOT_FOUND, FailedPrecondition ->
FAILED_PRECONDITION, Unauthenticated -> UNAUTHENTICATED, PermissionDenied -> PERMISSION_DENIED,
Overloaded -> RESOURCE_EXHAUSTED
with google.rpc.RetryInfo, Unavailable -> UNAVAILABLE. Anything else is INTERNAL with an
incident id; the exception text goes to the log, never to the caller.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from echogate.errors import EchogateError, FailedPrecondition, InvalidArgument, NotFound, Overloaded, Unavailable
from echogate.metrics import Metrics
from echogate.security import Authenticator, PermissionDenied, Unauthenticated, caller
from echogate.settings import SecuritySettings

log = logging.getLogger(__name__)


def _status(code: grpc.StatusCode, message: str, *details) -> tuple[grpc.StatusCode, str, tuple]:
    status = status_pb2.Status(code=code.value[0], message=message)
    for d in details:
        packed = any_pb2.Any()
        packed.Pack(d)
        status.details.append(packed)
    return code, message, (("grpc-status-details-bin", status.SerializeToString()),)


def map_error(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple]:
    if isinstance(exc, InvalidArgument):
        detail = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations])
        return _status(grpc.StatusCode.INVALID_ARGUMENT, str(exc), detail)
    if isinstance(exc, NotFound):
        return _status(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, Unauthenticated):
        return _status(grpc.StatusCode.UNAUTHENTICATED, str(exc))
    if isinstance(exc, PermissionDenied):
        return _status(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    if isinstance(exc, FailedPrecondition):
        return _status(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, Overloaded):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after_s * 1000))
        return _status(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), error_details_pb2.RetryInfo(retry_delay=delay))
    if isinstance(exc, Unavailable | EchogateError):
        return _status(grpc.StatusCode.UNAVAILABLE, str(exc))
    incident = uuid.uuid4().hex[:12]
    log.error("internal error, incident %s", incident, exc_info=exc)
    return _status(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the echogate service's handlers; health and reflection pass through untouched."""

    def __init__(self, metrics: Metrics, auth: Authenticator | None = None, service_prefix: str = "/echogate."):
        self.metrics = metrics
        self.auth = auth or Authenticator(SecuritySettings())  # no tokens: every call allowed
        self.service_prefix = service_prefix

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self.service_prefix):
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        metadata = details.invocation_metadata
        if handler.unary_unary:
            labels = ("unary", service, method)
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, labels, metadata, method),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_stream:
            labels = ("server_stream", service, method)
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, labels, metadata, method, streamed_requests=False),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.stream_stream:
            labels = ("bidi_stream", service, method)
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream, labels, metadata, method),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        return handler

    def _finish(self, labels: tuple, started: float, code: grpc.StatusCode) -> None:
        self.metrics.handled.labels(*labels, code.name).inc()
        self.metrics.handling.labels(*labels).observe(time.perf_counter() - started)

    async def _fail(self, context: grpc.aio.ServicerContext, labels: tuple, started: float, exc: BaseException):
        code, message, trailers = map_error(exc)
        self._finish(labels, started, code)
        context.set_trailing_metadata(trailers)
        await context.abort(code, message)

    def _unary(self, behavior, labels, metadata, method):
        async def wrapper(request, context):
            self.metrics.started.labels(*labels).inc()
            started = time.perf_counter()
            try:
                caller.set(self.auth.authenticate(metadata, method))  # this call's task sees its caller
                response = await behavior(request, context)
            except grpc.aio.AbortError:
                self._finish(labels, started, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
                await self._fail(context, labels, started, exc)
            else:
                self._finish(labels, started, grpc.StatusCode.OK)
                return response
        return wrapper

    def _stream(self, behavior, labels, metadata, method, streamed_requests: bool = True):
        metrics = self.metrics

        async def counted(requests: AsyncIterator):
            async for r in requests:
                metrics.msg_received.labels(*labels).inc()
                yield r

        async def wrapper(request, context):
            metrics.started.labels(*labels).inc()
            started = time.perf_counter()
            if streamed_requests:
                request = counted(request)
            else:
                metrics.msg_received.labels(*labels).inc()
            try:
                caller.set(self.auth.authenticate(metadata, method))
                async for response in behavior(request, context):
                    metrics.msg_sent.labels(*labels).inc()
                    yield response
            except grpc.aio.AbortError:
                self._finish(labels, started, context.code() or grpc.StatusCode.UNKNOWN)
                raise
            except Exception as exc:  # noqa: BLE001
                await self._fail(context, labels, started, exc)
            else:
                self._finish(labels, started, grpc.StatusCode.OK)
        return wrapper
