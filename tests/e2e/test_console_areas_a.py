"""The console's model areas in a real headless browser, on the shared demo platform: datasets
(profile and the models trained on it), models (a version approved from its page, with a reason,
audited under the signed-in key), endpoints (weights changed from the page) and the monitor (a
drift chart of a run over shifted traffic). A read-only key sees no action buttons, and the
owning services refuse the actions anyway. Screenshots go to the session's folder.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from cairn_cli.demo.data import LABEL
from cairn_cli.demo.drift_data import generate_shifted_frame

from tests.support.auth import home_headers
from tests.support.browser import needs_browser, open_area, screenshot, sign_in, testid, wait_for
from tests.support.demo_platform import DemoPlatform
from tests.support.tansu import unique_name

pytestmark = [pytest.mark.e2e, needs_browser]
HANG_GUARD_S = 120.0
SHIFTED_ROWS = 400


def wait_until(what: str, probe: Any) -> Any:
    deadline = time.monotonic() + HANG_GUARD_S
    while not (found := probe()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)
    return found


def new_key(platform: DemoPlatform, name: str, *scopes: str) -> str:
    flags = [arg for scope in scopes for arg in ("--scope", scope)]
    made = platform.cli("keys", "create", "--name", name, *flags, "--json")
    assert made.returncode == 0, made.stderr
    token: str = json.loads(made.stdout)["token"]
    return token


def text_of(driver: Any, name: str) -> str:
    """The element's text, or "" while the page replaces it (it re-renders after an action)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        text: str = driver.find_element(By.CSS_SELECTOR, testid(name)).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    return text


def weighted(
    deployer: str, endpoint: str, headers: dict[str, str], weight: float
) -> dict[str, Any] | None:
    """The endpoint once its first variant has `weight`, else None."""
    doc: dict[str, Any] = httpx.get(
        f"{deployer}/endpoints/{endpoint}", headers=headers, timeout=30
    ).json()
    return doc if doc["production_variants"][0]["weight"] == weight else None


def audit(platform: DemoPlatform, action: str, principal: str) -> list[dict[str, Any]]:
    found = platform.cli("audit", "--action", action, "--principal", principal, "--json")
    assert found.returncode == 0, found.stderr
    records: list[dict[str, Any]] = json.loads(found.stdout)
    return records


def send_shifted_traffic(platform: DemoPlatform, headers: dict[str, str]) -> None:
    """Rows from after the demo data's shift (incomes fall to under half) through the gateway."""
    endpoint = platform.summary["endpoint_name"]
    frame = generate_shifted_frame(SHIFTED_ROWS, seed=23).drop(columns=[LABEL])
    rows = frame[platform.summary["feature_columns"]].astype(str).values.tolist()
    url = f"{platform.url('gateway')}/endpoints/{endpoint}/invocations"
    for start in range(0, len(rows), 100):
        body = "\n".join(",".join(row) for row in rows[start : start + 100])
        answer = httpx.post(
            url, content=body, headers={**headers, "Content-Type": "text/csv"}, timeout=30
        )
        assert answer.status_code == 200, answer.text


