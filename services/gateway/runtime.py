"""What the gateway serves right now: loaded models (pinned or LRU) and the routing table.

Updates load every model first and then replace the table in one assignment, so a request sees
either the old endpoint or the new one, never a half-applied state, and none fails in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from cairn.artifacts import LoadedModel, load_model, package_prefix
from cairn.contracts.events import EndpointUpdated, VariantState
from cairn.contracts.graph import GraphStep, InferenceGraph
from cairn.errors import InvalidInput, NotFound
from cairn.store.base import ObjectStore

from services.gateway.batching import MicroBatcher
from services.gateway.domain import WeightedChoice, is_newer, serves_traffic
from services.gateway.graph import GraphBatcher, GraphModel, graph_uri
from services.gateway.instances import COLD_START_SECONDS, ColdStart, cold_variants
from services.gateway.metrics import BATCH_ROWS, MODEL_LOAD_SECONDS, VariantMeter
from services.gateway.pipeline import PipelineModel, pipeline_uri

log = logging.getLogger("cairn.gateway")


@dataclass(frozen=True, slots=True)
class ServingModel:
    """A loaded model and its batcher; shared by every variant that deploys the same package."""

    uri: str
    model: LoadedModel
    batcher: MicroBatcher
    size_bytes: int
    steps: tuple[str, ...] = ()  # an inference pipeline's packages, in order


@dataclass(frozen=True, slots=True)
class VariantRuntime:
    name: str
    state: VariantState
    serving: ServingModel
    meter: VariantMeter


class EndpointRuntime:
    """One endpoint revision, ready to route: variants by name, weights, shadow."""

    __slots__ = (
        "_choice", "models", "name", "production", "revision", "shadow", "status", "variants",
    )  # fmt: skip

    def __init__(
        self,
        update: EndpointUpdated,
        production: list[VariantRuntime],
        shadow: VariantRuntime | None,
    ) -> None:
        self.name = update.endpoint_name
        self.revision = update.revision
        self.status = update.status
        self.production = production
        self.variants = {variant.name: variant for variant in production}
        self.shadow = shadow
        # The packages this endpoint declares: the only ones a Target-Model header may pick.
        self.models = {
            variant.serving.uri: variant.serving
            for variant in [*production, *([shadow] if shadow else [])]
        }
        self._choice = WeightedChoice([variant.state.weight for variant in production])

    def pick(self, draw: float) -> VariantRuntime | None:
        index = self._choice.pick(draw)
        return None if index is None else self.production[index]

    def describe(self) -> dict[str, Any]:
        """What `GET /endpoints` shows: revision, status, variants and weights."""
        return {
            "endpoint_name": self.name,
            "revision": self.revision,
            "status": self.status,
            "production_variants": [
                variant.state.model_dump(mode="json") for variant in self.production
            ],
            "shadow_variant": self.shadow.state.model_dump(mode="json") if self.shadow else None,
        }


def loaded_models(endpoint: EndpointRuntime, cache: ModelCache) -> dict[str, Any]:
    """An endpoint's models on this replica: what `Target-Model` may name, who serves each, size.

    `target_model` is the package's last path part when no other package of the endpoint ends
    the same way, else its whole prefix (both are what `resolve_target_model` accepts).
    """
    short = {uri: uri.rstrip("/").rsplit("/", 1)[-1] for uri in endpoint.models}
    taken = list(short.values())
    models = []
    for uri, serving in endpoint.models.items():
        variants = [v.name for v in endpoint.production if v.serving.uri == uri]
        if endpoint.shadow is not None and endpoint.shadow.serving.uri == uri:
            variants.append(endpoint.shadow.name)
        models.append(
            {
                "target_model": short[uri] if taken.count(short[uri]) == 1 else uri,
                "model_uri": uri,
                "framework": serving.model.manifest.framework,
                "devices": list(getattr(serving.model, "devices", ("cpu",))),
                "variants": variants,
                "size_bytes": serving.size_bytes,
            }
        )
    return {
        "endpoint_name": endpoint.name,
        "revision": endpoint.revision,
        "models": models,
        "cache": {"budget_bytes": cache.budget_bytes, **cache.usage()},
    }


class ModelCache:
    """Models by package URI: deployed ones stay pinned; others are evicted LRU by size."""

    def __init__(
        self,
        store: ObjectStore,
        executor: Executor,
        *,
        budget_bytes: int,
        batch_max_rows: int,
        batch_max_wait_s: float,
        batch_inline_max_rows: int = 0,
        loader: Callable[[ObjectStore, str], LoadedModel] = load_model,
        on_evict: Callable[[LoadedModel], None] = lambda model: None,
    ) -> None:
        self.store = store
        self.loader = loader  # the gateway's also loads script packages (script_models.py)
        self.on_evict = on_evict
        self.executor = executor
        self.budget_bytes = budget_bytes
        self.batch_max_rows = batch_max_rows
        self.batch_max_wait_s = batch_max_wait_s
        self.batch_inline_max_rows = batch_inline_max_rows
        self._models: OrderedDict[str, ServingModel] = OrderedDict()
        self._loading: dict[str, asyncio.Future[ServingModel]] = {}
        self._pipelines: dict[str, ServingModel] = {}
        self.pinned: frozenset[str] = frozenset()

    def __contains__(self, uri: str) -> bool:
        return uri in self._models

    def cached(self, uri: str) -> ServingModel | None:
        serving = self._models.get(uri)
        if serving is not None:
            self._models.move_to_end(uri)
        return serving

    async def get(self, uri: str) -> ServingModel:
        """The loaded model at `uri`, loading it once however many requests ask at the same time."""
        serving = self.cached(uri)
        if serving is not None:
            return serving
        pending = self._loading.get(uri)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ServingModel] = asyncio.get_running_loop().create_future()
        self._loading[uri] = future
        try:
            serving = await asyncio.to_thread(self._load, uri)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            self._loading.pop(uri, None)
        self._models[uri] = serving
        future.set_result(serving)
        self._evict()
        return serving

    async def serving(self, state: VariantState) -> ServingModel:
        """A variant's model: its package, or its inference pipeline's steps chained as one."""
        if state.graph is not None:
            return await self._graph(state.graph)
        if len(state.containers) <= 1:
            return await self.get(package_prefix(state.artifact_uri, self.store))
        uris = tuple(package_prefix(step.artifact_uri, self.store) for step in state.containers)
        uri = pipeline_uri(uris)
        if (chained := self._pipelines.get(uri)) is not None:
            return chained
        steps = await asyncio.gather(*(self.get(step) for step in uris))
        model = PipelineModel([step.model for step in steps])
        batcher = MicroBatcher(
            model.predict,
            self.executor,
            max_batch_rows=self.batch_max_rows,
            max_wait_s=self.batch_max_wait_s,
            on_batch=BATCH_ROWS.labels(uri).observe,
            inline_max_rows=self.batch_inline_max_rows,
        )
        size = sum(step.size_bytes for step in steps)
        chained = self._pipelines[uri] = ServingModel(uri, model, batcher, size, uris)
        return chained

    async def _graph(self, graph: InferenceGraph) -> ServingModel:
        """An inference graph over its steps' (shared, pinned) models; built once per graph."""
        uri = graph_uri(graph)
        if (built := self._pipelines.get(uri)) is not None:
            return built

        def uri_of(step: GraphStep) -> str:
            return package_prefix(str(step.artifact_uri), self.store)

        uris = tuple(dict.fromkeys(uri_of(step) for step in graph.model_steps()))
        steps = await asyncio.gather(*(self.get(step) for step in uris))
        models = {step.uri: (step.model, step.batcher) for step in steps}
        model = GraphModel(graph, models, uri_of)
        size = sum(step.size_bytes for step in steps)
        built = ServingModel(uri, model, GraphBatcher(model, self.executor), size, uris)
        self._pipelines[uri] = built
        return built

    def _load(self, uri: str) -> ServingModel:
        started = time.perf_counter()
        model = self.loader(self.store, uri)
        size = sum(info.size for info in self.store.list(uri))
        MODEL_LOAD_SECONDS.labels(uri).observe(time.perf_counter() - started)
        rows = BATCH_ROWS.labels(uri)
        batcher = MicroBatcher(
            model.predict,
            self.executor,
            max_batch_rows=self.batch_max_rows,
            max_wait_s=self.batch_max_wait_s,
            on_batch=rows.observe,
            inline_max_rows=self.batch_inline_max_rows,
        )
        log.info("loaded model %s (%d bytes) in %.3fs", uri, size, time.perf_counter() - started)
        return ServingModel(uri, model, batcher, size)

    def usage(self) -> dict[str, int]:
        """Models loaded on this replica and their bytes, pinned (deployed) and not."""
        pinned = sum(s.size_bytes for uri, s in self._models.items() if uri in self.pinned)
        total = sum(s.size_bytes for s in self._models.values())
        return {
            "loaded_models": len(self._models),
            "pinned_bytes": pinned,
            "unpinned_bytes": total - pinned,
        }

    def pin(self, uris: frozenset[str]) -> None:
        """Models deployed on endpoints; only the others count against the budget."""
        self.pinned = uris
        self._pipelines = {
            uri: chained
            for uri, chained in self._pipelines.items()
            if all(step in uris for step in chained.steps)
        }
        self._evict()

    def unload(self, uris: set[str]) -> None:
        """Drop these models now unless a deployed variant still pins them (scaled to zero)."""
        for uri in uris - self.pinned:
            dropped = self._models.pop(uri, None)
            if dropped is not None:
                self.on_evict(dropped.model)
                log.info("unloaded model %s: its variant is at 0 instances", uri)

    def _evict(self) -> None:
        unpinned = [uri for uri in self._models if uri not in self.pinned]
        used = sum(self._models[uri].size_bytes for uri in unpinned)
        for uri in unpinned:  # oldest first
            if used <= self.budget_bytes:
                break
            evicted = self._models.pop(uri)
            used -= evicted.size_bytes
            self.on_evict(evicted.model)
            log.info("evicted model %s from the multi-model cache", uri)


