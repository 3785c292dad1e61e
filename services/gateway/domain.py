"""Pure gateway rules: which endpoint state wins, which variant serves, what headers mean."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from cairn.contracts.events import EndpointUpdated
from cairn.contracts.state import EndpointStateView
from cairn.errors import InvalidInput, NotFound

_TRUE_WORDS = frozenset({"true", "`true`", "1", "yes", "on"})


class ModelNotDeclared(NotFound):
    """A Target-Model the endpoint does not declare (404: other packages are not revealed)."""

    code = "model_not_declared"


def update_from_view(view: EndpointStateView) -> EndpointUpdated:
    """The deployer's stored endpoint state, as the EndpointUpdated it last published."""
    fields = view.model_dump(include=set(EndpointUpdated.model_fields))
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


def _model_name(target: str) -> str:
    name = target.strip().strip("/")
    for suffix in ("/manifest.json", ".tar.gz"):
        name = name.removesuffix(suffix)
    return name.strip("/")


def resolve_target_model(target: str, endpoint: str, declared: Iterable[str]) -> str:
    """The package prefix `X-Amzn-SageMaker-Target-Model` names among an endpoint's packages.

    A target is a declared package's full prefix (`models/job-7`) or its trailing part
    (`job-7`, `job-7/manifest.json`); a package the endpoint does not declare is never served.
    """
    name = _model_name(target)
    if not name:
        raise InvalidInput("X-Amzn-SageMaker-Target-Model is empty")
    packages = sorted(declared)
    matches = [p for p in packages if p == name + "/" or p.endswith("/" + name + "/")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidInput(f"target model {target!r} is ambiguous: name one of {matches}")
    raise ModelNotDeclared(
        f"endpoint {endpoint!r} serves no model {target!r}; its models: {packages}",
        endpoint=endpoint,
        models=packages,
    )
