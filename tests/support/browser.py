"""A real headless browser for page tests: Debian's chromium driven by selenium.

`browser` is a pytest fixture (one fresh profile per test); `wait_for` polls a condition with a
generous hang guard; `sign_in` signs in to the console's shell; `screenshot` saves a PNG to one
temporary folder per test session, printed once so a person can look at the pictures.
Tests that use the browser mark themselves with `needs_browser` (skipped where chromium is absent;
.ci/run installs it).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BROWSER_WAIT_S = 20.0
needs_browser = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)
_shots: list[Path] = []


def start_browser(profile: Path) -> Any:
    """A headless chromium with its own fresh profile folder (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (*_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(
        service=DriverService(executable_path=shutil.which("chromedriver")), options=options
    )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = start_browser(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(
    driver: Any, condition: Callable[[Any], Any], timeout_s: float = BROWSER_WAIT_S
) -> Any:
    """What `condition(driver)` returns once it is truthy; a TimeoutException after `timeout_s`."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(condition)


def screenshots_dir() -> Path:
    """The session's screenshot folder (created and printed on first use)."""
    if not _shots:
        _shots.append(Path(tempfile.mkdtemp(prefix="cairn-screenshots-")))
        print(f"screenshots in {_shots[0]}")
    return _shots[0]


def screenshot(driver: Any, name: str) -> Path:
    """Save the current page as `<name>.png` in the session's folder; its path."""
    path = screenshots_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def testid(name: str) -> str:
    """The CSS selector of an element the tests look for (`data-testid`)."""
    return f'[data-testid="{name}"]'


testid.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test, when imported


def sign_in(driver: Any, console_url: str, token: str) -> None:
    """Open the console's shell, sign in with `token` and wait until the page says who signed in.

    Starts from a clean tab (session storage cleared), so a previous key does not linger.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen

    driver.get(f"{console_url.rstrip('/')}/ui/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    field = wait_for(
        driver, seen.visibility_of_element_located((By.CSS_SELECTOR, testid("sign-in-key")))
    )
    field.send_keys(token, Keys.ENTER)
    wait_for(driver, seen.visibility_of_element_located((By.CSS_SELECTOR, testid("signed-in-as"))))


def open_area(driver: Any, console_url: str, route: str, ready: str) -> Any:
    """Navigate to `#/<route>` (already signed in) and wait until `data-testid=ready` shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    driver.get(f"{console_url.rstrip('/')}/ui/#/{route.lstrip('/')}")
    return wait_for(driver, seen.visibility_of_element_located((By.CSS_SELECTOR, testid(ready))))
