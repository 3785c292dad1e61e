"""KServe's v1 protocol on a gateway: what the `/v1/models/{m}` routes perform.

Mapping as in v2: a v1 model `m` is a Cairn endpoint and the traffic weights pick the variant.
`{"instances": [...]}` holds rows (signature order) or records (by column name), as a SageMaker
JSON body does; the answer is `{"predictions": [...]}`, one value per row (a list per row for a
multi-column output), and `:explain` adds the per-feature `explanations` the SageMaker route gives.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cairn.errors import InvalidInput
from cairn.inference import encode_items, instances

from services.gateway.capture import Captured
from services.gateway.gateway import Gateway
from services.gateway.runtime import EndpointRuntime, VariantRuntime
from services.gateway.v2 import JSON, lookup, metered


def model_ready(gateway: Gateway, model: str) -> dict[str, Any]:
    """`GET /v1/models/{m}`: a deployed model is ready (its variants load before they serve)."""
    endpoint, _ = lookup(gateway, model, None)
    return {"name": endpoint.name, "ready": True}


async def predict(gateway: Gateway, model: str, raw: bytes, *, explain: bool) -> bytes:
    """`POST /v1/models/{m}:predict` (or `:explain`): the response body; metered per variant."""

    async def run(endpoint: EndpointRuntime, variant: VariantRuntime) -> bytes:
        return await _predict(gateway, endpoint, variant, raw, explain)

    return await metered(gateway, model, None, raw, run)


async def _predict(
    gateway: Gateway, endpoint: EndpointRuntime, variant: VariantRuntime, raw: bytes, explain: bool
) -> bytes:
    try:
        document = json.loads(raw)
    except ValueError:
        raise InvalidInput("the predict request is not valid JSON") from None
    serving = variant.serving
    matrix = encode_items(serving.model, instances(document))
    result = await gateway.predict(serving, matrix)
    response: dict[str, Any] = {"predictions": result.tolist()}
    if explain:
        response["explanations"] = await gateway.explain(serving, matrix)
    out_body = json.dumps(response).encode()
    if gateway.draw() < gateway.settings.capture_sample_rate:
        gateway.capture.add(
            Captured(
                endpoint.name, variant.name, time.time(), None, None, JSON, raw, JSON, out_body
            )
        )
    return out_body
