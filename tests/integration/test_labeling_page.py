"""The annotator's page in a real headless browser (Debian's chromium driven by selenium): a bad
credential shows its error, three annotators sign in and label every item with the keyboard, and
the consolidated dataset holds their labels. Screenshots go to a temporary folder (printed)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cairn.datasets import data_keys, resolve_dataset_uri
from cairn.settings import CairnSettings

from tests.support.browser import needs_browser, wait_for
from tests.support.labeling_stack import REVIEWS, LabelingStack, labeling_stack
from tests.support.tansu import unique_name

pytestmark = [pytest.mark.integration, needs_browser]
KEYS = {"pos": "1", "neg": "2"}


@pytest.fixture
async def stack(kafka_settings: CairnSettings, tmp_path: Path) -> AsyncIterator[LabelingStack]:
    async with labeling_stack(kafka_settings, tmp_path) as running:
        yield running


def label_everything(driver: object, url: str, token: str, shots: Path, who: str) -> int:
    """Sign in, open the one job, answer with 1/2 + Enter until nothing is left."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen

    driver.get(f"{url}/ui/")  # type: ignore[attr-defined]
    driver.execute_script("sessionStorage.clear()")  # type: ignore[attr-defined]
    driver.refresh()  # type: ignore[attr-defined]
    field = wait_for(driver, seen.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token, Keys.ENTER)  # type: ignore[attr-defined]
    wait_for(driver, seen.element_to_be_clickable((By.CSS_SELECTOR, "button.open-job"))).click()  # type: ignore[attr-defined]
    answered = 0
    body = driver.find_element(By.TAG_NAME, "body")  # type: ignore[attr-defined]
    while True:
        wait_for(
            driver,
            lambda d: (
                d.find_element(By.ID, "done").is_displayed()
                or (
                    d.find_element(By.ID, "item-text").is_displayed()
                    and d.find_element(By.ID, "item").get_attribute("data-item-id") is not None
                )
            ),
        )
        if driver.find_element(By.ID, "done").is_displayed():  # type: ignore[attr-defined]
            break
        item = driver.find_element(By.ID, "item")  # type: ignore[attr-defined]
        item_id = item.get_attribute("data-item-id")
        text = driver.find_element(By.ID, "item-text").text  # type: ignore[attr-defined]
        body.send_keys(KEYS[dict(REVIEWS)[text]])
        wait_for(driver, seen.presence_of_element_located((By.CSS_SELECTOR, "#choices .selected")))
        if answered == 0:
            driver.save_screenshot(str(shots / f"{who}-task.png"))  # type: ignore[attr-defined]
        body.send_keys(Keys.ENTER)
        wait_for(
            driver,
            lambda d, before=item_id: (
                d.find_element(By.ID, "done").is_displayed()
                or d.find_element(By.ID, "item").get_attribute("data-item-id") != before
            ),
        )
        answered += 1
    driver.save_screenshot(str(shots / f"{who}-done.png"))  # type: ignore[attr-defined]
    return answered


