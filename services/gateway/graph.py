"""Inference graphs served in process: a variant routed as KServe's InferenceGraph.

A graph is wrapped as one `LoadedModel` (the entry model's inputs, the root node's outputs)
whose batcher runs the graph per request, so every protocol (SageMaker invocations, OIP v2,
KServe v1, async requests), capture and shadow path serves it unchanged. Routing is per request
as in KServe (a Splitter draws once per request) and a Switch condition is evaluated per row,
so a request's rows may take different branches. Each model step goes through its own
micro-batcher: concurrent requests still share batches step by step.

The steps a request ran are recorded in `GRAPH_STEPS` (`node.step`, in order) for the answer's
`X-Cairn-Graph-Steps` header; the deployer has checked the graph at create time
(`services/deployer/graph.py`), so what is left to fail here is a row no Switch step takes.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextvars import ContextVar
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.artifacts import LoadedModel
from cairn.artifacts.manifest import OutputColumn, Signature
from cairn.contracts.graph import (
    ROOT,
    GraphNode,
    GraphStep,
    InferenceGraph,
    combined_names,
    feed,
)
from cairn.errors import InvalidInput
from cairn.inference.conditions import Condition, ConditionError

from services.gateway.batching import MicroBatcher

Matrix = npt.NDArray[Any]
Columns = list[str]
StepPredict = Callable[[str, Matrix], Awaitable[Matrix]]
H_GRAPH_STEPS = "x-cairn-graph-steps"
GRAPH_STEPS: ContextVar[tuple[str, ...] | None] = ContextVar("cairn_graph_steps", default=None)


class NoRouteMatched(InvalidInput):
    code = "graph_no_route"


def graph_steps_header() -> list[tuple[bytes, bytes]]:
    """The header naming the steps this request's graph ran; none for a plain model."""
    steps = GRAPH_STEPS.get()
    return [] if steps is None else [(H_GRAPH_STEPS.encode(), ",".join(steps).encode())]


def _two_d(matrix: Matrix) -> Matrix:
    return matrix.reshape(len(matrix), -1) if matrix.ndim == 1 else matrix


