"""DeepAR: an autoregressive LSTM whose head is a likelihood; forecasts are sampled paths.

Each step sees lagged values of its series (scaled by the mean absolute value of the context),
the phase of its season (sin/cos), its category embeddings and the log of the scale. Requests
follow SageMaker: `{"instances": [{"start": ..., "target": [...], "cat": [...]}],
"configuration": {"num_samples": 100, "output_types": ["mean", "quantiles", "samples"],
"quantiles": ["0.1", "0.5", "0.9"]}}` gives `{"predictions": [{"mean": [...],
"quantiles": {"0.1": [...]}, "samples": [[...]]}]}`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from cairn.builtins.structured import StructuredModel, instances, load_json
from cairn.errors import InvalidInput

# SageMaker's time_freq units -> (pandas frequency, steps in one season)
FREQUENCIES = {"min": ("min", 60), "H": ("h", 24), "D": ("D", 7), "W": ("W", 52), "M": ("M", 12)}
FREQ_PATTERN = re.compile(r"^([1-9][0-9]*)?(min|H|D|W|M)$")
MAX_SAMPLES = 1000


@dataclass
class Series:
    target: npt.NDArray[np.float32]
    phase0: int  # the season phase of target[0]
    cats: list[int]


def season_of(time_freq: str) -> tuple[str, int, int]:
    """(pandas frequency, multiple, season length in steps) of a SageMaker time_freq."""
    match = FREQ_PATTERN.match(time_freq)
    if match is None:
        raise InvalidInput(f"time_freq {time_freq!r}: use min, H, D, W or M, optionally with N")
    multiple = int(match.group(1) or 1)
    pandas_freq, season = FREQUENCIES[match.group(2)]
    return pandas_freq, multiple, season // multiple if season % multiple == 0 else season


def phase_of(start: Any, time_freq: str) -> int:
    import pandas as pd

    pandas_freq, multiple, season = season_of(time_freq)
    try:
        ordinal = int(pd.Period(pd.Timestamp(str(start)), freq=pandas_freq).ordinal)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"start {start!r} is not a timestamp: {error}") from None
    return (ordinal // multiple) % season


def parse_series(record: Any, arch: dict[str, Any], where: str) -> Series:
    """A SageMaker DeepAR record; missing values and dynamic features are refused."""
    if not isinstance(record, dict) or "start" not in record or "target" not in record:
        raise InvalidInput(f'{where}: needs "start" and "target"')
    if record.get("dynamic_feat") and not arch["ignore_dynamic_feat"]:
        raise InvalidInput(f"{where}: dynamic_feat is not supported; set num_dynamic_feat=ignore")
    target = record["target"]
    if not isinstance(target, list) or not target:
        raise InvalidInput(f"{where}: target must be a non-empty list of numbers")
    try:
        values = np.asarray(target, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidInput(f"{where}: target must hold numbers only (no missing values)") from None
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise InvalidInput(f"{where}: target must hold finite numbers only (no missing values)")
    cats = [] if arch["ignore_cat"] else record.get("cat", [])
    if isinstance(cats, int):
        cats = [cats]
    cardinality = arch["cardinality"]
    if not isinstance(cats, list) or len(cats) != len(cardinality):
        raise InvalidInput(f"{where}: cat must list {len(cardinality)} integer categories")
    for value, size in zip(cats, cardinality, strict=True):
        if not isinstance(value, int) or not 0 <= value < size:
            raise InvalidInput(f"{where}: cat values must be integers in 0..cardinality-1")
    return Series(values, phase_of(record["start"], arch["time_freq"]), cats)


def build_network(a: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    class DeepAR(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lags = [int(lag) for lag in a["lags"]]
            self.season = int(a["season"])
            self.embeddings = nn.ModuleList(
                nn.Embedding(size, a["embedding_dimension"]) for size in a["cardinality"]
            )
            width = len(self.lags) + 3 + a["embedding_dimension"] * len(a["cardinality"])
            dropout = a["dropout_rate"] if a["num_layers"] > 1 else 0.0
            self.rnn = nn.LSTM(
                width, a["num_cells"], a["num_layers"], batch_first=True, dropout=dropout
            )
            self.head = nn.Linear(a["num_cells"], 3 if a["likelihood"] == "student-T" else 2)

        def inputs(
            self,
            history: torch.Tensor,
            steps: torch.Tensor,
            phase0: torch.Tensor,
            cats: torch.Tensor,
            scale: torch.Tensor,
        ) -> torch.Tensor:
            """Inputs of the steps predicting history[:, steps] (all lags are in history)."""
            lagged = torch.stack([history[:, steps - lag] for lag in self.lags], dim=-1)
            angle = 2 * math.pi * ((phase0[:, None] + steps[None, :]) % self.season) / self.season
            parts = [
                lagged / scale[:, None, None],
                torch.sin(angle)[..., None],
                torch.cos(angle)[..., None],
                torch.log(scale)[:, None, None].expand(-1, len(steps), 1),
            ]
            for index, embedding in enumerate(self.embeddings):
                parts.append(embedding(cats[:, index])[:, None, :].expand(-1, len(steps), -1))
            return torch.cat(parts, dim=-1)

        def distribution(self, output: torch.Tensor, scale: torch.Tensor) -> Any:
            params = self.head(output)
            loc = params[..., 0] * scale[:, None]
            sigma = (nn.functional.softplus(params[..., 1]) + 1e-3) * scale[:, None]
            if params.shape[-1] == 3:
                nu = 2.0 + nn.functional.softplus(params[..., 2])
                return torch.distributions.StudentT(nu, loc, sigma)
            return torch.distributions.Normal(loc, sigma)

        def forward(
            self,
            history: torch.Tensor,
            steps: torch.Tensor,
            phase0: torch.Tensor,
            cats: torch.Tensor,
            scale: torch.Tensor,
            state: Any = None,
        ) -> Any:
            output, state = self.rnn(self.inputs(history, steps, phase0, cats, scale), state)
            return self.distribution(output, scale), state

    return DeepAR()


def scale_of(context: Any) -> Any:
    """Mean absolute value of each context (1 for an all-zero one), as in DeepAR's paper."""
    mean = context.abs().mean(dim=1)
    return mean.where(mean > 0, mean.new_ones(()))


