"""Experiments and runs (the experiments service): list, query by metric, show, compare.

Functions take any `ServiceCaller` (a `Client`); `ExperimentsCalls` offers them as methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

EXPERIMENTS: ServiceName = "experiments"


class ExperimentsCalls(ServiceCaller):
    """The experiments service's `/experiments`, `/runs` and `/compare` API."""

    def list_experiments(self) -> list[dict[str, Any]]:
        """Each experiment with its run count and latest activity."""
        return list(self._json("GET", EXPERIMENTS, "/experiments")["experiments"])

    def list_runs(
        self,
        experiment: str | None = None,
        *,
        where: str | None = None,
        sort: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs (without metric history), e.g. `where="auc > 0.8", sort="-auc"`.

        Args:
            experiment: only this experiment's runs.
            where: a filter: `FIELD OP VALUE` joined by and/or/not, fields `status`, `kind`,
                `params.X`, `metrics.X` or a bare metric name.
            sort: `FIELD` ascending, `-FIELD` or `FIELD desc` descending.
            limit: at most this many runs.
        """
        params = {
            key: value
            for key, value in {
                "experiment": experiment,
                "where": where,
                "sort": sort,
                "limit": limit,
            }.items()
            if value is not None
        }
        return list(self._json("GET", EXPERIMENTS, "/runs", params=params)["runs"])

    def describe_run(self, run: str) -> dict[str, Any]:
        """One run with its metric history, by id (`training.job-1`) or job name."""
        return dict(self._json("GET", EXPERIMENTS, f"/runs/{run}"))

    def compare_runs(self, runs: Sequence[str]) -> list[dict[str, Any]]:
        """Several runs with their metric histories, in the order asked."""
        return list(self._json("GET", EXPERIMENTS, "/compare", params={"runs": list(runs)})["runs"])
