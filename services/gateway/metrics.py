"""Traffic per endpoint and variant: Prometheus series and the EndpointMetricsReported window.

The request path touches only pre-bound metric children and appends one latency to a list; the
reporter swaps the window out every few seconds and computes percentiles off the request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS_S = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_MAX_WINDOW_SAMPLES = 100_000

INVOCATIONS = Counter(
    "cairn_gateway_invocations",
    "Invocations answered, by endpoint, variant and outcome (ok, client_error, error).",
    ["endpoint", "variant", "outcome"],
)
INVOCATION_LATENCY = Histogram(
    "cairn_gateway_invocation_duration_seconds",
    "Time from the request body to the answer, by endpoint and variant.",
    ["endpoint", "variant"],
    buckets=_LATENCY_BUCKETS_S,
)
BATCH_ROWS = Histogram(
    "cairn_gateway_batch_rows",
    "Rows per predict call (micro-batching stacks concurrent requests), by model.",
    ["model"],
    buckets=_BATCH_BUCKETS,
)
MODEL_LOAD_SECONDS = Histogram(
    "cairn_gateway_model_load_duration_seconds",
    "Time to download, verify and load a model package.",
    ["model"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


@dataclass
class VariantWindow:
    """Traffic of one variant since the last report."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class VariantMeter:
    """Everything a request records for one (endpoint, variant), bound once."""

    __slots__ = ("_client_errors", "_errors", "_latency", "_ok", "endpoint", "variant", "window")

    def __init__(self, endpoint: str, variant: str) -> None:
        self.endpoint = endpoint
        self.variant = variant
        self._ok = INVOCATIONS.labels(endpoint, variant, "ok")
        self._client_errors = INVOCATIONS.labels(endpoint, variant, "client_error")
        self._errors = INVOCATIONS.labels(endpoint, variant, "error")
        self._latency = INVOCATION_LATENCY.labels(endpoint, variant)
        self.window = VariantWindow()

    def observe(self, elapsed_s: float, status: int) -> None:
        window = self.window
        window.requests += 1
        if status < 400:
            self._ok.inc()
        elif status < 500:
            self._client_errors.inc()
        else:
            self._errors.inc()
            window.errors += 1
        self._latency.observe(elapsed_s)
        if len(window.latencies_ms) < _MAX_WINDOW_SAMPLES:
            window.latencies_ms.append(elapsed_s * 1000.0)

    def take_window(self) -> VariantWindow:
        window, self.window = self.window, VariantWindow()
        return window


def percentiles_ms(latencies_ms: list[float]) -> tuple[float, float]:
    """p50 and p99 of a window (0, 0 when empty)."""
    if not latencies_ms:
        return 0.0, 0.0
    p50, p99 = np.percentile(np.asarray(latencies_ms), [50, 99])
    return float(p50), float(p99)
