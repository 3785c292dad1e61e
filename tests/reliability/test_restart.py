"""Restart suite: `cairn down` / `cairn up` after the demo brings everything back as it was."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.support.demo_platform import DemoPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.restarts_platform]


def first_validation_line(platform: DemoPlatform) -> str:
    summary = platform.summary
    features = pd.read_csv(summary["validation_csv"]).head(1)[summary["feature_columns"]]
    return ",".join(str(cell) for cell in next(features.itertuples(index=False)))


def test_after_a_restart_the_endpoint_gives_the_same_answer(demo_platform: DemoPlatform) -> None:
    platform = demo_platform
    platform.restart()
    invoked = platform.cli(
        "invoke", "credit-risk", "--body", first_validation_line(platform), "--json"
    )
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout)["body"] == [platform.summary["answers"]["csv"][0]]