def sample_paths(network: Any, batch: list[Series], arch: dict[str, Any], n: int) -> Any:
    """(series, samples, prediction_length) sampled forecasts following each series' end."""
    import torch

    context, horizon = arch["context_length"], arch["prediction_length"]
    span = context + max(network.lags)
    history = torch.zeros((len(batch), span + horizon))
    phase0 = torch.zeros(len(batch), dtype=torch.long)
    for row, series in enumerate(batch):
        tail = series.target[-span:]
        history[row, span - len(tail) : span] = torch.from_numpy(tail)
        phase0[row] = series.phase0 + len(series.target) - span
    cats = torch.tensor([s.cats for s in batch], dtype=torch.long).reshape(len(batch), -1)
    scale = scale_of(history[:, span - context : span])
    warm = torch.arange(span - context, span)
    _, state = network(history, warm, phase0, cats, scale)
    paths, phase0, cats, scale = (
        t.repeat_interleave(n, dim=0) for t in (history, phase0, cats, scale)
    )
    state = tuple(part.repeat_interleave(n, dim=1) for part in state)
    for step in range(span, span + horizon):
        distribution, state = network(paths, torch.tensor([step]), phase0, cats, scale, state)
        paths[:, step] = distribution.sample()[:, 0]
    return paths[:, span:].reshape(len(batch), n, horizon)


class DeepARModel(StructuredModel):
    @staticmethod
    def build(architecture: dict[str, Any]) -> Any:
        return build_network(architecture)

    def record_answers(self, records: list[Any], environment: dict[str, str]) -> list[Any]:
        """Batch transform takes the configuration from `DEEPAR_INFERENCE_CONFIG`, as SageMaker."""
        config: Any = {}
        if "DEEPAR_INFERENCE_CONFIG" in environment:
            config = load_json(environment["DEEPAR_INFERENCE_CONFIG"].encode())
        answered = self.answer({"instances": records, "configuration": config})
        return cast(list[Any], answered["predictions"])

    def answer(self, payload: Any) -> Any:
        items = instances(payload, limit=1000)
        config = payload.get("configuration", {}) if isinstance(payload, dict) else {}
        if not isinstance(config, dict):
            raise InvalidInput("configuration must be an object")
        n = config.get("num_samples", 100)
        if not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
            raise InvalidInput(f"num_samples must be an integer in 1..{MAX_SAMPLES}")
        types = config.get("output_types", ["mean", "quantiles"])
        if not isinstance(types, list) or not set(types) <= {"mean", "quantiles", "samples"}:
            raise InvalidInput('output_types must list "mean", "quantiles" and/or "samples"')
        quantiles = config.get("quantiles", ["0.1", "0.5", "0.9"])
        try:
            levels = [float(q) for q in quantiles]
        except (TypeError, ValueError):
            raise InvalidInput(
                'quantiles must be numbers as strings, e.g. ["0.1", "0.9"]'
            ) from None
        if not levels or not all(0 < q < 1 for q in levels):
            raise InvalidInput("quantiles must lie strictly between 0 and 1")
        batch = [
            parse_series(item, self.architecture, f"instance {i}") for i, item in enumerate(items)
        ]
        samples = sample_paths(self.network, batch, self.architecture, n).numpy()
        predictions = []
        for paths in samples:
            answer: dict[str, Any] = {}
            if "mean" in types:
                answer["mean"] = paths.mean(axis=0).tolist()
            if "quantiles" in types:
                answer["quantiles"] = {
                    str(q): np.quantile(paths, float(q), axis=0).tolist() for q in quantiles
                }
            if "samples" in types:
                answer["samples"] = paths.tolist()
            predictions.append(answer)
        return {"predictions": predictions}