async def test_three_annotators_label_with_the_keyboard(
    stack: LabelingStack, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen

    shots = Path(tempfile.mkdtemp(prefix="cairn-labeling-screenshots-"))
    print(f"screenshots in {shots}")
    workforce, tokens = await stack.workforce(["ann", "bob", "cy"])
    job = unique_name("page")
    await stack.create_job(
        job_name=job,
        dataset_uri=stack.reviews_dataset(),
        task_type="text-classification",
        labels=["pos", "neg"],
        workforce_name=workforce,
        workers_per_item=3,
        instructions="Is the review positive (1) or negative (2)?",
    )

    def bad_sign_in() -> str:
        browser.get(f"{stack.url}/ui/")  # type: ignore[attr-defined]
        field = wait_for(browser, seen.visibility_of_element_located((By.ID, "token")))
        field.send_keys("CKIA0000000000000000:wrong", Keys.ENTER)  # type: ignore[attr-defined]
        error = wait_for(browser, seen.visibility_of_element_located((By.ID, "error")))
        browser.save_screenshot(str(shots / "bad-credential.png"))  # type: ignore[attr-defined]
        return str(error.text)  # type: ignore[attr-defined]

    assert "Sign-in failed" in await asyncio.to_thread(bad_sign_in)
    for who in ("ann", "bob", "cy"):
        answered = await asyncio.to_thread(
            label_everything, browser, stack.url, tokens[who], shots, who
        )
        assert answered == len(REVIEWS), who

    done = await stack.wait_job(job, lambda j: j["status"] in ("Completed", "Failed"))
    assert done["status"] == "Completed", done
    resolved = resolve_dataset_uri(stack.store, done["output_dataset_uri"])
    path = stack.store.uri(data_keys(resolved.version)[0]).removeprefix("file://")
    rows = pq.read_table(path).to_pylist()
    assert sorted((r["text"], r["label"], r["annotator_count"]) for r in rows) == sorted(
        (text, truth, 3) for text, truth in REVIEWS
    )

    def admin_page() -> str:
        token = stack.admin["Authorization"].removeprefix("Bearer ")
        browser.get(f"{stack.url}/ui/admin.html#{job}")  # type: ignore[attr-defined]
        browser.execute_script("sessionStorage.clear()")  # type: ignore[attr-defined]
        field = wait_for(browser, seen.visibility_of_element_located((By.ID, "token")))
        field.send_keys(token, Keys.ENTER)  # type: ignore[attr-defined]
        wait_for(browser, seen.visibility_of_element_located((By.CSS_SELECTOR, "#annotators td")))
        browser.save_screenshot(str(shots / "admin.png"))  # type: ignore[attr-defined]
        return str(browser.find_element(By.ID, "job-agreement").text)  # type: ignore[attr-defined]

    assert "alpha 1" in await asyncio.to_thread(admin_page)

    await draw_a_box_with_the_mouse(stack, browser, shots)


async def draw_a_box_with_the_mouse(stack: LabelingStack, browser: object, shots: Path) -> None:
    """A bounding-box job: key 1 picks the label, a mouse drag on the image draws the box."""
    import pyarrow as pa
    from cairn.datasets import write_dataset_version
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen

    from tests.integration.test_labeling_service import png

    stack.store.put_bytes("data/shots/cat.png", png(200, 120), content_type="image/png")
    name = unique_name("shots")
    version, _ = write_dataset_version(
        stack.store, name, pa.table({"image": ["data/shots/cat.png"]})
    )
    workforce, tokens = await stack.workforce(["solo"])
    job = unique_name("box")
    await stack.create_job(
        job_name=job,
        dataset_uri=f"dataset://{name}@{version.version}",
        task_type="bounding-box",
        labels=["cat", "dog"],
        workforce_name=workforce,
        workers_per_item=1,
        image_column="image",
    )

    def draw() -> None:
        browser.get(f"{stack.url}/ui/")  # type: ignore[attr-defined]
        browser.execute_script("sessionStorage.clear()")  # type: ignore[attr-defined]
        browser.refresh()  # type: ignore[attr-defined]
        field = wait_for(browser, seen.visibility_of_element_located((By.ID, "token")))
        field.send_keys(tokens["solo"], Keys.ENTER)  # type: ignore[attr-defined]
        wait_for(
            browser, seen.element_to_be_clickable((By.CSS_SELECTOR, "button.open-job"))
        ).click()  # type: ignore[attr-defined]
        canvas = wait_for(browser, seen.visibility_of_element_located((By.ID, "canvas")))
        wait_for(browser, lambda d: d.execute_script("return arguments[0].width", canvas) == 200)
        body = browser.find_element(By.TAG_NAME, "body")  # type: ignore[attr-defined]
        body.send_keys("1")
        size = canvas.size  # type: ignore[attr-defined]
        ActionChains(browser).move_to_element_with_offset(  # type: ignore[arg-type]
            canvas, -size["width"] // 4, -size["height"] // 4
        ).click_and_hold().move_by_offset(
            size["width"] // 4, size["height"] // 4
        ).release().perform()
        wait_for(browser, seen.presence_of_element_located((By.CSS_SELECTOR, "#boxes li")))
        browser.save_screenshot(str(shots / "box-drawn.png"))  # type: ignore[attr-defined]
        body.send_keys(Keys.ENTER)
        wait_for(browser, seen.visibility_of_element_located((By.ID, "done")))

    await asyncio.to_thread(draw)
    done = await stack.wait_job(job, lambda j: j["status"] in ("Completed", "Failed"))
    resolved = resolve_dataset_uri(stack.store, done["output_dataset_uri"])
    path = stack.store.uri(data_keys(resolved.version)[0]).removeprefix("file://")
    (row,) = pq.read_table(path).to_pylist()
    (box,) = json.loads(row["label"])
    assert box["label"] == "cat" and 30 <= box["width"] <= 70 and 15 <= box["height"] <= 45, box
