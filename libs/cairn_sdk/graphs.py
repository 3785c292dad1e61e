"""Inference graph files: a variant routed as KServe's InferenceGraph, read from YAML or JSON.

The file holds `nodes` (Cairn's snake case), or a KServe InferenceGraph manifest as KServe
users write it (`spec.nodes`, `routerType`, `nodeName`, ...): camelCase keys are turned into
snake case, and a step may name its model as `model: GROUP:VERSION` instead of
`model_package_group` plus `model_version` (KServe's `serviceName` has no Cairn meaning: a
Cairn step is a registered model version). The deployer checks the graph itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_MODEL = re.compile(r"^(?P<group>[A-Za-z0-9][A-Za-z0-9-]{0,62}):(?P<version>[1-9][0-9]*)$")


class GraphFileError(ValueError):
    """The file is not a graph this reader understands; the message says where."""


def load_inference_graph(path: str | Path) -> dict[str, Any]:
    """The graph in `path` as a VariantSpec's `graph` dict."""
    text = Path(path).read_text()
    try:
        document = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise GraphFileError(f"{path}: not valid JSON or YAML: {error}") from None
    return inference_graph(document)


def inference_graph(document: Any) -> dict[str, Any]:
    """A graph document (Cairn's or a KServe InferenceGraph manifest) in Cairn's shape."""
    if isinstance(document, dict) and isinstance(document.get("spec"), dict):
        document = document["spec"]  # a whole KServe manifest
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), dict):
        raise GraphFileError("a graph is a mapping with `nodes` (node name -> node)")
    nodes: dict[str, Any] = {}
    for name, node in document["nodes"].items():
        if not isinstance(node, dict):
            raise GraphFileError(f"nodes.{name}: a node is a mapping")
        converted = _snake(node)
        steps = converted.get("steps")
        if isinstance(steps, list):
            converted["steps"] = [
                _step(step, f"nodes.{name}.steps[{i}]") for i, step in enumerate(steps)
            ]
        nodes[str(name)] = converted
    return {"nodes": nodes}


def _snake(mapping: dict[str, Any]) -> dict[str, Any]:
    return {_CAMEL.sub("_", str(key)).lower(): value for key, value in mapping.items()}


def _step(step: Any, where: str) -> Any:
    if not isinstance(step, dict):
        return step
    converted = _snake(step)
    model = converted.pop("model", None)
    if model is not None:
        match = _MODEL.match(str(model))
        if match is None:
            raise GraphFileError(f"{where}.model: {model!r} is not GROUP:VERSION")
        converted["model_package_group"] = match["group"]
        converted["model_version"] = int(match["version"])
    return converted
