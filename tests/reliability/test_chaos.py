"""Chaos suite: kill -9 a service at a random moment of the demo flow, again and again.

One `cairn up` of every service a kill can hit (trainer, registry, deployer, gateway, monitor,
batch, tuner) serves every round. A round runs one piece of the flow through the CLI with
`--wait` (train with registration; approve and a canary endpoint update; a batch transform; a
two-trial tuning job), kills its victim after a sentinel event plus a random delay, and checks that
the CLI's exit code and answer are the true final state and that every accepted job, model
version and endpoint revision happened exactly once (see tests/reliability/chaos_flows.py).

The schedule is drawn from a seed, printed at the start and in every failure; set
`CAIRN_CHAOS_SEED` to replay one. CI runs one round per service; `pytest -m long
tests/reliability` runs `CAIRN_CHAOS_ROUNDS` (default 40) random rounds. The summary (kills per
service, rounds) is printed and appended to `reliability-report.json` in
`CAIRN_RELIABILITY_REPORT_DIR` when set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from tests.reliability.chaos_flows import put_data, serve_two_versions
from tests.reliability.chaos_platform import chaos_platform
from tests.reliability.chaos_rounds import ChaosRun, Round, schedule, summary_lines
from tests.reliability.report import append_report

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("CAIRN_CHAOS_SEED") or secrets.randbelow(1_000_000))
LONG_ROUNDS = int(os.environ.get("CAIRN_CHAOS_ROUNDS", "40"))
CI_ROUNDS = schedule(SEED)
LONG_SCHEDULE = schedule(SEED, LONG_ROUNDS)


@pytest.fixture(scope="module")
def chaos(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ChaosRun]:
    """The platform with data, two model versions and a served endpoint; the summary at the end."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")

    def say(line: str) -> None:
        """A line on the terminal now, even while pytest captures the output."""
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    say(f"chaos: seed {SEED} (set CAIRN_CHAOS_SEED={SEED} to replay this schedule)")
    home = tmp_path_factory.mktemp("chaos") / "home"
    with chaos_platform(home) as platform:
        put_data(platform)
        serve_two_versions(platform)
        run = ChaosRun(platform, SEED)
        try:
            yield run
            run.recheck()
        finally:
            summary = run.summary()
            for line in summary_lines(summary):
                say(line)
            append_report(summary)


@pytest.mark.parametrize("planned", CI_ROUNDS, ids=[r.name for r in CI_ROUNDS])
def test_a_killed_service_loses_and_doubles_nothing_and_wait_tells_the_truth(
    chaos: ChaosRun, planned: Round
) -> None:
    outcome = chaos.play(planned, "ci")
    if planned.victim == "trainer":  # its worker died mid-job; the job was taken over
        assert outcome.mid_way


@pytest.mark.long
@pytest.mark.parametrize("planned", LONG_SCHEDULE, ids=[r.name for r in LONG_SCHEDULE])
def test_many_random_kills_lose_and_double_nothing(chaos: ChaosRun, planned: Round) -> None:
    chaos.play(planned, "long")
