"""Endpoints: variants and weights, rollouts and their alarms (from the deployer), live traffic.

The page reads and changes endpoints through the console's proxy. One route of its own: an
endpoint's traffic per variant, read from the gateway's Prometheus `/metrics` (text, parsed with
prometheus_client's own parser) and answered as JSON the page can plot. The counters are
cumulative; the page turns two successive answers into requests/s, errors/s and the window's
p50/p99 (from the latency histogram's buckets), so this route keeps no state.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from cairn.auth import requires
from cairn.errors import Unavailable
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from prometheus_client.parser import text_string_to_metric_families

from services.console.areas import Area
from services.console.upstream import caller_headers, upstream_of

AREA = Area(name="endpoints", title="Endpoints", order=34, services=("deployer",))

router = APIRouter(prefix="/api/endpoints", tags=["console-endpoints"])
EndpointName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")]
INVOCATIONS = "cairn_gateway_invocations"
LATENCY = "cairn_gateway_invocation_duration_seconds"


def _variant(found: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return found.setdefault(
        name,
        {"variant": name, "ok": 0.0, "client_errors": 0.0, "errors": 0.0, "buckets": []},
    )


def variant_traffic(metrics_text: str, endpoint: str) -> list[dict[str, Any]]:
    """One endpoint's cumulative counters and latency buckets ([le_s, count]) per variant."""
    found: dict[str, dict[str, Any]] = {}
    outcomes = {"ok": "ok", "client_error": "client_errors", "error": "errors"}
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in (INVOCATIONS, LATENCY):
            continue
        for sample in family.samples:
            labels = sample.labels
            if labels.get("endpoint") != endpoint or "variant" not in labels:
                continue
            variant = _variant(found, labels["variant"])
            if sample.name == f"{INVOCATIONS}_total" and labels.get("outcome") in outcomes:
                variant[outcomes[labels["outcome"]]] += sample.value
            elif sample.name == f"{LATENCY}_bucket":
                variant["buckets"].append([float(labels["le"]), sample.value])
    for variant in found.values():
        variant["requests"] = variant["ok"] + variant["client_errors"] + variant["errors"]
        # JSON has no infinity: the +Inf bucket's bound is null (it is always the last).
        variant["buckets"] = [
            [bound if math.isfinite(bound) else None, count]
            for bound, count in sorted(variant["buckets"], key=lambda bucket: bucket[0])
        ]
    return sorted(found.values(), key=lambda variant: str(variant["variant"]))


@router.get("/{name}/traffic", dependencies=[requires("read")], response_model=None)
async def endpoint_traffic(name: EndpointName, request: Request) -> dict[str, Any] | JSONResponse:
    """`{"endpoint", "scraped_at", "variants": [...]}` from the gateway's metrics, as the caller."""
    answer = await upstream_of(request).call("gateway", "metrics", headers=caller_headers(request))
    if answer.status_code != 200:
        try:
            body = answer.json()
        except ValueError:
            body = {"error": answer.text[:500], "code": "gateway_error"}
        return JSONResponse(body, status_code=answer.status_code)
    try:
        variants = variant_traffic(answer.text, name)
    except ValueError as error:
        raise Unavailable(f"the gateway's metrics could not be parsed: {error}") from error
    return {"endpoint": name, "scraped_at": datetime.now(UTC).isoformat(), "variants": variants}
