"""The console's work areas in a real headless browser, on the shared demo platform: training
(the demo's job with its metric curve, a job started now whose curve grows live from the event
stream, stopped from its page), batch transform, pipelines (an execution's DAG with each step's
status), and the tuning, experiments, labeling and edge areas (their page, or the shell's note
that this platform does not run the service). A read-only key sees no stop button, and the
trainer refuses the stop anyway. Screenshots go to the session's folder.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.support.auth import home_headers
from tests.support.browser import needs_browser, open_area, screenshot, sign_in, testid, wait_for
from tests.support.demo_platform import DemoPlatform
from tests.support.tansu import unique_name

pytestmark = [pytest.mark.e2e, needs_browser]
HANG_GUARD_S = 120.0
# A job long enough to be stopped while it trains: the most rounds, deep trees, fine bins;
# progress every other round, so its curve grows while the test watches.
LONG_ROUNDS = 10_000


def approval_pipeline(name: str) -> dict[str, Any]:
    """A pipeline that needs no other service: a condition, a callback that waits, a fail."""
    return {
        "name": name,
        "definition": {
            "description": "console test: a gate, a human approval, a check",
            "parameters": {"threshold": {"type": "integer", "default": 1}},
            "steps": [
                {
                    "name": "gate",
                    "type": "Condition",
                    "condition": {"op": ">=", "left": {"get": "parameters.threshold"}, "right": 1},
                    "if_steps": ["approve"],
                    "else_steps": ["reject"],
                },
                {"name": "approve", "type": "Callback", "outputs": {"approved": "boolean"}},
                {"name": "reject", "type": "Fail", "error_message": "below the threshold"},
                {
                    "name": "check",
                    "type": "Condition",
                    "condition": {
                        "op": "==",
                        "left": {"get": "steps.approve.outputs.approved"},
                        "right": True,
                    },
                },
            ],
        },
    }


def wait_until(what: str, probe: Any) -> Any:
    deadline = time.monotonic() + HANG_GUARD_S
    while not (found := probe()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)
    return found


def read_only_token(platform: DemoPlatform) -> str:
    made = platform.cli("keys", "create", "--name", "viewer", "--scope", "read", "--json")
    assert made.returncode == 0, made.stderr
    token: str = json.loads(made.stdout)["token"]
    return token


def start_long_job(platform: DemoPlatform, headers: dict[str, str]) -> str:
    """A training job on the demo's data that reports progress every round until stopped."""
    trainer = platform.url("trainer")
    demo = httpx.get(
        f"{trainer}/training-jobs/{platform.summary['job_name']}", headers=headers, timeout=30
    ).json()
    name = unique_name("console-live")
    request = {
        **demo["request"],
        "job_name": name,
        "registration": None,
        "hyperparameters": {
            "objective": "binary:logistic",
            "num_round": LONG_ROUNDS,
            "max_depth": 10,
            "max_bin": 1024,
            "min_child_weight": 0,
            "eta": 0.001,
            "eval_metric": "auc,logloss",
            "progress_every": 2,
        },
    }
    created = httpx.post(f"{trainer}/training-jobs", json=request, headers=headers, timeout=30)
    assert created.status_code == 202, created.text
    return name


def data_count(driver: Any, name: str) -> int:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, testid(name))
    return int(found[0].get_attribute("data-count") or 0) if found else 0