class RoutingTable:
    """Endpoints by name; replaced whole on every change (readers never lock)."""

    def __init__(self, cache: ModelCache, make_meter: Callable[[str, str], VariantMeter]) -> None:
        self.cache = cache
        self.endpoints: dict[str, EndpointRuntime] = {}
        # Endpoints with a variant at 0 instances: nothing loaded until a request cold-starts them.
        self.cold: dict[str, EndpointUpdated] = {}
        self.on_cold_start: Callable[[ColdStart], None] = lambda started: None
        self.revisions: dict[str, int] = {}
        self._make_meter = make_meter
        self._meters: dict[tuple[str, str], VariantMeter] = {}
        self._lock = asyncio.Lock()

    def get(self, name: str) -> EndpointRuntime:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise NotFound(f"endpoint {name!r} does not exist or serves no traffic", endpoint=name)
        return endpoint

    async def apply(self, update: EndpointUpdated) -> bool:
        """Apply a desired state if it is newer; returns whether the table changed."""
        async with self._lock:  # updates apply in order; requests never wait on this lock
            if not is_newer(self.revisions.get(update.endpoint_name), update):
                return False
            endpoints = dict(self.endpoints)
            cold = {name: u for name, u in self.cold.items() if name != update.endpoint_name}
            previous = endpoints.pop(update.endpoint_name, None)
            if serves_traffic(update) and cold_variants(update):
                cold[update.endpoint_name] = update
            elif serves_traffic(update):
                endpoints[update.endpoint_name] = await self._build(update)
            self.endpoints, self.cold = endpoints, cold
            self.revisions[update.endpoint_name] = update.revision
            self._pin()
            if previous is not None and update.endpoint_name in cold:
                self.cache.unload(set(_uris(previous)))
            log.info(
                "endpoint %s at revision %d (%s): %s",
                update.endpoint_name,
                update.revision,
                update.status,
                ", ".join(f"{v.variant_name}={v.weight:g}" for v in update.production_variants)
                or "removed",
            )
            return True

    def _pin(self) -> None:
        self.cache.pin(frozenset(uri for e in self.endpoints.values() for uri in _uris(e)))

    async def warm(self, name: str) -> EndpointRuntime:
        """Load a scaled-to-zero endpoint for a request (a cold start), once for all waiters."""
        started = time.perf_counter()
        async with self._lock:  # requests that queued here find it warm
            update = self.cold.get(name)
            if update is None:
                return self.get(name)
            runtime = await self._build(update)
            self.endpoints = {**self.endpoints, name: runtime}
            self.cold = {other: u for other, u in self.cold.items() if other != name}
            self._pin()
        elapsed = time.perf_counter() - started
        COLD_START_SECONDS.labels(name).observe(elapsed)
        log.info("cold start of endpoint %s revision %d: %.3fs", name, update.revision, elapsed)
        self.on_cold_start(ColdStart(update, cold_variants(update), elapsed))
        return runtime

    async def _build(self, update: EndpointUpdated) -> EndpointRuntime:
        specs = list(update.production_variants)
        names = [spec.variant_name for spec in specs]
        if len(set(names)) != len(names):
            raise InvalidInput(f"endpoint {update.endpoint_name} repeats a variant name: {names}")
        if update.shadow_variant is not None:
            specs.append(update.shadow_variant)
        servings = await asyncio.gather(*(self.cache.serving(spec) for spec in specs))
        runtimes = [
            VariantRuntime(spec.variant_name, spec, serving, self._meter(update, spec))
            for spec, serving in zip(specs, servings, strict=True)
        ]
        shadow = runtimes.pop() if update.shadow_variant is not None else None
        return EndpointRuntime(update, runtimes, shadow)

    def _meter(self, update: EndpointUpdated, spec: VariantState) -> VariantMeter:
        key = (update.endpoint_name, spec.variant_name)
        meter = self._meters.get(key)
        if meter is None:
            meter = self._meters[key] = self._make_meter(*key)
        return meter

    def meters(self) -> list[VariantMeter]:
        return list(self._meters.values())


def _uris(endpoint: EndpointRuntime) -> list[str]:
    """The packages an endpoint's variants hold loaded (a pipeline's or graph's steps)."""
    return [
        uri
        for variant in [*endpoint.production, endpoint.shadow]
        if variant is not None
        for uri in variant.serving.steps or (variant.serving.uri,)
    ]