class GraphModel(LoadedModel):
    """A graph over loaded models (`models` by package URI, `uri_of` maps a step to one)."""

    def __init__(
        self,
        graph: InferenceGraph,
        models: Mapping[str, tuple[LoadedModel, MicroBatcher]],
        uri_of: Callable[[GraphStep], str],
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.graph, self.models, self.draw = graph, models, draw
        self._uri = {
            (name, index): uri_of(step)
            for name, node in graph.nodes.items()
            for index, step in enumerate(node.steps)
            if step.node_name is None
        }
        self._conditions: dict[tuple[str, int, tuple[str, ...]], Condition] = {}
        entry = models[uri_of(graph.entry_step())][0].manifest
        self.request_columns = [column.name for column in entry.signature.inputs]
        outputs = self._names(ROOT, self.request_columns, self.request_columns)
        signature = Signature(
            inputs=entry.signature.inputs,
            outputs=[OutputColumn(name=name) for name in outputs],
        )
        super().__init__(entry.model_copy(update={"signature": signature}))

    # Output names ------------------------------------------------------------------------

    def _names(self, name: str, inputs: Columns, request: Columns) -> Columns:
        node = self.graph.nodes[name]
        previous, answers = inputs, []
        for index, step in enumerate(node.steps):
            fed = feed(node, step, inputs, previous, request)
            if step.node_name is not None:
                answer = self._names(step.node_name, fed, request)
            else:
                answer = self.models[self._uri[name, index]][0].output_names
            answers.append(answer)
            previous = answer
        return combined_names(node, answers)

    # Running -----------------------------------------------------------------------------

    def predict(self, matrix: Matrix) -> Matrix:
        """The whole graph on this thread, each step predicting inline (a lone request)."""

        async def inline(uri: str, rows: Matrix) -> Matrix:
            return self.models[uri][1].predict_now(rows)

        return _drive(self.run(matrix, inline, concurrent=False))

    async def predict_async(self, matrix: Matrix) -> Matrix:
        """The graph with each model step queued on its micro-batcher, Ensembles in parallel."""

        async def batched(uri: str, rows: Matrix) -> Matrix:
            return await self.models[uri][1].predict(rows)

        return await self.run(matrix, batched, concurrent=True)

    async def run(self, matrix: Matrix, predict: StepPredict, *, concurrent: bool) -> Matrix:
        ran: list[str] = []
        walk = _Walk(self, predict, concurrent, ran, matrix)
        result, _ = await walk.node(ROOT, matrix, self.request_columns)
        GRAPH_STEPS.set(tuple(ran))
        return result.ravel() if result.shape[1] == 1 else result

    def condition(self, name: str, index: int, columns: Columns) -> Condition:
        key = (name, index, tuple(columns))
        found = self._conditions.get(key)
        if found is None:
            expression = self.graph.nodes[name].steps[index].condition
            assert expression is not None
            found = self._conditions[key] = Condition(expression, columns)
        return found


class _Walk:
    """One request through the graph: the matrices each node is fed and the steps it ran."""

    def __init__(
        self,
        graph: GraphModel,
        predict: StepPredict,
        concurrent: bool,
        ran: list[str],
        request: Matrix,
    ) -> None:
        self.graph, self.predict, self.concurrent, self.ran = graph, predict, concurrent, ran
        self.request = request

    async def node(self, name: str, rows: Matrix, columns: Columns) -> tuple[Matrix, Columns]:
        node = self.graph.graph.nodes[name]
        kind = node.router_type
        if kind == "Sequence":
            previous = (rows, columns)
            for index, step in enumerate(node.steps):
                fed = feed(node, step, (rows, columns), previous, self._request())
                previous = await self.step(name, index, *fed)
            return previous
        if kind == "Splitter":
            index = _split(node, self.graph.draw())
            fed = feed(node, node.steps[index], (rows, columns), (rows, columns), self._request())
            return await self.step(name, index, *fed)
        if kind == "Switch":
            return await self.switch(name, node, rows, columns)
        return await self.ensemble(name, node, rows, columns)

    def _request(self) -> tuple[Matrix, Columns]:
        return self.request, self.graph.request_columns

    async def step(
        self, name: str, index: int, rows: Matrix, columns: Columns
    ) -> tuple[Matrix, Columns]:
        step = self.graph.graph.nodes[name].steps[index]
        self.ran.append(f"{name}.{step.label}")
        if step.node_name is not None:
            return await self.node(step.node_name, rows, columns)
        uri = self.graph._uri[name, index]
        answer = await self.predict(uri, rows)
        return _two_d(answer), self.graph.models[uri][0].output_names

    async def switch(
        self, name: str, node: GraphNode, rows: Matrix, columns: Columns
    ) -> tuple[Matrix, Columns]:
        """Each row to the first step whose condition holds; answers put back in row order."""
        free = np.ones(len(rows), dtype=bool)
        taken: list[tuple[npt.NDArray[np.bool_], Matrix]] = []
        names: Columns = []
        for index, step in enumerate(node.steps):
            if not free.any():
                break
            chosen = free.copy()
            if step.condition is not None:
                try:
                    chosen &= self.graph.condition(name, index, columns).mask(rows)
                except ConditionError as error:
                    raise InvalidInput(f"node {name!r} step {step.label!r}: {error}") from None
            if not chosen.any():
                continue
            free &= ~chosen
            request = (self.request[chosen], self.graph.request_columns)
            fed = feed(node, step, (rows[chosen], columns), (rows[chosen], columns), request)
            answer, names = await self.step(name, index, *fed)
            taken.append((chosen, answer))
        if free.any():
            row = int(np.flatnonzero(free)[0])
            raise NoRouteMatched(
                f"row {row} meets no condition of Switch node {name!r}, which has no default "
                "step (a last step without a condition)",
                node=name,
                row=row,
            )
        result = np.empty(
            (len(rows), taken[0][1].shape[1]), dtype=np.result_type(*(a for _, a in taken))
        )
        for chosen, answer in taken:
            result[chosen] = answer
        return result, names

    async def ensemble(
        self, name: str, node: GraphNode, rows: Matrix, columns: Columns
    ) -> tuple[Matrix, Columns]:
        calls = [
            self.step(
                name, index, *feed(node, step, (rows, columns), (rows, columns), self._request())
            )
            for index, step in enumerate(node.steps)
        ]
        if self.concurrent:
            answers = list(await asyncio.gather(*calls))
        else:
            answers = [await call for call in calls]
        matrices = [answer for answer, _ in answers]
        names = combined_names(node, [columns for _, columns in answers])
        if node.combine == "all":
            return np.concatenate(matrices, axis=1), names
        stacked = np.stack([m.astype(np.float64) for m in matrices])
        if node.combine == "mean":
            return stacked.mean(axis=0), names
        return _vote(stacked), names


def _vote(stacked: npt.NDArray[np.float64]) -> Matrix:
    """Per row and column the most frequent answer; a tie goes to the earliest step."""
    steps = stacked.shape[0]
    counts = np.stack([(stacked == stacked[index]).sum(axis=0) for index in range(steps)])
    winner = counts.argmax(axis=0)  # argmax keeps the first of equal counts
    chosen: Matrix = np.take_along_axis(stacked, winner[np.newaxis], axis=0)[0]
    return chosen


def _split(node: GraphNode, draw: float) -> int:
    """The step a draw in [0, 1) falls on, by the steps' percent weights."""
    bound = 0.0
    for index, step in enumerate(node.steps):
        bound += (step.weight or 0) / 100
        if draw < bound:
            return index
    return len(node.steps) - 1


def _drive(coroutine: Coroutine[Any, Any, Matrix]) -> Matrix:
    """Run a coroutine that never suspends (every step predicts inline) without a loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: Matrix = done.value
        return result
    coroutine.close()
    raise RuntimeError("an inline graph step suspended")


class GraphBatcher(MicroBatcher):
    """The graph behind the interface the protocols call; batching happens per model step."""

    def __init__(self, model: GraphModel, executor: Any) -> None:
        super().__init__(model.predict, executor)
        self.model = model

    @property
    def busy(self) -> bool:
        return any(batcher.busy for _, batcher in self.model.models.values())

    def predict_now(self, matrix: Matrix) -> Matrix:
        return self.model.predict(matrix)

    async def predict(self, matrix: Matrix) -> Matrix:
        return await self.model.predict_async(matrix)


def graph_uri(graph: InferenceGraph) -> str:
    """The graph's key among an endpoint's models; it never matches a Target-Model name."""
    digest = hashlib.sha256(graph.model_dump_json(exclude_none=True).encode()).hexdigest()
    return f"graph({digest[:16]})"
