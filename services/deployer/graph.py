"""Inference graphs (KServe's InferenceGraph), checked whole before an endpoint serves one.

The gateway runs a graph in its own process (`services/gateway/graph.py`), so everything that
would otherwise fail on every request is refused here, at create or update time, as one 400
whose `field` names the offending part (`production_variants[0].graph.nodes.root.steps[1]
.condition`): an unknown node, a cycle, a node no path reaches, a Splitter whose weights do not
add up to 100, a condition that does not parse or names no column of its input, a step that is
not a built-in format, and a step whose inputs are not what it is fed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cairn.artifacts import read_manifest
from cairn.artifacts.manifest import ModelManifest
from cairn.contracts.events import DeploymentRequested, VariantSpec
from cairn.contracts.graph import (
    ROOT,
    GraphNode,
    GraphStep,
    InferenceGraph,
    combined_names,
    feed,
)
from cairn.errors import CairnError, InvalidInput
from cairn.inference.conditions import Condition, ConditionError
from cairn.store.base import ObjectStore

from services.deployer.documents import ModelRecord
from services.deployer.pipelines import IN_PROCESS_FRAMEWORKS

ModelRef = tuple[str, int]


class InvalidGraph(InvalidInput):
    """The graph cannot be served; `field` says where it goes wrong."""

    code = "invalid_inference_graph"


def _refuse(field: str, why: str) -> InvalidGraph:
    return InvalidGraph(f"{field}: {why}", field=field)


def graph_specs(request: DeploymentRequested) -> list[tuple[str, VariantSpec]]:
    """The request's graph variants, each with the request field it was sent in."""
    found = [
        (f"production_variants[{index}].graph", spec)
        for index, spec in enumerate(request.production_variants)
        if spec.graph is not None
    ]
    if request.shadow_variant is not None and request.shadow_variant.graph is not None:
        found.append(("shadow_variant.graph", request.shadow_variant))
    return found


def model_ref(step: GraphStep) -> ModelRef:
    return str(step.model_package_group), int(step.model_version or 0)


def graph_refs(request: DeploymentRequested) -> list[ModelRef]:
    """Every model version the request's graphs name (for the deployer's model index)."""
    return [
        model_ref(step)
        for _, spec in graph_specs(request)
        if spec.graph is not None
        for step in spec.graph.model_steps()
    ]


def check_structure(field: str, graph: InferenceGraph) -> None:
    """What needs no manifest: targets, node references, cycles, weights, conditions' syntax."""
    if ROOT not in graph.nodes:
        raise _refuse(f"{field}.nodes", f"a graph's entry node is named {ROOT!r}; none is")
    for name, node in graph.nodes.items():
        _check_node(f"{field}.nodes.{name}", node, graph)
    _check_acyclic(field, graph)


def _check_node(where: str, node: GraphNode, graph: InferenceGraph) -> None:
    labels = [step.label for step in node.steps]
    for index, step in enumerate(node.steps):
        at = f"{where}.steps[{index}]"
        has_model = step.model_package_group is not None or step.model_version is not None
        if has_model == (step.node_name is not None):
            raise _refuse(
                at, "name one target: model_package_group and model_version, or node_name"
            )
        if has_model and (step.model_package_group is None or step.model_version is None):
            raise _refuse(at, "a model step names both model_package_group and model_version")
        if step.node_name is not None and step.node_name not in graph.nodes:
            raise _refuse(
                f"{at}.node_name",
                f"no node {step.node_name!r} in the graph (it has {sorted(graph.nodes)})",
            )
        if labels.count(step.label) > 1:
            raise _refuse(f"{at}.name", f"step name {step.label!r} repeats in its node")
        if step.weight is not None and node.router_type != "Splitter":
            raise _refuse(f"{at}.weight", "weights are for Splitter nodes only")
        last = index == len(node.steps) - 1
        if step.condition is not None and node.router_type != "Switch":
            raise _refuse(f"{at}.condition", "conditions are for Switch nodes only")
        if node.router_type == "Switch" and step.condition is None and not last:
            raise _refuse(
                f"{at}.condition",
                "a Switch step needs a condition (only the last may be the default)",
            )
        if step.condition is not None:
            try:
                Condition(step.condition, [])
            except ConditionError as error:
                if "not columns" not in str(error):  # columns are checked with the manifests
                    raise _refuse(f"{at}.condition", f"{step.condition!r} {error}") from None
    if node.router_type == "Splitter":
        weights = [step.weight for step in node.steps]
        if None in weights:
            raise _refuse(f"{where}.steps", "every Splitter step needs a weight (percent)")
        total = sum(weight or 0 for weight in weights)
        if total != 100:
            raise _refuse(f"{where}.steps", f"Splitter weights add up to {total}, not 100")
    if node.combine != "all" and node.router_type != "Ensemble":
        raise _refuse(f"{where}.combine", "combine is for Ensemble nodes only")


