"""Torch model packages: weights as safetensors (tensors only), the network's shape as JSON.

Loading never unpickles: `architecture.json` holds plain numbers and names from which the
algorithm's module rebuilds the network, and `model.safetensors` fills its tensors (strictly:
a missing, extra or mis-shaped tensor is refused). Servers predict on the CPU.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cairn.artifacts.manifest import ModelManifest
from cairn.artifacts.package import LoadedModel, UnsupportedModelPackage

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "model.safetensors"
ARCHITECTURE_FILE = "architecture.json"


def torch_package_files(network: torch.nn.Module, architecture: dict[str, Any]) -> dict[str, bytes]:
    """The package files of a trained network: its tensors on the CPU, and its config."""
    from safetensors.torch import save

    state = {
        name: tensor.detach().to("cpu").clone().contiguous()
        for name, tensor in network.state_dict().items()
    }
    return {
        WEIGHTS_FILE: save(state),
        ARCHITECTURE_FILE: json.dumps(architecture, sort_keys=True).encode(),
    }


def load_network(blobs: Mapping[str, bytes], build: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a network with `build(architecture)` and load its weights, in eval mode."""
    from safetensors.torch import load

    for required in (WEIGHTS_FILE, ARCHITECTURE_FILE):
        if required not in blobs:
            raise UnsupportedModelPackage(f"torch package has no {required}")
    architecture = json.loads(blobs[ARCHITECTURE_FILE])
    if not isinstance(architecture, dict):
        raise UnsupportedModelPackage(f"{ARCHITECTURE_FILE} is not a JSON object")
    network: torch.nn.Module = build(architecture)
    try:
        network.load_state_dict(load(blobs[WEIGHTS_FILE]), strict=True)
    except (RuntimeError, ValueError) as error:
        raise UnsupportedModelPackage(f"weights do not fit the architecture: {error}") from None
    network.eval()
    return network, architecture


class TorchModel(LoadedModel):
    """A served torch network; subclasses say how to build it and how to score a matrix."""

    def __init__(self, manifest: ModelManifest, blobs: Mapping[str, bytes]) -> None:
        super().__init__(manifest)
        self.network, self.architecture = load_network(blobs, self.build)

    @staticmethod
    def build(architecture: dict[str, Any]) -> torch.nn.Module:
        raise NotImplementedError

    def predict(self, matrix: npt.NDArray[Any]) -> npt.NDArray[Any]:
        import torch

        rows = np.asarray(matrix)
        if rows.ndim != 2 or rows.shape[1] != self.n_inputs:
            from cairn.artifacts.signature import SignatureMismatch

            raise SignatureMismatch(
                f"input has shape {rows.shape}; the model takes (n, {self.n_inputs})"
            )
        with torch.inference_mode():
            return self.score(rows)

    def score(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The predictions for an (n, n_inputs) matrix (object dtype when an input is text)."""
        raise NotImplementedError(f"{type(self).__name__} does not score")
