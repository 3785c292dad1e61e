"""Factorization Machines: a linear model plus pairwise interactions through factor vectors.

Each input becomes sparse features the way SageMaker's recordIO input is: a category column is a
one-hot block (its codes, plus one slot for an unseen value), a number column is one feature
with its standardised value. So a user-id x item-id table is the classic sparse FM problem.
Outputs follow SageMaker: `score` (probability or value) and, for classifiers, `predicted_label`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cairn.builtins.torch_package import TorchModel

if TYPE_CHECKING:
    import torch


def layout(architecture: dict[str, Any]) -> tuple[list[int], int]:
    """The offset of each column's block and the total number of sparse features."""
    offsets, total = [], 0
    for column in architecture["columns"]:
        offsets.append(total)
        total += int(column["size"]) + 1 if column["kind"] == "category" else 1
    return offsets, total


def sparse_features(
    matrix: npt.NDArray[Any], architecture: dict[str, Any]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(indices, values), each (n, columns): one active feature per column of each row."""
    rows = np.asarray(matrix, dtype=np.float64)
    offsets, _ = layout(architecture)
    indices = np.empty(rows.shape, dtype=np.int64)
    values = np.ones(rows.shape, dtype=np.float32)
    for j, column in enumerate(architecture["columns"]):
        x = rows[:, j]
        if column["kind"] == "category":
            size = int(column["size"])
            known = ~np.isnan(x) & (x >= 0) & (x < size)
            indices[:, j] = offsets[j] + np.where(known, np.nan_to_num(x), size).astype(np.int64)
        else:
            indices[:, j] = offsets[j]
            scaled = (x - float(column["mean"])) / float(column["std"])
            values[:, j] = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
    return indices, values


def build(architecture: dict[str, Any]) -> torch.nn.Module:
    import torch
    from torch import nn

    _, total = layout(architecture)
    factors = int(architecture["num_factors"])

    class FactorizationMachine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(1))
            self.linear = nn.Embedding(total, 1)
            self.factors = nn.Embedding(total, factors)
            nn.init.zeros_(self.linear.weight)
            nn.init.normal_(self.factors.weight, std=float(architecture["factors_init_sigma"]))

        def forward(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            x = values.unsqueeze(-1)
            linear = torch.sum(self.linear(indices) * x, dim=(1, 2))
            v = self.factors(indices) * x
            pairwise = 0.5 * torch.sum(v.sum(dim=1) ** 2 - (v**2).sum(dim=1), dim=1)
            raw: torch.Tensor = self.bias + linear + pairwise
            return raw

    return FactorizationMachine()


class FactorizationMachinesModel(TorchModel):
    build = staticmethod(build)

    def score(self, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
        import torch

        indices, values = sparse_features(rows, self.architecture)
        raw = self.network(torch.from_numpy(indices), torch.from_numpy(values)).numpy()
        if self.architecture["predictor_type"] == "regressor":
            return np.asarray(raw, dtype=np.float64)
        probability = 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
        return np.column_stack([probability, (probability >= 0.5).astype(np.float64)])
