"""Tracing, OTel metrics and JSON logs for every Cairn process, set up once at start-up.

A service calls `setup_telemetry(name, settings)` first thing; handlers wrap their work in
`correlation_context(envelope.correlation_id)` so every log line of one workflow can be found by
its `correlation_id`, and every line written inside a span carries its `trace_id` / `span_id`.
Prometheus metrics are served by `cairn.http` (prometheus-client), not by OTel.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from cairn import __version__
from cairn.settings import CairnSettings

__all__ = [
    "JsonFormatter",
    "correlation_context",
    "current_correlation_id",
    "get_tracer",
    "setup_telemetry",
]

_correlation_id: ContextVar[str | None] = ContextVar("cairn_correlation_id", default=None)

# Attributes every LogRecord has; anything else came in through `extra=` and is worth printing.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "service",
    "correlation_id",
    "trace_id",
    "span_id",
    "taskName",
}

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(service)s %(correlation_id)s] %(message)s"


@dataclass(frozen=True)
class _Configured:
    service_name: str
    otel_exporter: str
    otel_endpoint: str | None


_state: _Configured | None = None


def current_correlation_id() -> str | None:
    """The correlation id of the event or request being handled, if any."""
    return _correlation_id.get()


@contextmanager
def correlation_context(correlation_id: str | None) -> Iterator[None]:
    """Tag every log line (and the current span) written inside the block with `correlation_id`."""
    token = _correlation_id.set(correlation_id)
    if correlation_id is not None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("cairn.correlation_id", correlation_id)
    try:
        yield
    finally:
        _correlation_id.reset(token)


def get_tracer(name: str) -> trace.Tracer:
    """A tracer from the global provider (a no-op one until `setup_telemetry` ran)."""
    return trace.get_tracer(name, __version__)


class _ContextFilter(logging.Filter):
    """Stamp each record with the service, correlation id and active span before formatting."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service_name
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = _correlation_id.get()
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = None
            record.span_id = None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is now, so a replaced stream (tests, daemons) still works."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class JsonFormatter(logging.Formatter):
    """One JSON object per line, so log shippers need no parsing rules."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": getattr(record, "service", None),
            "correlation_id": getattr(record, "correlation_id", None),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            line["trace_id"] = trace_id
            line["span_id"] = getattr(record, "span_id", None)
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str, ensure_ascii=False)


def _otlp_url(endpoint: str | None, signal: str) -> str | None:
    """The per-signal OTLP/HTTP URL; None lets the exporter read the OTEL_* environment."""
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    suffix = f"/v1/{signal}"
    return base if base.endswith(suffix) else base + suffix


def _span_exporter(settings: CairnSettings) -> SpanExporter | None:
    if settings.otel_exporter == "console":
        return ConsoleSpanExporter()
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=_otlp_url(settings.otel_endpoint, "traces"))
    return None


def _metric_readers(settings: CairnSettings) -> list[MetricReader]:
    exporter: MetricExporter
    if settings.otel_exporter == "console":
        exporter = ConsoleMetricExporter()
    elif settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(endpoint=_otlp_url(settings.otel_endpoint, "metrics"))
    else:
        return []
    return [PeriodicExportingMetricReader(exporter)]


def _setup_providers(service_name: str, settings: CairnSettings) -> None:
    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    # A provider exists even with exporter "none": spans still get ids, so logs and Kafka
    # headers keep carrying trace context across hops.
    tracer_provider = TracerProvider(resource=resource)
    exporter = _span_exporter(settings)
    if exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=_metric_readers(settings))
    )


def _setup_logging(service_name: str, settings: CairnSettings) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cairn", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler._cairn = True  # type: ignore[attr-defined]
    handler.addFilter(_ContextFilter(service_name))
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter(_TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())


def setup_telemetry(service_name: str, settings: CairnSettings) -> None:
    """Install the tracer and meter providers and the log handler for this process (idempotent).

    OpenTelemetry allows one global provider per process, so a second call only re-applies the
    log settings; exporters chosen by the first call stay.

    Args:
        service_name: `service.name` of the OTel resource and the `service` field of log lines.
        settings: `otel_exporter` (console, otlp, none), `otel_endpoint`, `log_json`, `log_level`.
    """
    global _state
    wanted = _Configured(service_name, settings.otel_exporter, settings.otel_endpoint)
    if _state is None:
        _setup_providers(service_name, settings)
        _state = wanted
    elif _state != wanted:
        logging.getLogger(__name__).debug(
            "telemetry already set up for %s; keeping its exporters", _state.service_name
        )
    _setup_logging(service_name, settings)
