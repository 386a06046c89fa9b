"""One trace per request across tiers: W3C `traceparent` in the record headers, an OpenTelemetry span per tier.

Off by default (`Settings.tracing.enabled`). When on, each tier records one span per request it decides on
(`tierflow.<tier>`: from the batch's receipt to the decision, with the exit, confidence and action as
attributes); its parent is the `traceparent` header of the record (set by a device, or by the tier below
when it forwarded), and a forward carries this span's `traceparent` on, so a request the cloud answers is
one trace of three tier spans. Sampling is parent-based with `tracing.sample_ratio` for new traces. Spans go
to an OTLP/HTTP collector, or as JSON lines to a file (`tracing.file`, `{tier}` is replaced), batched off
the worker's loop by the SDK's BatchSpanProcessor.
"""

from __future__ import annotations

import re
from typing import Any

from runtime.settings import Settings

TRACEPARENT = "traceparent"
_TRACEPARENT = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class TierTracer:
    """The spans of one tier worker; `None` from `for_worker` when tracing is off (then nothing is done)."""

    def __init__(self, settings: Settings, tier: str, version: str):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace import SpanKind

        t = settings.tracing
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": f"tierflow-{tier}", "service.namespace": settings.app,
                                      "service.version": version, "tierflow.tier": tier}),
            sampler=ParentBased(TraceIdRatioBased(t.sample_ratio)))
        self.provider.add_span_processor(BatchSpanProcessor(_exporter(settings, tier)))
        self.tracer = self.provider.get_tracer("tierflow.worker")
        self.name, self.tier, self.version = f"tierflow.{tier}", tier, version
        self._consumer_kind = SpanKind.CONSUMER

    @classmethod
    def for_worker(cls, settings: Settings, tier: str, version: str) -> TierTracer | None:
        return cls(settings, tier, version) if settings.tracing.enabled else None

    def decided(self, record: Any, request_id: str, received_ms: int, action: str, exit_id: int,
                confidence: float) -> tuple[str, bytes] | None:
        """Record this tier's span for one request; returns the `traceparent` header a forward carries on
        (None when the trace is not sampled)."""
        parent = _parent(record.headers())
        span = self.tracer.start_span(self.name, context=parent, kind=self._consumer_kind,
                                      start_time=received_ms * 1_000_000, attributes={
                                          "tierflow.request_id": request_id, "tierflow.tier": self.tier,
                                          "tierflow.version": self.version, "tierflow.action": action,
                                          "tierflow.exit": exit_id, "tierflow.confidence": float(confidence),
                                          "messaging.kafka.topic": record.topic() or "",
                                          "messaging.kafka.offset": record.offset() or 0})
        span.end()
        ctx = span.get_span_context()
        if not ctx.trace_flags.sampled:
            return None
        return TRACEPARENT, f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01".encode()

    def shutdown(self) -> None:
        """Export what is buffered (on worker stop)."""
        self.provider.shutdown()


def _parent(headers: list[tuple[str, bytes]] | None) -> Any:
    """The context of a record's `traceparent` header (None: a new trace)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    for key, value in headers or ():
        if key == TRACEPARENT and value:
            m = _TRACEPARENT.match(value.strip().lower())
            if m and int(m.group(1), 16) and int(m.group(2), 16):
                sc = SpanContext(int(m.group(1), 16), int(m.group(2), 16), is_remote=True,
                                 trace_flags=TraceFlags(int(m.group(3), 16)))
                return trace.set_span_in_context(NonRecordingSpan(sc))
    return None


def _exporter(settings: Settings, tier: str) -> Any:
    t = settings.tracing
    if t.exporter == "file":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        path = (t.file or str(settings.home / "traces" / "{tier}.jsonl")).replace("{tier}", tier)
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the exporter
        return ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=t.otlp_endpoint)
