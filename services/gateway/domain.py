"""Pure gateway rules: which endpoint state wins, which variant serves, what headers mean."""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from typing import Any

from cairn.contracts.events import EndpointUpdated
from cairn.errors import InvalidInput
from cairn.store.base import check_key

_TRUE_WORDS = frozenset({"true", "`true`", "1", "yes", "on"})


def endpoint_state_from_document(raw: bytes) -> EndpointUpdated:
    """The deployer's `deployer/endpoints/<name>.json`: EndpointUpdated data plus rollout state."""
    document: dict[str, Any] = json.loads(raw)
    fields = {name: document[name] for name in EndpointUpdated.model_fields if name in document}
    return EndpointUpdated.model_validate(fields)


def is_newer(current_revision: int | None, update: EndpointUpdated) -> bool:
    """Revisions only move forward: a replayed or reordered older state is ignored."""
    return current_revision is None or update.revision > current_revision


def serves_traffic(update: EndpointUpdated) -> bool:
    """A deleted endpoint (or one with nothing to serve) leaves the routing table."""
    return update.status != "Deleted" and bool(update.production_variants)


class WeightedChoice:
    """Picks an index with probability proportional to its weight (all zero: none)."""

    __slots__ = ("_cumulative", "_total")

    def __init__(self, weights: Sequence[float]) -> None:
        cumulative: list[float] = []
        total = 0.0
        for weight in weights:
            total += max(0.0, weight)
            cumulative.append(total)
        self._cumulative = cumulative
        self._total = total

    @property
    def total(self) -> float:
        return self._total

    def pick(self, draw: float) -> int | None:
        """The index for a uniform draw in [0, 1); None when every weight is zero."""
        if self._total <= 0:
            return None
        index = bisect.bisect_right(self._cumulative, draw * self._total)
        return min(index, len(self._cumulative) - 1)


def explanations_requested(header: str | None) -> bool:
    """`X-Amzn-SageMaker-Enable-Explanations`: "`true`" (SageMaker's JMESPath literal) or true."""
    return header is not None and header.strip().lower() in _TRUE_WORDS


def target_model_prefix(root: str, target: str) -> str:
    """The store prefix of a multi-model endpoint's `Target-Model` (relative to `root`)."""
    relative = target.strip().strip("/")
    for suffix in ("/manifest.json", ".tar.gz"):
        relative = relative.removesuffix(suffix)
    if not relative:
        raise InvalidInput("X-Amzn-SageMaker-Target-Model is empty")
    base = root.strip("/")
    prefix = relative if relative.startswith(base + "/") else f"{base}/{relative}"
    try:
        check_key(prefix)
    except InvalidInput:
        raise InvalidInput(f"invalid target model {target!r}") from None
    return prefix + "/"
