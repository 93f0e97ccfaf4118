"""``/docs`` in a real headless browser (issue 28): Swagger UI, served offline by a real server process,
runs a keyed route as a user would. Without a key the route answers 401 on the page; after "Authorize"
with a key, "Execute" shows the 200 and the same info body the API gives. The page's screenshots go to
the test's tmp_path.

Needs Debian's chromium and chromium-driver (scripts/system-packages.sh installs them); the driver is
named explicitly, so Selenium Manager never downloads anything."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from shared.protocol import Routes
from tests.helpers import ServerProcess, keyed_tiny_server

KEY = "key-docs"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 60.0  # generous: the page's 1.5 MB script on a loaded machine


def _block(path: str) -> str:
    """The XPath of the operation block of ``path`` in Swagger UI."""
    return f'//span[@data-path="{path}"]/ancestor::div[contains(@class, "opblock ")]'


pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not Path(CHROMEDRIVER).is_file(),
    reason="needs chromium and chromium-driver: run scripts/system-packages.sh",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with keyed_tiny_server(tmp_path_factory.mktemp("server"), [KEY]) as process:
        yield process


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # --no-sandbox: the tests may run as root (containers), where Chromium's sandbox refuses to start
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _click(driver: WebDriver, by: str, selector: str, within: WebElement | None = None) -> None:
    def clickable(d: WebDriver) -> WebElement | bool:
        element = (within or d).find_element(by, selector)
        return element if element.is_displayed() and element.is_enabled() else False

    element = WebDriverWait(driver, WAIT_S).until(clickable)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def _execute(driver: WebDriver, block: WebElement) -> tuple[int, str]:
    """Click Execute and wait for the live answer: its status and its body's text."""
    if block.find_elements(By.CSS_SELECTOR, ".live-responses-table"):  # Swagger UI's "Clear" first,
        _click(driver, By.CSS_SELECTOR, "button.btn-clear", within=block)  # so the wait sees the new one
        WebDriverWait(driver, WAIT_S).until(
            lambda d: not block.find_elements(By.CSS_SELECTOR, ".live-responses-table")
        )
    _click(driver, By.CSS_SELECTOR, "button.execute", within=block)
    status = WebDriverWait(driver, WAIT_S).until(
        lambda d: block.find_element(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
        )
    )
    body = block.find_element(
        By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description .highlight-code pre"
    )
    return int(status.text.split()[0]), body.text


def test_swagger_ui_runs_a_keyed_route_401_without_a_key_and_200_after_authorize(
    server: ServerProcess, browser: WebDriver, tmp_path: Path
) -> None:
    expected = httpx.get(server.url + Routes.INFO, headers={"Authorization": f"Bearer {KEY}"}).json()
    browser.get(server.url + "/docs")
    wait = WebDriverWait(browser, WAIT_S)
    block = wait.until(seen.presence_of_element_located((By.XPATH, _block(Routes.INFO))))
    # the lock that opens "Authorize": on the keyed route, not on the open health check
    lock = "button.authorization__btn"
    assert block.find_elements(By.CSS_SELECTOR, lock)
    assert not browser.find_element(By.XPATH, _block(Routes.HEALTH)).find_elements(By.CSS_SELECTOR, lock)
    _click(browser, By.CSS_SELECTOR, ".opblock-summary-control", within=block)
    _click(browser, By.CSS_SELECTOR, "button.try-out__btn", within=block)

    status, body = _execute(browser, block)
    browser.save_screenshot(str(tmp_path / "docs-401-without-key.png"))
    assert status == 401, body
    assert json.loads(body)["error"]["code"] == "unauthorized"

    _click(browser, By.CSS_SELECTOR, "button.btn.authorize")
    field = wait.until(seen.visibility_of_element_located((By.ID, "auth-bearer-value")))
    field.send_keys(KEY)
    _click(browser, By.CSS_SELECTOR, ".modal-ux button.modal-btn.authorize")
    _click(browser, By.CSS_SELECTOR, ".modal-ux button.btn-done")
    wait.until(seen.invisibility_of_element_located((By.CSS_SELECTOR, ".modal-ux")))

    status, body = _execute(browser, block)
    browser.save_screenshot(str(tmp_path / "docs-200-authorized.png"))
    assert status == 200, body
    assert json.loads(body) == expected and expected["model"] == "tiny-vit"
    curl = block.find_element(By.CSS_SELECTOR, ".curl-command").text
    assert f"Authorization: Bearer {KEY}" in curl  # the key went as the bearer scheme says
    shots = sorted(tmp_path.glob("docs-*.png"))
    assert len(shots) == 2
    for shot in shots:
        assert shot.stat().st_size > 10_000, shot  # a rendered page, not a blank one
