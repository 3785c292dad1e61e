"""The review queue on the annotator's page, in a real headless browser: a reviewer signs in,
opens the Review queue tab, takes the waiting review of a two-row request, labels each row with
the keyboard and submits; the answer is stored and becomes ground truth keyed like the capture.
Screenshots go to a temporary folder (printed)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cairn.bus import EventProducer
from cairn.contracts.review_events import HumanReviewRequested, Payload
from cairn.settings import CairnSettings

from tests.integration.test_human_review import next_event
from tests.support.browser import needs_browser, wait_for
from tests.support.labeling_stack import LabelingStack, labeling_stack

pytestmark = [
    pytest.mark.integration,
    needs_browser,
]


@pytest.fixture
async def stack(kafka_settings: CairnSettings, tmp_path: Path) -> AsyncIterator[LabelingStack]:
    async with labeling_stack(kafka_settings, tmp_path) as running:
        yield running


async def test_a_reviewer_answers_a_live_prediction_with_the_keyboard(
    stack: LabelingStack, browser: object
) -> None:

    shots = Path(tempfile.mkdtemp(prefix="cairn-review-screenshots-"))
    print(f"screenshots in {shots}")
    _, tokens = await stack.workforce(["rita"])
    inference_id = f"page-{uuid.uuid4().hex[:8]}"
    request = HumanReviewRequested(
        review_id=str(uuid.uuid4()),
        endpoint_name="credit-risk",
        variant_name="blue",
        inference_id=inference_id,
        requested_at=datetime.now(UTC),
        reasons=["ClassProbabilityBelow(0.7)"],
        input=Payload(content_type="text/csv", data="52.5,41,3.2,south\n38.0,23,7.5,north"),
        output=Payload(content_type="text/csv", data="0.55\n0.62\n"),
        labels=["repays", "defaults"],
        instructions="Would this applicant repay?",
        review_dataset="credit-risk-reviews",
    )
    async with EventProducer(stack.settings, source="gateway") as producer:
        await producer.publish(request)

    await asyncio.to_thread(review_in_browser, browser, stack.url, tokens["rita"], shots)

    truth = await next_event(
        stack.settings, "GroundTruthRecorded", lambda d: f"{inference_id}:0" in d["labels"]
    )
    assert truth["labels"] == {f"{inference_id}:0": "defaults", f"{inference_id}:1": "repays"}
    async with stack.client(tokens["rita"]) as client:
        task = (await client.get(f"/reviews/{request.review_id}")).json()
    assert task["status"] == "Completed" and task["reviewer"].endswith(":rita")


def review_in_browser(browser: object, url: str, token: str, shots: Path) -> None:
    """Sign in, open the Review queue tab once the review is listed, answer it with the keys."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen

    browser.get(f"{url}/ui/")  # type: ignore[attr-defined]
    field = wait_for(browser, seen.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token, Keys.ENTER)  # type: ignore[attr-defined]
    tab = '#tabs button[data-tab="review-queue"]'
    wait_for(browser, seen.element_to_be_clickable((By.CSS_SELECTOR, tab)))
    # The request travels through the broker: reopen the tab until the list shows it.
    wait_for(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, tab).click() is None
            and "1 answer(s) waiting" in d.find_element(By.ID, "review-queue").text
        ),
    )
    browser.find_element(By.ID, "review-next").click()  # type: ignore[attr-defined]
    wait_for(browser, seen.visibility_of_element_located((By.ID, "review-rows")))
    body = browser.find_element(By.TAG_NAME, "body")  # type: ignore[attr-defined]
    body.send_keys("2")  # row 1: defaults
    body.send_keys("1")  # row 2: repays
    wait_for(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".review-choice.selected")) == 2,
    )
    browser.save_screenshot(str(shots / "review-task.png"))  # type: ignore[attr-defined]
    body.send_keys(Keys.ENTER)
    wait_for(browser, seen.visibility_of_element_located((By.ID, "review-none")))
    browser.save_screenshot(str(shots / "review-done.png"))  # type: ignore[attr-defined]
