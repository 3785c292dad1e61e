"""The console's shell in a real headless browser, on the shared demo platform: an admin signs in
and sees every demo service healthy, a change they make appear live in the event stream, and the
audit log; a read-only key sees no action and no audit log; a wrong key is refused; the first page
loads without the chart library. Screenshots go to the session's folder (printed)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support.auth import home_headers
from tests.support.browser import needs_browser, open_area, screenshot, sign_in, wait_for
from tests.support.browser import testid as by_testid
from tests.support.demo_platform import SERVICES, DemoPlatform

pytestmark = [pytest.mark.e2e, needs_browser]
# What areas draw for a change (ctx.button): a read-only key must see none of them.
ACTIONS = "main button.action, main button.danger"


def _read_only_token(platform: DemoPlatform) -> str:
    answer = httpx.post(
        f"{platform.url('console')}/api/proxy/gateway/admin/keys",
        json={"name": "console-viewer", "scopes": ["read"]},
        headers=home_headers(platform.home),
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


def _healthy(driver: Any) -> set[str]:
    """The services the overview's table shows healthy."""
    rows = _texts(driver, f"{by_testid('services-table')} tbody tr")
    return {row.split()[0] for row in rows if "healthy" in row.split()}


def _texts(driver: Any, selector: str) -> list[str]:
    """The text of every element `selector` matches, read in one go (tables redraw live)."""
    texts: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText)", selector
    )
    return texts


async def test_an_admin_and_a_viewer_use_the_shell(
    demo_platform: DemoPlatform, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen

    url = demo_platform.url("console")
    admin = home_headers(demo_platform.home)["Authorization"].removeprefix("Bearer ")
    browser.set_window_size(1280, 1800)

    def wrong_key() -> str:
        browser.get(f"{url}/ui/")
        field = wait_for(browser, seen.visibility_of_element_located((By.ID, "key")))
        field.send_keys("CKIA0000000000000000:wrong", Keys.ENTER)
        error = wait_for(
            browser,
            seen.visibility_of_element_located((By.CSS_SELECTOR, by_testid("sign-in-error"))),
        )
        wait_for(browser, lambda d: error.text)
        screenshot(browser, "console-wrong-key")
        return str(error.text)

    assert "Sign-in failed" in await asyncio.to_thread(wrong_key)

    def overview() -> tuple[set[str], bool]:
        sign_in(browser, url, admin)
        open_area(browser, url, "overview", "services-table")
        wanted = set(SERVICES) - {"console"}  # the page lists the services behind it
        healthy = wait_for(browser, lambda d: _healthy(d) if wanted <= _healthy(d) else None)
        plotly_loaded = bool(browser.execute_script("return Boolean(window.Plotly)"))
        return healthy, plotly_loaded

    healthy, plotly_loaded = await asyncio.to_thread(overview)
    assert not plotly_loaded, "the first page must not load the chart library"
    assert set(SERVICES) - {"console"} <= healthy
    viewer = await asyncio.to_thread(_read_only_token, demo_platform)

    def live_event() -> None:
        # The key made above is an audited change: its AuditRecorded event arrives live.
        wait_for(
            browser,
            lambda d: any(
                "AuditRecorded" in row and "key.create" in row
                for row in _texts(d, f"{by_testid('events-table')} tbody tr")
            ),
            timeout_s=60,
        )
        screenshot(browser, "console-overview")
        browser.find_element(By.CSS_SELECTOR, by_testid("filter-type")).send_keys(
            "AuditRecorded", Keys.ENTER
        )
        wait_for(browser, lambda d: "type=AuditRecorded" in d.current_url)
        rows = wait_for(
            browser,
            lambda d: _texts(d, f"{by_testid('events-table')} tbody tr:not(.empty)") or None,
        )
        assert all("AuditRecorded" in row for row in rows), rows

    await asyncio.to_thread(live_event)

    def audit_log() -> list[str]:
        open_area(browser, url, "audit", "audit-table")
        wait_for(browser, lambda d: _texts(d, f"{by_testid('audit-table')} tbody tr:not(.empty)"))
        field = browser.find_element(By.CSS_SELECTOR, by_testid("audit-filter-action"))
        field.send_keys("key.create", Keys.ENTER)
        wait_for(browser, lambda d: "action=key.create" in d.current_url)
        rows = wait_for(
            browser,
            lambda d: _texts(d, f"{by_testid('audit-table')} tbody tr:not(.empty)") or None,
        )
        screenshot(browser, "console-audit")
        return rows

    audited = await asyncio.to_thread(audit_log)
    assert audited and all("key.create" in row for row in audited), audited

    def as_viewer() -> dict[str, list[str]]:
        """Every area a read-only key opens, with the action buttons it shows (none, we expect)."""
        browser.find_element(By.CSS_SELECTOR, by_testid("sign-out")).click()
        sign_in(browser, url, viewer)
        open_area(browser, url, "audit", "audit-needs-admin")
        screenshot(browser, "console-viewer-audit")
        areas = [
            link.get_attribute("data-area")
            for link in browser.find_elements(By.CSS_SELECTOR, "#nav a:not(.unavailable)")
        ]
        shown: dict[str, list[str]] = {}
        for area in areas:
            browser.get(f"{url}/ui/#/{area}")
            wait_for(
                browser,
                lambda d, a=area: d.find_elements(
                    By.CSS_SELECTOR, f"main[data-testid='area-{a}']:not([aria-busy])"
                ),
            )
            shown[area] = _texts(browser, ACTIONS)
        return shown

    seen_by_viewer = await asyncio.to_thread(as_viewer)
    assert "overview" in seen_by_viewer and "audit" in seen_by_viewer
    assert {area: actions for area, actions in seen_by_viewer.items() if actions} == {}