def drifted_run(platform: DemoPlatform, headers: dict[str, str]) -> dict[str, Any]:
    """Run the endpoint's monitoring now until a run over the shifted rows reports drift."""
    monitor, endpoint = platform.url("monitor"), platform.summary["endpoint_name"]

    def run() -> dict[str, Any] | None:
        answer = httpx.post(f"{monitor}/schedules/{endpoint}/run", headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        summary: dict[str, Any] | None = answer.json()
        return summary if summary and summary["drifted_features"] else None

    found: dict[str, Any] = wait_until("a monitoring run with drift", run)
    return found


@pytest.mark.timeout(900)  # the shared platform's start and demo count against the first user
def test_model_pages_act_as_the_signed_in_key_and_a_read_only_key_cannot(
    demo_platform: DemoPlatform, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    platform = demo_platform
    console, registry, deployer = (platform.url(s) for s in ("console", "registry", "deployer"))
    admin = home_headers(platform.home)
    endpoint, group = platform.summary["endpoint_name"], platform.summary["model_package_group"]
    operator = new_key(platform, "console-operator", "read", "approve", "deploy")
    reader = new_key(platform, "reader", "read")

    # A schedule on the demo's endpoint, shifted traffic, one run that finds the drift.
    schedule = httpx.post(
        f"{platform.url('monitor')}/schedules/{endpoint}",
        json={"interval_s": 3600, "min_rows": 100},
        headers=admin,
        timeout=30,
    )
    assert schedule.status_code == 201, schedule.text
    send_shifted_traffic(platform, admin)
    # A version waiting for approval, in a group of its own: no auto-deploy policy touches it.
    pending_group = unique_name("console-model")
    registered = httpx.post(
        f"{registry}/model-package-groups/{pending_group}/versions",
        json={"artifact_uri": platform.summary["artifact_uri"], "metrics": {"validation:auc": 0.8}},
        headers=admin,
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    run = drifted_run(platform, admin)

    browser.set_window_size(1280, 1500)  # the lineage graph and the traffic chart in the pictures
    sign_in(browser, console, operator)
    # Datasets: the demo's training data, its profile and the demo's model trained on it.
    train = platform.summary["datasets"]["train"].removeprefix("dataset://").split("@")[0]
    open_area(browser, console, f"datasets/{train}", ready="dataset-schema")
    models = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, testid("dataset-models")))
    wait_for(browser, lambda d: f"{group} v{platform.summary['model_version']}" in models.text)
    wait_for(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{testid('dataset-profile')} svg")
    )
    screenshot(browser, "console-datasets")

    # Models: the demo's model with its lineage; then a pending version approved with a reason.
    groups = open_area(browser, console, "models", ready="models-groups")
    assert group in groups.text
    open_area(
        browser, console, f"models/{group}/{platform.summary['model_version']}", "model-lineage"
    )
    lineage = browser.find_element(By.CSS_SELECTOR, testid("model-lineage"))
    drawn = lineage.get_attribute("innerHTML")  # the graph's nodes name every step
    assert train in drawn and platform.summary["job_name"] in drawn and endpoint in drawn
    screenshot(browser, "console-models")
    open_area(browser, console, f"models/{pending_group}/1", ready="approval-form")
    browser.find_element(By.CSS_SELECTOR, testid("approval-reason")).send_keys("checked in a test")
    browser.find_element(By.CSS_SELECTOR, testid("approve-version")).click()
    wait_for(browser, lambda d: text_of(d, "model-approval-status") == "Approved")
    version = httpx.get(
        f"{registry}/model-package-groups/{pending_group}/versions/1", headers=admin, timeout=30
    ).json()
    assert version["approval_status"] == "Approved"
    assert version["approval_history"][-1]["changed_by"] == "console-operator"
    assert version["approval_history"][-1]["reason"] == "checked in a test"
    approvals = audit(platform, "model.approve", "console-operator")
    assert [r["resource"] for r in approvals] == [
        f"/model-package-groups/{pending_group}/versions/1/approval"
    ]

    # Endpoints: variants, live traffic, and the weights changed from the page.
    table = open_area(browser, console, "endpoints", ready="endpoints-table")
    assert endpoint in table.text
    before = httpx.get(f"{deployer}/endpoints/{endpoint}", headers=admin, timeout=30).json()
    variant = before["production_variants"][0]["variant_name"]
    open_area(browser, console, f"endpoints/{endpoint}", ready="weights-form")
    wait_for(browser, lambda d: variant in text_of(d, "traffic-table"))
    field = browser.find_element(By.CSS_SELECTOR, testid(f"weight-{variant}"))
    field.clear()
    field.send_keys("3")
    browser.find_element(By.CSS_SELECTOR, testid("weights-submit")).click()
    try:
        after = wait_until("the weight changed", lambda: weighted(deployer, endpoint, admin, 3))
        assert after["revision"] == before["revision"] + 1
        changes = audit(platform, "endpoint.weights", "console-operator")
        assert [r["resource"] for r in changes] == [f"/endpoints/{endpoint}/weights"]
        wait_for(
            browser,
            lambda d: d.find_elements(By.CSS_SELECTOR, f"{testid('endpoint-traffic-chart')} svg"),
        )
        screenshot(browser, "console-endpoints")
    finally:  # the shared endpoint as it was for the tests after this one
        httpx.post(
            f"{deployer}/endpoints/{endpoint}/weights",
            json={"variants": [{"variant_name": variant, "weight": 1.0}]},
            headers=admin,
            timeout=30,
        )

    # Monitor: the run over the shifted traffic, its drifted feature's distributions plotted.
    open_area(browser, console, f"monitor/{endpoint}/{run['run_id']}", ready="drift-features")
    chart = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, testid("drift-chart")))
    wait_for(browser, lambda d: chart.find_elements(By.CSS_SELECTOR, "svg"))
    feature = browser.find_element(By.CSS_SELECTOR, testid("drift-feature"))
    assert feature.get_attribute("value") in run["drifted_features"]
    assert "reference (baseline)" in chart.get_attribute("innerHTML")
    screenshot(browser, "console-monitor")

    # A read-only key: the same pages without any action, and the services refuse the actions.
    sign_in(browser, console, reader)
    open_area(
        browser, console, f"models/{group}/{platform.summary['model_version']}", "model-lineage"
    )
    assert not browser.find_elements(By.CSS_SELECTOR, testid("approve-version"))
    open_area(browser, console, f"endpoints/{endpoint}", ready="endpoint-variants")
    assert not browser.find_elements(By.CSS_SELECTOR, testid("weights-form"))
    as_reader = {"Authorization": f"Bearer {reader}"}
    approve = httpx.post(
        f"{console}/api/proxy/registry/model-package-groups/{group}/versions/1/approval",
        json={"status": "Rejected", "reason": "not allowed"},
        headers=as_reader,
        timeout=30,
    )
    assert approve.status_code == 403, approve.text
    weights = httpx.post(
        f"{console}/api/proxy/deployer/endpoints/{endpoint}/weights",
        json={"variants": [{"variant_name": variant, "weight": 5}]},
        headers=as_reader,
        timeout=30,
    )
    assert weights.status_code == 403, weights.text
