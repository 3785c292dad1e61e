"""What the torch algorithms share: the device, seeding, mini-batches, epochs, packaging.

Import this module only inside `train` (torch is in the `deep` extra); an algorithm declares
`requires = TORCH` so a job fails fast, naming the extra, when torch is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from cairn.artifacts import OutputColumn
from cairn.artifacts.manifest import Task

from services.trainer.algorithms.base import Device, TrainedModel, TrainingContext

if TYPE_CHECKING:
    import torch

TORCH: tuple[tuple[str, ...], str] = (("torch", "safetensors"), "deep")


def torch_device(ctx: TrainingContext) -> tuple[torch.device, Device]:
    """CUDA when the job asked for a GPU and torch sees one, else the CPU (logged either way)."""
    import torch

    if ctx.device_requested == "gpu" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        ctx.log(f"torch {torch.__version__} training on cuda:0 ({name})")
        return torch.device("cuda:0"), "gpu"
    if ctx.device_requested == "gpu":
        ctx.log(f"torch {torch.__version__} sees no CUDA device; training on the CPU")
    else:
        ctx.log(f"torch {torch.__version__} training on the CPU")
    return torch.device("cpu"), "cpu"


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return a numpy generator from the same seed."""
    import torch

    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def minibatches(n_rows: int, batch_size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Shuffled index arrays of at most `batch_size` rows covering all `n_rows`."""
    order = rng.permutation(n_rows)
    for start in range(0, n_rows, batch_size):
        yield order[start : start + batch_size]


def epochs(ctx: TrainingContext, total: int) -> Iterator[int]:
    """1..total, ending early when the job must stop (call `ensure_not_stopped` after)."""
    for epoch in range(1, total + 1):
        if ctx.should_stop():
            return
        yield epoch


def torch_model(
    network: torch.nn.Module,
    architecture: dict[str, Any],
    *,
    task: Task,
    outputs: list[OutputColumn],
    metrics: dict[str, float],
    device: Device,
    details: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> TrainedModel:
    """A trained network as a package: safetensors weights + architecture.json (no pickle)."""
    import torch
    from cairn.builtins.torch_package import torch_package_files

    network.to("cpu").eval()
    return TrainedModel(
        framework="torch",
        framework_version=torch.__version__,
        task=task,
        files={**torch_package_files(network, architecture), **(extra_files or {})},
        outputs=outputs,
        metrics=metrics,
        device=device,
        details=details or {},
        model=network,
    )


def optimizer(name: str, parameters: Any, lr: float, weight_decay: float = 0.0) -> Any:
    """SageMaker's optimizer names (`adam`, `adadelta`, `sgd`, `rmsprop`, `adagrad`) in torch."""
    import torch

    kinds = {
        "adam": torch.optim.Adam,
        "adadelta": torch.optim.Adadelta,
        "sgd": torch.optim.SGD,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }
    return kinds[name](parameters, lr=lr, weight_decay=weight_decay)
