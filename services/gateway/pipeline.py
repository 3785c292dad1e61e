"""Inference pipelines served in process: a variant's containers scored one after the other.

A chain is wrapped as one `LoadedModel` (inputs of its first step, outputs of its last) behind
one micro-batcher (`ModelCache.serving`), so every protocol, capture, shadow and batching path
serves it unchanged and a single-model variant does no extra work at all. Between steps the
output matrix of one is the input of the next (a one-column answer becomes an (n, 1) matrix);
the deployer has checked at create time that the steps connect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.artifacts import LoadedModel
from cairn.artifacts.manifest import Signature


class PipelineModel(LoadedModel):
    """Steps scored in order in one predict call; explanations are not offered for a chain."""

    def __init__(self, steps: Sequence[LoadedModel]) -> None:
        first, last = steps[0].manifest, steps[-1].manifest
        signature = Signature(inputs=first.signature.inputs, outputs=last.signature.outputs)
        super().__init__(last.model_copy(update={"signature": signature}))
        self.steps = tuple(steps)

    def predict(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        result: npt.NDArray[Any] = matrix
        for step in self.steps:
            if result.ndim == 1:
                result = result.reshape(-1, 1)
            result = step.predict(result)
        return result


def pipeline_uri(step_uris: Sequence[str]) -> str:
    """The chain's key among an endpoint's models; it never matches a Target-Model name."""
    return "pipeline(" + ",".join(step_uris) + ")"
