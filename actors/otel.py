"""OpenTelemetry export of turns (seeds/002): one span per turn, a child span per hop.

On only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; the SDK's own variables apply
(``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_SCHEDULE_DELAY``…). Spans go over OTLP/HTTP
(protobuf) from a batch processor, so exporting never blocks the sink.
"""

from __future__ import annotations

from typing import Any

from brain.ledger import SUMMARY, Turn


class TurnTracer:
    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._provider = TracerProvider(resource=Resource.create({"service.name": "greenroom"}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("greenroom.telemetry")

    def export(self, turn: Turn) -> None:
        """The turn as a span from its zero to its last hop; each hop a child span from the hop before it."""
        from opentelemetry import trace

        hops = sorted(turn.hops.items(), key=lambda kv: kv[1])
        if not hops:
            return
        start = int(turn.zero * 1e9)
        end = max(start, int(hops[-1][1] * 1e9))
        attributes: dict[str, Any] = {
            "greenroom.session": turn.session, "greenroom.turn": turn.turn, "greenroom.source": turn.source,
            "greenroom.character": turn.character, "greenroom.provider": turn.provider,
            "greenroom.interrupted": turn.interrupted,
        }  # fmt: skip
        for name, hop in SUMMARY.items():
            value = turn.ms(hop)
            if value is not None:
                attributes[f"greenroom.{name}"] = value
        span = self._tracer.start_span("turn", start_time=start, attributes=attributes)
        context = trace.set_span_in_context(span)
        previous = start
        for hop, ts in hops:
            at = max(previous, int(ts * 1e9))
            child = self._tracer.start_span(
                hop, context=context, start_time=previous, attributes={"greenroom.ms_after_input": turn.ms(hop) or 0.0}
            )
            child.end(end_time=at)
            previous = at
        span.end(end_time=end)

    def close(self) -> None:
        self._provider.shutdown()  # flushes what is batched
