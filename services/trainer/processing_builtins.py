"""Built-in processors: data-quality report, train/validation split, feature scaling.

Each reads every CSV, Parquet or JSON Lines file of the job's inputs as one table and writes into
its outputs' local directories (the first output, or the outputs named `train` and `validation`
for the split), so the usual upload and dataset registration apply. Options come from the job's
arguments, SageMaker-style (`--validation-fraction 0.2`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from cairn.contracts.processing_events import ProcessingJobRequested
from cairn.errors import InvalidInput

_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
    ".jsonl": lambda path: pd.read_json(path, lines=True),
}


class _Arguments(argparse.ArgumentParser):
    """argparse that reports a bad argument as InvalidInput instead of exiting the worker."""

    def error(self, message: str) -> NoReturn:
        raise InvalidInput(f"arguments: {message}", field="arguments")


def run_builtin(
    name: str, request: ProcessingJobRequested, root: Path, log: Callable[[str], None]
) -> None:
    from services.trainer.processing_exec import local

    inputs = [local(root, item.destination) for item in request.inputs]
    outputs = {o.output_name: local(root, o.source) for o in request.outputs}
    if not inputs or not outputs:
        raise InvalidInput(f"built-in {name} needs at least one input and one output")
    table = _read_table(inputs)
    log(f"read {len(table)} rows x {len(table.columns)} columns")
    if name == "data-quality":
        _data_quality(table, request.arguments, next(iter(outputs.values())))
    elif name == "train-validation-split":
        _split(table, request.arguments, outputs)
    else:
        _scale(table, request.arguments, next(iter(outputs.values())), log)


def _read_table(directories: list[Path]) -> pd.DataFrame:
    frames = []
    for directory in directories:
        for path in sorted(directory.rglob("*")):
            reader = _READERS.get(path.suffix.lower())
            if reader is None or not path.is_file():
                continue
            try:
                frames.append(reader(path))
            except (ValueError, OSError) as error:
                raise InvalidInput(f"cannot read input file {path.name}: {error}") from error
    if not frames:
        raise InvalidInput("the inputs hold no CSV, Parquet or JSON Lines files", field="inputs")
    return pd.concat(frames, ignore_index=True)


def _data_quality(table: pd.DataFrame, arguments: list[str], output: Path) -> None:
    """One JSON report: per column its type, missing share, distinct count and statistics."""
    _Arguments(prog="data-quality", add_help=False).parse_args(arguments)
    columns: dict[str, dict[str, Any]] = {}
    for column in table.columns:
        series = table[column]
        stats: dict[str, Any] = {
            "dtype": str(series.dtype),
            "missing": int(series.isna().sum()),
            "missing_fraction": float(series.isna().mean()) if len(series) else 0.0,
            "distinct": int(series.nunique()),
        }
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            described = series.describe()
            for stat in ("mean", "std", "min", "max"):
                value = described.get(stat)
                stats[stat] = None if value is None or pd.isna(value) else float(value)
        columns[str(column)] = stats
    report = {
        "row_count": len(table),
        "column_count": len(table.columns),
        "duplicate_rows": int(table.duplicated().sum()),
        "columns": columns,
    }
    (output / "data_quality.json").write_text(json.dumps(report, indent=2))


def _split(table: pd.DataFrame, arguments: list[str], outputs: dict[str, Path]) -> None:
    """Shuffled split into `train` and `validation` outputs (CSV with a header)."""
    parser = _Arguments(prog="train-validation-split", add_help=False)
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(arguments)
    if not 0 < options.validation_fraction < 1:
        raise InvalidInput("arguments: --validation-fraction must lie between 0 and 1")
    missing = {"train", "validation"} - set(outputs)
    if missing:
        raise InvalidInput(
            "outputs: the split writes outputs named train and validation; "
            f"missing {sorted(missing)}"
        )
    shuffled = table.sample(frac=1.0, random_state=options.seed).reset_index(drop=True)
    cut = round(len(shuffled) * (1 - options.validation_fraction))
    shuffled.iloc[:cut].to_csv(outputs["train"] / "train.csv", index=False)
    shuffled.iloc[cut:].to_csv(outputs["validation"] / "validation.csv", index=False)


def _scale(
    table: pd.DataFrame, arguments: list[str], output: Path, log: Callable[[str], None]
) -> None:
    """Standard or min-max scaling of numeric columns; the fitted parameters go alongside."""
    parser = _Arguments(prog="feature-scaling", add_help=False)
    parser.add_argument("--method", choices=["standard", "minmax"], default="standard")
    parser.add_argument("--exclude", action="append", default=[], help="A column left as is.")
    options = parser.parse_args(arguments)
    unknown = set(options.exclude) - {str(c) for c in table.columns}
    if unknown:
        raise InvalidInput(f"arguments: --exclude names unknown columns {sorted(unknown)}")
    scaled = table.copy()
    parameters: dict[str, dict[str, float]] = {}
    for column in table.columns:
        series = table[column]
        if str(column) in options.exclude or not pd.api.types.is_numeric_dtype(series):
            continue
        if pd.api.types.is_bool_dtype(series):
            continue
        values = series.astype(float)
        if options.method == "standard":
            centre, spread = float(values.mean()), float(values.std(ddof=0))
        else:
            centre, spread = float(values.min()), float(values.max() - values.min())
        spread = spread if spread and np.isfinite(spread) else 1.0
        scaled[column] = (values - centre) / spread
        parameters[str(column)] = {"offset": centre, "scale": spread}
    log(f"scaled {len(parameters)} column(s) with {options.method}")
    scaled.to_csv(output / "scaled.csv", index=False)
    (output / "scaling.json").write_text(
        json.dumps({"method": options.method, "columns": parameters}, indent=2)
    )
