"""An inference graph (KServe's InferenceGraph, in snake case): how one variant routes a request.

The graph is a map of named routing nodes; the request enters at `root`. Each node has a
`router_type` and steps; a step targets a registered model version or another node:

- Sequence: the steps run in order; a step's `data` is `$request` (the graph's request),
  `$response` (the previous step's answer) or, when left out, the node's input.
- Switch: each row goes to the first step whose `condition` holds (an expression over the node
  input's columns, e.g. `income > 50000 and age < 30`); a last step without one is the default.
- Ensemble: every step answers the same input; `combine` is `all` (each step's outputs, keyed by
  step name), `mean` or `vote` (per row, ties to the earliest step).
- Splitter: each request goes to one step, drawn by `weight` (percent, adding up to 100).

The deployer checks the whole graph when the endpoint is created or updated (`services/deployer/
graph.py`) and fills in each model step's `artifact_uri`; the gateway runs it in process.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
RouterType = Literal["Sequence", "Switch", "Ensemble", "Splitter"]
ROOT = "root"
MAX_GRAPH_NODES = 10
MAX_NODE_STEPS = 10
GRAPH_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GraphStep(_Data):
    """One routing target: a model version (group and version) or a node of the same graph."""

    name: str | None = Field(
        default=None,
        pattern=GRAPH_NAME,
        description="Unique in its node; defaults to the node name or `<group>-v<version>`.",
    )
    model_package_group: str | None = None
    model_version: int | None = Field(default=None, ge=1)
    node_name: str | None = Field(default=None, description="Another node of this graph.")
    condition: str | None = Field(
        default=None, max_length=1000, description="Switch only: when this step takes a row."
    )
    data: Literal["$request", "$response"] | None = Field(
        default=None, description="What the step is fed; left out: the node's input."
    )
    weight: int | None = Field(
        default=None, ge=0, le=100, description="Splitter only: percent of the requests."
    )
    artifact_uri: str | None = Field(
        default=None, description="Filled in by the deployer for a model step."
    )

    @property
    def label(self) -> str:
        """The step's name, as the answer's `X-Cairn-Graph-Steps` and Ensemble outputs say it."""
        if self.name is not None:
            return self.name
        if self.node_name is not None:
            return self.node_name
        return f"{self.model_package_group}-v{self.model_version}"


class GraphNode(_Data):
    router_type: RouterType
    steps: list[GraphStep] = Field(min_length=1, max_length=MAX_NODE_STEPS)
    combine: Literal["all", "mean", "vote"] = Field(
        default="all", description="Ensemble only: how the steps' answers become one."
    )


def feed(node: GraphNode, step: GraphStep, inputs: T, previous: T, request: T) -> T:
    """What a step is fed: the request, the previous step's answer (Sequence) or the node's input.

    Generic so that the deployer follows the rule with column names and the gateway with rows.
    """
    if step.data == "$request":
        return request
    if step.data == "$response" and node.router_type == "Sequence":
        return previous
    return inputs


def combined_names(node: GraphNode, answers: list[list[str]]) -> list[str]:
    """A node's output columns from its steps' (the deployer checks that the other kinds agree):
    a Sequence answers with its last step's, an Ensemble `all` with each `<step>.<column>`."""
    if node.router_type == "Sequence":
        return answers[-1]
    if node.router_type == "Ensemble" and node.combine == "all":
        return [
            f"{step.label}.{column}"
            for step, answer in zip(node.steps, answers, strict=True)
            for column in answer
        ]
    return answers[0]


class InferenceGraph(_Data):
    """Nodes by name; `root` is where a request enters."""

    nodes: dict[str, GraphNode] = Field(min_length=1, max_length=MAX_GRAPH_NODES)

    def model_steps(self) -> list[GraphStep]:
        """Every model step, nodes in declaration order (the root's first)."""
        ordered = sorted(self.nodes.items(), key=lambda item: item[0] != ROOT)
        return [step for _, node in ordered for step in node.steps if step.model_package_group]

    def entry_step(self) -> GraphStep:
        """The model step the root's first steps lead to: its inputs are the graph's request."""
        step = self.nodes[ROOT].steps[0]
        seen = {ROOT}
        while step.node_name is not None and step.node_name not in seen:
            seen.add(step.node_name)
            step = self.nodes[step.node_name].steps[0]
        return step


def first_model(graph: Any) -> tuple[Any, Any]:
    """A raw graph's first model step (group, version): what its variant's model fields name.

    Reads the request as sent (before validation), so a malformed graph yields (None, None) and
    the validation that follows names the real fault.
    """
    if isinstance(graph, BaseModel):
        graph = graph.model_dump()
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, dict):
        return None, None
    for name in sorted(nodes, key=lambda node: node != ROOT):
        steps = nodes[name].get("steps") if isinstance(nodes[name], dict) else None
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict) and step.get("model_package_group"):
                return step.get("model_package_group"), step.get("model_version")
    return None, None
