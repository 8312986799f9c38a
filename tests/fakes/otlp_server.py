"""A local OTLP/HTTP trace receiver: ``POST /v1/traces`` with a protobuf
``ExportTraceServiceRequest``, answered as a collector does; spans kept for assertions."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.fakes.local_server import LocalServer


class FakeCollector(LocalServer):
    def __init__(self) -> None:
        super().__init__()
        self.spans: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.app.router.add_post("/v1/traces", self._traces)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}.get("service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attrs = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append({"service": service, "name": span.name, "trace": span.trace_id.hex(),
                                       "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                       "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                                       "attributes": attrs})  # fmt: skip
        self.arrived.set()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")  # fmt: skip


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None
