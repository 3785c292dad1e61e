"""The closed loop as a user runs it: `cairn up`, then `cairn demo --drift`, then the SDK and bus.

The demo serves the credit model, shifts its traffic and waits; the monitor, trainer, registry and
deployer close the loop through events alone. The test checks what the demo claims: a retrained
version is approved and serves all traffic, every event of the chain carries the drift's
correlation id, and the loop time is measured (printed for the notes).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cairn.bus.client import tail_events
from cairn.settings import CairnSettings
from cairn_sdk import Client

pytestmark = pytest.mark.e2e

CAIRN = str(Path(sys.executable).with_name("cairn"))
SERVICES = ["ingest", "trainer", "registry", "deployer", "gateway", "monitor"]
CHAIN = [
    "DriftDetected",
    "RetrainRequested",
    "TrainingJobRequested",
    "TrainingJobCompleted",
    "ModelPackageRegistered",
    "ChallengerEvaluated",
    "ModelApprovalRequested",
    "ModelApprovalChanged",
    "DeploymentRequested",
    "EndpointUpdated",
]

STEPS = ["TrainingJobStarted", "TrainingJobProgressed", "DeploymentRolledBack"]


def cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAIRN, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def all_healthy(env: dict[str, str]) -> dict[str, Any] | None:
    state = json.loads(cli(env, "status", "--json").stdout or "{}")
    if not state.get("running"):
        return None
    statuses = {service["name"]: service["status"] for service in state["services"]}
    return state if all(statuses.get(name) == "healthy" for name in SERVICES) else None


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("drift") / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAIRN_")}
    env.update(CAIRN_HOME=str(home), CAIRN_OTEL_EXPORTER="none")
    log = home.parent / "up.log"
    only = [arg for name in SERVICES for arg in ("--only", name)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CAIRN, "up", *only], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while (state := all_healthy(env)) is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"services not healthy:\n{log.read_text()}"
            time.sleep(0.3)
        demo = cli(
            env,
            "demo",
            "--drift",
            "--rows",
            "8000",
            "--num-round",
            "30",
            "--interval-s",
            "4",
            "--bake-s",
            "8",
            "--drift-timeout-s",
            "90",
            "--no-start",
            timeout_s=150,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr + log.read_text()[-5000:]
        summary = json.loads((home / "demo" / "drift-summary.json").read_text())
        yield {"home": home, "env": env, "state": state, "demo": demo, "summary": summary}
    finally:
        down = cli(env, "down", "--timeout", "20")
        process.wait(timeout=30)
        assert down.returncode == 0, down.stderr


def test_retrained_version_is_approved_and_serves_all_traffic(loop: dict[str, Any]) -> None:
    summary = loop["summary"]
    challenger = summary["challenger_version"]
    assert summary["outcome"] == "promoted"
    assert challenger is not None and challenger > summary["champion_version"]
    with Client.from_runtime(loop["home"]) as client:
        version = client.describe_model_package("credit-risk", challenger)
        endpoint = client.describe_endpoint("credit-risk")
    assert version["approval_status"] == "Approved"
    assert version["lineage"]["training_job"].startswith("credit-risk-retrain-")
    assert endpoint["status"] == "InService"
    served = [(v["model_version"], v["weight"]) for v in endpoint["production_variants"]]
    assert served == [(challenger, 1.0)]


def test_every_event_of_the_chain_shares_the_drifts_correlation(loop: dict[str, Any]) -> None:
    correlation = loop["summary"]["correlation_id"]
    settings = CairnSettings(kafka_bootstrap_servers=loop["state"]["kafka_bootstrap_servers"])

    async def chain() -> list[Any]:
        found: list[Any] = []
        stream = tail_events(settings, [*CHAIN, *STEPS], from_beginning=True)
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                try:
                    item = await asyncio.wait_for(anext(stream), timeout=2)
                except TimeoutError:
                    break
                if item.error is None and not isinstance(item.event, dict):
                    found.append(item.event)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return found

    events = [event for event in asyncio.run(chain()) if event.correlation_id == correlation]
    types = {event.type for event in events}
    assert set(CHAIN) <= types, f"missing from the chain: {set(CHAIN) - types}"
    by_id = {str(event.event_id): event for event in events}
    # Each step names its cause, back to the drift (the canary's steps name the request).
    for event in events:
        if event.type != "DriftDetected":
            assert event.causation_id in by_id, f"{event.type} has a cause outside the chain"
    promoted = [e for e in events if e.type == "EndpointUpdated" and e.data.status == "InService"]
    assert promoted and promoted[-1].data.production_variants[0].weight == 1.0


def test_the_loop_time_is_measured_and_shown(loop: dict[str, Any]) -> None:
    summary = loop["summary"]
    milestones = summary["milestones_s"]
    order = [
        "drift detected",
        "retrain requested",
        "training completed",
        "challenger evaluated",
        "canary started",
        "serving 100%",
    ]
    times = [milestones[name] for name in order]
    assert all(value is not None for value in times), milestones
    assert times == sorted(times) and summary["loop_s"] == times[-1]
    output = loop["demo"].stdout
    for expected in ("DriftDetected", "ChallengerEvaluated", "EndpointUpdated", "serving 100%"):
        assert expected in output
    print(f"\ndrift onset -> retrained model serving 100%: {summary['loop_s']:.1f} s")
    print(json.dumps(milestones, indent=2))
    print(*[line for line in output.splitlines() if "ChallengerEvaluated" in line], sep="\n")