def _check_acyclic(field: str, graph: InferenceGraph) -> None:
    """Depth-first from the root: a node met again on the current path closes a cycle."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for index, step in enumerate(graph.nodes[name].steps):
            target = step.node_name
            if target is None or target in done:
                continue
            if target in path:
                cycle = " -> ".join([*path[path.index(target) :], target])
                raise _refuse(
                    f"{field}.nodes.{name}.steps[{index}].node_name", f"the graph cycles: {cycle}"
                )
            visit(target, [*path, target])
        done.add(name)

    visit(ROOT, [ROOT])
    for name in graph.nodes:
        if name not in done:
            raise _refuse(f"{field}.nodes.{name}", f"node {name!r} is not reachable from {ROOT!r}")


def read_graph_manifests(
    store: ObjectStore, request: DeploymentRequested, models: Mapping[ModelRef, ModelRecord]
) -> dict[ModelRef, ModelManifest]:
    """The manifest of every registered model step (unknown ones are refused later, by name)."""
    manifests: dict[ModelRef, ModelManifest] = {}
    for ref in graph_refs(request):
        record = models.get(ref)
        if record is None or record.artifact_uri is None or ref in manifests:
            continue
        try:
            manifests[ref] = read_manifest(store, record.artifact_uri)
        except CairnError:
            continue  # an unreadable package: the gateway's load reports it
    return manifests


def check_graphs(request: DeploymentRequested, manifests: Mapping[ModelRef, ModelManifest]) -> None:
    """Every graph of the request: its structure, then the signatures along every path."""
    for field, spec in graph_specs(request):
        assert spec.graph is not None
        check_structure(field, spec.graph)
        refs = [model_ref(step) for step in spec.graph.model_steps()]
        if all(ref in manifests for ref in refs):  # else resolving refuses the unknown version
            _Signatures(field, spec.graph, manifests).check()


class _Signatures:
    """Walks the graph from the root with the columns each step is fed."""

    def __init__(
        self, field: str, graph: InferenceGraph, manifests: Mapping[ModelRef, ModelManifest]
    ) -> None:
        self.field, self.graph, self.manifests = field, graph, manifests

    def _manifest(self, step: GraphStep) -> ModelManifest:
        return self.manifests[model_ref(step)]

    def check(self) -> None:
        entry = self._manifest(self.graph.entry_step())
        request = [column.name for column in entry.signature.inputs]
        self.node(ROOT, request, request)

    def node(self, name: str, inputs: list[str], request: list[str]) -> list[str]:
        node, where = self.graph.nodes[name], f"{self.field}.nodes.{name}"
        previous, answers = inputs, []
        for index, step in enumerate(node.steps):
            at = f"{where}.steps[{index}]"
            if step.condition is not None:
                try:
                    Condition(step.condition, inputs).check()
                except ConditionError as error:
                    raise _refuse(f"{at}.condition", f"{step.condition!r} {error}") from None
            fed = feed(node, step, inputs, previous, request)
            answer = self.step(at, step, fed, request)
            answers.append(answer)
            previous = answer
        if node.router_type == "Sequence" or (
            node.router_type == "Ensemble" and node.combine == "all"
        ):
            return combined_names(node, answers)
        for index, answer in enumerate(answers[1:], start=1):
            if answer != answers[0]:
                raise _refuse(
                    f"{where}.steps[{index}]",
                    f"a {node.router_type} node's steps answer with the same outputs: "
                    f"{answer} differ from {answers[0]}",
                )
        if node.combine == "vote" and len(answers[0]) != 1:
            raise _refuse(f"{where}.combine", f"vote needs one output per step, not {answers[0]}")
        return answers[0]

    def step(self, at: str, step: GraphStep, fed: list[str], request: list[str]) -> list[str]:
        if step.node_name is not None:
            return self.node(step.node_name, fed, request)
        manifest = self._manifest(step)
        label = f"{step.model_package_group} v{step.model_version}"
        if manifest.framework not in IN_PROCESS_FRAMEWORKS:
            raise _refuse(
                at,
                f"{label} is a {manifest.framework} package; a graph runs in the gateway only "
                f"with {sorted(IN_PROCESS_FRAMEWORKS)} steps",
            )
        inputs = [column.name for column in manifest.signature.inputs]
        if inputs != fed:
            raise _refuse(
                at,
                f"the inputs of {label} {inputs} are not the columns it is fed {fed} "
                "(set the step's data to $request or $response to feed it otherwise)",
            )
        return [column.name for column in manifest.signature.outputs]


def resolve_graph(graph: InferenceGraph, artifact_of: Callable[[ModelRef], str]) -> InferenceGraph:
    """The graph with each model step's artifact filled in (`artifact_of` checks approval)."""
    nodes = {
        name: node.model_copy(
            update={
                "steps": [
                    step.model_copy(update={"artifact_uri": artifact_of(model_ref(step))})
                    if step.model_package_group is not None
                    else step
                    for step in node.steps
                ]
            }
        )
        for name, node in graph.nodes.items()
    }
    return graph.model_copy(update={"nodes": nodes})
