"""OpenTelemetry spans across the hop: one trace from the producer's Kafka record, through ingest, to
the subscriber's HTTP request.

Off unless the standard variables ask for export — ``OTEL_TRACES_EXPORTER=otlp``, or an
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (and not
``OTEL_SDK_DISABLED=true``) — or a tracer is injected (tests). Off, it costs a ``None`` check per
record and per POST, and Relay still passes a producer's ``traceparent`` on (``relay/tracing.py``).

On, ingest opens a ``relay.ingest`` span per record — the child of the record's ``traceparent``, or the
root of a new trace when it has none — and stores its context with the event; each POST is a
``relay.deliver`` span, child of that, carrying the event ids, callback id, attempt, batch size and
the endpoint's status, and its context goes out as the POST's ``traceparent``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from relay import tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

_PROPAGATOR = TraceContextTextMapPropagator()


def export_wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return (env.get("OTEL_TRACES_EXPORTER", "").lower() == "otlp"
            or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")))


class DeliverySpan:
    """One POST's span: its ``traceparent`` goes out with the request; ``finish`` records the answer."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        self.traceparent = carrier.get(tracing.HEADER)

    def finish(self, status: int | None, outcome: str, error: str | None) -> None:
        if status is not None:
            self._span.set_attribute("http.response.status_code", status)
        self._span.set_attribute("relay.outcome", outcome)
        if error is not None or outcome != "delivered":
            self._span.set_status(Status(StatusCode.ERROR, error or outcome))
        self._span.end()


class Telemetry:
    def __init__(self, tracer: trace.Tracer | None = None, provider: TracerProvider | None = None) -> None:
        self._tracer = tracer
        self._provider = provider

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Telemetry:
        if not export_wanted(os.environ if env is None else env):
            return cls()
        # The SDK and the exporter load only when exporting: off, start-up stays as it was.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "relay"}))  # OTEL_* refine it
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider.get_tracer("relay"), provider)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def ingested(self, traceparent: str | None, event_id: str, account_id: str, event_type: str, topic: str,
                 partition: int, offset: int) -> str | None:
        """The context to store with the event: a ``relay.ingest`` span's, child of the producer's."""
        if self._tracer is None:
            return traceparent
        parent = _PROPAGATOR.extract({tracing.HEADER: traceparent}) if traceparent else None
        span = self._tracer.start_span("relay.ingest", context=parent, kind=SpanKind.CONSUMER, attributes={
            "messaging.system": "kafka", "messaging.destination.name": topic,
            "messaging.kafka.destination.partition": partition, "messaging.kafka.message.offset": offset,
            "relay.event_id": event_id, "relay.account_id": account_id, "relay.event_type": event_type,
        })
        span.end()
        return DeliverySpan(span).traceparent

    def delivering(self, traceparent: str | None, callback_id: str, event_ids: Sequence[str], attempt: int,
                   webhook_id: str) -> DeliverySpan | None:
        if self._tracer is None:
            return None
        parent = _PROPAGATOR.extract({tracing.HEADER: traceparent}) if traceparent else None
        attributes: dict[str, Any] = {
            "relay.callback_id": callback_id, "relay.event_ids": list(event_ids[:50]),
            "relay.batch_size": len(event_ids), "relay.attempt": attempt, "relay.webhook_id": webhook_id,
        }
        return DeliverySpan(self._tracer.start_span("relay.deliver", context=parent, kind=SpanKind.PRODUCER,
                                                    attributes=attributes))

    def close(self) -> None:
        """Flush what is buffered (bounded by the exporter's own timeout)."""
        if self._provider is not None:
            self._provider.shutdown()