@pytest.mark.timeout(900)  # the shared platform's start and demo count against the first user
def test_training_batch_and_pipelines_pages_with_a_live_curve_and_scoped_actions(
    demo_platform: DemoPlatform, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    platform = demo_platform
    console = platform.url("console")
    admin = home_headers(platform.home)
    admin_token = admin["Authorization"].removeprefix("Bearer ")
    viewer = read_only_token(platform)
    demo_job = platform.summary["job_name"]

    # A pipeline execution that waits on its callback step: gate done, approve waiting.
    pipelines = platform.url("pipelines")
    flow = approval_pipeline(unique_name("approval"))
    made = httpx.post(f"{pipelines}/pipelines", json=flow, headers=admin, timeout=30)
    assert made.status_code == 201, made.text
    started = httpx.post(
        f"{pipelines}/pipelines/{flow['name']}/executions", json={}, headers=admin, timeout=30
    )
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]
    live_job = start_long_job(platform, admin)

    # Read-only: lists and the demo job's curve, and no stop button on a job that trains.
    sign_in(browser, console, viewer)
    table = open_area(browser, console, "training", ready="training-jobs")
    wait_for(browser, lambda d: demo_job in table.text)
    assert platform.summary["job_name"] in table.text
    open_area(browser, console, f"training/{demo_job}", ready="metric-curve")
    wait_for(browser, lambda d: data_count(d, "curve-points") >= 2)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{testid('metric-curve')} svg"))
    open_area(browser, console, f"training/{live_job}", ready="job-status")
    wait_for(browser, lambda d: data_count(d, "live-events") >= 2, timeout_s=HANG_GUARD_S)
    assert not browser.find_elements(By.CSS_SELECTOR, testid("stop-job"))
    refused = httpx.post(
        f"{console}/api/proxy/trainer/training-jobs/{live_job}/stop",
        json={},
        headers={"Authorization": f"Bearer {viewer}"},
        timeout=30,
    )
    assert refused.status_code == 403, refused.text

    # Admin: the live curve grows from the stream, then the job is stopped from its page.
    sign_in(browser, console, admin_token)
    open_area(browser, console, f"training/{live_job}", ready="job-status")
    wait_for(browser, lambda d: data_count(d, "live-events") >= 2, timeout_s=HANG_GUARD_S)
    seen = data_count(browser, "curve-points")
    wait_for(browser, lambda d: data_count(d, "curve-points") > seen, timeout_s=HANG_GUARD_S)
    screenshot(browser, "console-training-live")
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, testid("stop-job"))).click()
    status = browser.find_element(By.CSS_SELECTOR, testid("job-status"))
    wait_for(browser, lambda d: status.text in ("Stopping", "Stopped"), timeout_s=HANG_GUARD_S)
    trainer = platform.url("trainer")
    wait_until(
        "the live job stopped",
        lambda: (
            httpx.get(f"{trainer}/training-jobs/{live_job}", headers=admin, timeout=30).json()[
                "status"
            ]
            == "Stopped"
        ),
    )
    open_area(browser, console, f"training/{demo_job}", ready="metric-curve")
    wait_for(browser, lambda d: data_count(d, "curve-points") >= 2)
    wait_for(
        browser, lambda d: "Completed" in d.find_element(By.CSS_SELECTOR, testid("job-status")).text
    )
    wait_for(
        browser,
        lambda d: (
            "model package written" in d.find_element(By.CSS_SELECTOR, testid("job-logs")).text
        ),
    )
    screenshot(browser, "console-training")

    # Batch: the demo's transform job with its progress.
    batch = open_area(browser, console, "batch", ready="transform-jobs")
    wait_for(browser, lambda d: "Completed" in batch.text)
    screenshot(browser, "console-batch")

    # Pipelines: the execution's DAG, each step with its status (once the callback waits).
    def step_status(step: str) -> str:
        answer = httpx.get(
            f"{pipelines}/pipeline-executions/{execution_id}", headers=admin, timeout=30
        ).json()
        return str(next(s["status"] for s in answer["steps"] if s["name"] == step))

    wait_until("the approval step waits", lambda: step_status("approve") == "Executing")
    open_area(browser, console, f"pipelines/execution/{execution_id}", ready="pipeline-dag")

    def statuses(driver: Any) -> dict[str, str]:
        steps = driver.find_elements(By.CSS_SELECTOR, testid("dag-step"))
        return {s.get_attribute("data-step"): s.get_attribute("data-status") for s in steps}

    wait_for(browser, lambda d: statuses(d).get("gate"))
    assert statuses(browser) == {
        "gate": "Succeeded",
        "approve": "Executing",
        "reject": "Skipped",
        "check": "Pending",
    }
    screenshot(browser, "console-pipelines")
    listed = open_area(browser, console, "pipelines", ready="pipeline-list")
    assert flow["name"] in listed.text
    stopped = httpx.post(
        f"{pipelines}/pipeline-executions/{execution_id}/stop", headers=admin, timeout=30
    )
    assert stopped.status_code == 200, stopped.text  # nothing left waiting on the shared platform

    # The other areas: their page where the service runs, else the shell says it does not.
    pages = {
        "tuning": "tuning-jobs",
        "experiments": "experiment-runs",
        "labeling": "labeling-jobs",
        "edge": "edge-fleets",
    }
    for area, ready in pages.items():
        browser.get(f"{console}/ui/#/{area}")
        either = f"{testid(ready)}, {testid('area-unavailable')}"
        wait_for(browser, lambda d, css=either: d.find_elements(By.CSS_SELECTOR, css))
        assert not browser.find_elements(By.CSS_SELECTOR, testid("area-error"))
        screenshot(browser, f"console-{area}")
