"""DeepAR forecasting (SageMaker's `forecasting-deepar`): one model over many related series.

Input is SageMaker's JSON Lines, `{"start": "2024-01-01 00:00:00", "target": [...], "cat": [0]}`
a line, in a `train` channel and an optional `test` channel whose series end with the
`prediction_length` values to forecast. Implemented on torch's LSTM rather than gluonts: gluonts
0.17 pins toolz below 1.0 (the platform has 1.2) and brings Lightning with it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from cairn.artifacts import OutputColumn
from cairn.errors import InvalidInput
from pydantic import Field, field_validator

from services.trainer.algorithms.base import (
    Hyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.algorithms.deep_inputs import (
    Channels,
    FileAlgorithm,
    json_lines,
    require,
    run_epochs,
)
from services.trainer.algorithms.torch_support import (
    TORCH,
    seed_everything,
    torch_device,
    torch_model,
)

DEFAULT_QUANTILES = "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]"


class DeepARHyperparameters(Hyperparameters):
    time_freq: str
    context_length: int = Field(ge=1, le=2000)
    prediction_length: int = Field(ge=1, le=2000)
    epochs: int = Field(ge=1, le=1000)
    num_cells: int = Field(default=40, ge=1, le=200)
    num_layers: int = Field(default=2, ge=1, le=8)
    likelihood: Literal["gaussian", "student-T"] = "student-T"
    dropout_rate: float = Field(default=0.1, ge=0, le=0.5)
    learning_rate: float = Field(default=0.001, ge=1e-6, le=1.0)
    mini_batch_size: int = Field(default=128, ge=1, le=1_000_000)
    num_batches_per_epoch: int = Field(default=50, ge=1, le=10_000)
    embedding_dimension: int = Field(default=10, ge=1, le=1000)
    cardinality: str = "auto"
    num_dynamic_feat: Literal["auto", "ignore"] = "auto"
    early_stopping_patience: int | None = Field(default=None, ge=1)
    num_eval_samples: int = Field(default=100, ge=1, le=1000)
    test_quantiles: str = DEFAULT_QUANTILES
    seed: int = 0

    @field_validator("time_freq")
    @classmethod
    def _known_freq(cls, value: str) -> str:
        from cairn.builtins.deepar import FREQ_PATTERN

        if not FREQ_PATTERN.match(value):
            raise ValueError("use min, H, D, W or M, optionally with a multiple (5min)")
        return value

    @field_validator("cardinality")
    @classmethod
    def _cardinality(cls, value: str) -> str:
        if value not in ("auto", "ignore") and not _int_list(value):
            raise ValueError('"auto", "ignore" or a list of category counts like [3, 5]')
        return value

    @field_validator("test_quantiles")
    @classmethod
    def _quantiles(cls, value: str) -> str:
        try:
            levels = [float(q) for q in value.strip("[] ").split(",")]
        except ValueError:
            raise ValueError("a list of numbers like [0.1, 0.5, 0.9]") from None
        if not all(0 < q < 1 for q in levels):
            raise ValueError("quantiles must lie strictly between 0 and 1")
        return value


def _int_list(value: str) -> list[int] | None:
    try:
        numbers = [int(v) for v in value.strip("[] ").split(",")]
    except ValueError:
        return None
    return numbers if all(n >= 1 for n in numbers) else None


class DeepAR(FileAlgorithm[DeepARHyperparameters]):
    name = "deepar"
    hyperparameters_model = DeepARHyperparameters
    requires = TORCH
    channels = ("train", "test")

    def train_files(
        self, channels: Channels, hyperparameters: DeepARHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        import torch
        from cairn.builtins.deepar import build_network, parse_series, scale_of, season_of

        hp = hyperparameters
        train_records = json_lines(require(channels, "train", self.name))
        test_records = json_lines(channels["test"]) if "test" in channels else []
        arch = _architecture(hp, train_records + test_records)
        train = [parse_series(r, arch, f"train record {i}") for i, r in enumerate(train_records)]
        test = [parse_series(r, arch, f"test record {i}") for i, r in enumerate(test_records)]
        span = hp.context_length + hp.prediction_length + max(arch["lags"])
        usable = [s for s in train if len(s.target) >= span]
        if not usable:
            raise InvalidInput(
                f"no train series has {span} values (context_length + prediction_length + "
                f"the longest lag, {max(arch['lags'])} for time_freq {hp.time_freq})"
            )
        ctx.log(
            f"deepar: {len(usable)} of {len(train)} train series long enough; season "
            f"{season_of(hp.time_freq)[2]}, lags {arch['lags']}"
        )
        device, device_name = torch_device(ctx)
        rng = seed_everything(hp.seed)
        network = build_network(arch).to(device)
        optimizer = torch.optim.Adam(network.parameters(), lr=hp.learning_rate)
        quantiles = [float(q) for q in hp.test_quantiles.strip("[] ").split(",")]
        first = span - hp.context_length - hp.prediction_length  # the longest lag
        steps = torch.arange(first, span, device=device)

        def train_epoch(epoch: int) -> dict[str, float]:
            network.train()
            total = 0.0
            for _ in range(hp.num_batches_per_epoch):
                history, phase0, cats = _windows(usable, span, hp.mini_batch_size, rng)
                history, phase0, cats = history.to(device), phase0.to(device), cats.to(device)
                context = history[:, first : first + hp.context_length]
                distribution, _ = network(history, steps, phase0, cats, scale_of(context))
                loss = -distribution.log_prob(history[:, steps]).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
                optimizer.step()
                total += float(loss.detach())
            return {"train:loss": total / hp.num_batches_per_epoch}

        def evaluate() -> dict[str, float]:
            if not test:
                return {}
            network.eval()  # sampling runs on the CPU, as the servers do
            scores = _test_metrics(network.cpu(), test, arch, hp.num_eval_samples, quantiles)
            network.to(device)
            return scores

        metrics = run_epochs(
            ctx,
            hp.epochs,
            train_epoch,
            evaluate,
            patience=hp.early_stopping_patience,
            watch="test:RMSE" if test else None,
            higher_is_better=False,
        )
        ensure_not_stopped(ctx)
        return torch_model(
            network,
            arch,
            task="custom",
            outputs=[OutputColumn(name="mean"), OutputColumn(name="quantiles")],
            metrics=metrics,
            device=device_name,
            details={"series": len(train), "lags": arch["lags"]},
        )


def _architecture(hp: DeepARHyperparameters, records: list[dict[str, Any]]) -> dict[str, Any]:
    from cairn.builtins.deepar import season_of

    season = season_of(hp.time_freq)[2]
    cardinality: list[int] = []
    if hp.cardinality == "auto":
        width = max((len(_cats(r)) for r in records), default=0)
        cardinality = [
            1 + max((_cats(r)[i] for r in records if len(_cats(r)) > i), default=0)
            for i in range(width)
        ]
    elif hp.cardinality != "ignore":
        cardinality = _int_list(hp.cardinality) or []
    lags = sorted({1, 2, 3, max(season - 1, 1), season, season + 1})
    return {
        "time_freq": hp.time_freq,
        "season": season,
        "lags": lags,
        "context_length": hp.context_length,
        "prediction_length": hp.prediction_length,
        "num_cells": hp.num_cells,
        "num_layers": hp.num_layers,
        "dropout_rate": hp.dropout_rate,
        "likelihood": hp.likelihood,
        "embedding_dimension": hp.embedding_dimension,
        "cardinality": cardinality,
        "ignore_dynamic_feat": hp.num_dynamic_feat == "ignore",
        "ignore_cat": hp.cardinality == "ignore",
    }


def _cats(record: dict[str, Any]) -> list[int]:
    cats = record.get("cat", [])
    cats = [cats] if isinstance(cats, int) else cats
    if not isinstance(cats, list) or not all(isinstance(c, int) and c >= 0 for c in cats):
        raise InvalidInput("cat must be a list of non-negative integers")
    return cats


def _windows(series: list[Any], span: int, size: int, rng: np.random.Generator) -> Any:
    """A batch of random `span`-long windows (history, phase of their first value, categories)."""
    import torch

    picks = rng.integers(0, len(series), size)
    history = np.empty((size, span), dtype=np.float32)
    phase0 = np.empty(size, dtype=np.int64)
    for row, pick in enumerate(picks):
        chosen = series[pick]
        start = int(rng.integers(0, len(chosen.target) - span + 1))
        history[row] = chosen.target[start : start + span]
        phase0[row] = chosen.phase0 + start
    cats = torch.tensor([series[p].cats for p in picks], dtype=torch.long).reshape(size, -1)
    return torch.from_numpy(history), torch.from_numpy(phase0), cats


def _test_metrics(
    network: Any, test: list[Any], arch: dict[str, Any], n: int, quantiles: list[float]
) -> dict[str, float]:
    """SageMaker's test:RMSE and test:mean_wQuantileLoss on the held-out last values."""
    import dataclasses

    import torch
    from cairn.builtins.deepar import sample_paths

    horizon = arch["prediction_length"]
    long_enough = [s for s in test if len(s.target) > horizon]
    if not long_enough:
        raise InvalidInput(f"no test series is longer than prediction_length={horizon}")
    cut = [dataclasses.replace(s, target=s.target[:-horizon]) for s in long_enough]
    actual = np.stack([s.target[-horizon:] for s in long_enough])
    with torch.no_grad():
        samples = sample_paths(network, cut, arch, n).numpy()
    rmse = float(np.sqrt(np.mean((samples.mean(axis=1) - actual) ** 2)))
    denominator = max(float(np.abs(actual).sum()), 1e-9)
    losses = []
    for q in quantiles:
        predicted = np.quantile(samples, q, axis=1)
        losses.append(
            2 * float(np.abs((actual - predicted) * (q - (actual < predicted))).sum()) / denominator
        )
    return {"test:RMSE": rmse, "test:mean_wQuantileLoss": float(np.mean(losses))}
