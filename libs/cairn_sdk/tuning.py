"""Hyperparameter tuning and StopTrainingJob: the tuner's and the trainer's stop APIs.

Functions take any `ServiceCaller` (a `Client`); `TuningCalls` offers them as methods for
`Client` to inherit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cairn.errors import Unavailable

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

TUNER: ServiceName = "tuner"
TERMINAL_TUNING_STATUSES = frozenset({"Completed", "Failed", "Stopped"})


def parse_range(text: str) -> tuple[str, dict[str, Any]]:
    """`eta=0.01:0.3:log`, `max_depth=3:10:int`, `booster=gbtree,dart` -> (kind, range).

    Scalings: `log`, `rlog` (ReverseLogarithmic), `lin`; `int` makes an integer range.
    """
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise ValueError(f"{text!r}: expected NAME=MIN:MAX[:int|log|rlog] or NAME=A,B,C")
    parts = spec.split(":")
    if len(parts) == 1:
        return "categorical", {"name": name, "values": [_value(v) for v in spec.split(",")]}
    low, high, *flags = parts
    scaling = "Auto"
    for flag in flags:
        scaling = {"log": "Logarithmic", "rlog": "ReverseLogarithmic", "lin": "Linear"}.get(
            flag, scaling
        )
    if "int" in flags:
        body = {"name": name, "min_value": int(low), "max_value": int(high)}
        return "integer", body | {"scaling_type": scaling}
    body = {"name": name, "min_value": float(low), "max_value": float(high)}
    return "continuous", body | {"scaling_type": scaling}


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(text.lower(), text)


def tuning_request(
    tuning_job_name: str,
    algorithm: str,
    channels: Mapping[str, str],
    *,
    objective: str,
    maximize: bool = True,
    ranges: Sequence[str] = (),
    strategy: str = "Bayesian",
    max_jobs: int = 10,
    max_parallel: int = 1,
    static_hyperparameters: Mapping[str, Any] | None = None,
    label_column: str | None = None,
    content_type: str = "text/csv",
    early_stopping: str = "Off",
    warm_start: Sequence[str] = (),
    warm_start_jobs: Sequence[str] = (),
    warm_start_type: str = "IdenticalDataAndAlgorithm",
    register_group: str | None = None,
    random_seed: int | None = None,
    max_runtime_s: int | None = None,
    hyperband: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The HyperParameterTuningJobRequested body for `create_tuning_job`."""
    parameter_ranges: dict[str, list[dict[str, Any]]] = {
        "integer": [],
        "continuous": [],
        "categorical": [],
    }
    for text in ranges:
        kind, item = parse_range(text)
        parameter_ranges[kind].append(item)
    body: dict[str, Any] = {
        "tuning_job_name": tuning_job_name,
        "strategy": strategy,
        "objective": {"metric_name": objective, "type": "Maximize" if maximize else "Minimize"},
        "parameter_ranges": parameter_ranges,
        "training_job_definition": {
            "algorithm": algorithm,
            "input_channels": [
                {"name": n, "uri": u, "content_type": content_type, "label_column": label_column}
                for n, u in channels.items()
            ],
            "static_hyperparameters": dict(static_hyperparameters or {}),
        },
        "resource_limits": {
            "max_number_of_training_jobs": max_jobs,
            "max_parallel_training_jobs": max_parallel,
            "max_runtime_s": max_runtime_s,
        },
        "early_stopping_type": early_stopping,
        "random_seed": random_seed,
    }
    if hyperband:
        body["hyperband"] = dict(hyperband)
    if warm_start or warm_start_jobs:
        body["warm_start"] = {
            "type": warm_start_type,
            "parent_tuning_jobs": list(warm_start),
            "training_jobs": list(warm_start_jobs),
        }
    if register_group:
        body["registration"] = {"model_package_group": register_group}
    return body


def create_tuning_job(caller: ServiceCaller, request: Mapping[str, Any]) -> dict[str, Any]:
    """CreateHyperParameterTuningJob (400 naming the field on bad input)."""
    return dict(caller._json("POST", TUNER, "/tuning-jobs", json=dict(request)))


def describe_tuning_job(caller: ServiceCaller, name: str) -> dict[str, Any]:
    return dict(caller._json("GET", TUNER, f"/tuning-jobs/{name}"))


def list_tuning_jobs(caller: ServiceCaller) -> list[dict[str, Any]]:
    return list(caller._json("GET", TUNER, "/tuning-jobs")["tuning_jobs"])


def stop_tuning_job(caller: ServiceCaller, name: str, reason: str = "") -> dict[str, Any]:
    body = {"reason": reason}
    return dict(caller._json("POST", TUNER, f"/tuning-jobs/{name}/stop", json=body))


def wait_for_tuning_job(
    caller: ServiceCaller,
    name: str,
    *,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 1.0,
    timeout_s: float = 24 * 3600.0,
) -> dict[str, Any]:
    """Poll DescribeHyperParameterTuningJob until it ends; `on_poll` sees each answer.

    A tuner that restarts meanwhile is waited for (on its new URL if it moved): the tuning job
    goes on without it, so its real outcome is what this returns.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        job = dict(caller._json_through_restarts("GET", TUNER, f"/tuning-jobs/{name}"))
        if on_poll is not None:
            on_poll(job)
        if job["status"] in TERMINAL_TUNING_STATUSES:
            return job
        if time.monotonic() > deadline:
            raise Unavailable(f"tuning job {name} is still {job['status']} after {timeout_s:.0f}s")
        time.sleep(poll_s)


def stop_training_job(
    caller: ServiceCaller, job_name: str, *, reason: str = "", keep_partial_model: bool = False
) -> dict[str, Any]:
    """StopTrainingJob: Stopped at once if Pending, else Stopping until its worker stops."""
    body = {"reason": reason, "keep_partial_model": keep_partial_model}
    return dict(caller._json("POST", "trainer", f"/training-jobs/{job_name}/stop", json=body))


def training_job_logs(caller: ServiceCaller, job_name: str, attempt: int | None = None) -> str:
    """One attempt's log (default: the latest)."""
    params = {"attempt": attempt} if attempt is not None else None
    return caller._send("GET", "trainer", f"/training-jobs/{job_name}/logs", params=params).text


class TuningCalls(ServiceCaller):
    """The functions above as `Client` methods."""

    def create_tuning_job(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return create_tuning_job(self, request)

    def describe_tuning_job(self, name: str) -> dict[str, Any]:
        return describe_tuning_job(self, name)

    def list_tuning_jobs(self) -> list[dict[str, Any]]:
        return list_tuning_jobs(self)

    def stop_tuning_job(self, name: str, reason: str = "") -> dict[str, Any]:
        return stop_tuning_job(self, name, reason)

    def wait_for_tuning_job(self, name: str, **options: Any) -> dict[str, Any]:
        return wait_for_tuning_job(self, name, **options)

    def stop_training_job(
        self, job_name: str, *, reason: str = "", keep_partial_model: bool = False
    ) -> dict[str, Any]:
        return stop_training_job(
            self, job_name, reason=reason, keep_partial_model=keep_partial_model
        )
