"""The server's page in headless Chromium, driven by Selenium: for the browser test and
``scripts/serve_screenshot.py``.

Uses Debian's ``chromium`` and ``chromium-driver`` packages (``apt-get install chromium
chromium-driver``: the same version, nothing downloaded) and the ``selenium`` package (the ``test``
extra). The browser starts with a fresh profile and with its background network traffic off.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--no-default-browser-check", "--hide-scrollbars"]


def find_chromium() -> tuple[str, str] | None:
    """The paths of chromium and chromedriver, or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@contextlib.contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator["selenium.webdriver.Chrome"]:  # noqa: F821
    """A headless Chromium window of ``width`` x ``height`` CSS pixels under Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise FileNotFoundError("chromium or chromedriver not found: apt-get install chromium chromium-driver")
    binary, driver_path = found
    with tempfile.TemporaryDirectory(prefix="centernet-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            yield driver
        finally:
            driver.quit()


def open_page(driver, url: str, timeout_s: float = 30.0) -> None:
    """Load the server's page and wait until it has read ``GET /model``."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, timeout_s).until(
        lambda d: d.execute_script("return document.getElementById('model').dataset.loaded"))
    if driver.execute_script("return document.getElementById('model').dataset.loaded") != "yes":
        raise RuntimeError(f"the page could not read /model: {driver.find_element('id', 'model').text}")


def upload(driver, image: str | Path, timeout_s: float = 60.0) -> None:
    """Choose ``image`` in the page's file input and wait until its boxes are drawn (or an error shows)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.getElementById('count').dataset.count = ''")
    driver.find_element(By.ID, "file").send_keys(str(Path(image).resolve()))
    WebDriverWait(driver, timeout_s).until(lambda d: d.execute_script(
        "return document.getElementById('count').dataset.count !== '' || !document.getElementById('error').hidden"))
    error = driver.find_element(By.ID, "error")
    if error.is_displayed():
        raise RuntimeError(f"the page shows an error: {error.text}")


def set_threshold(driver, value: float) -> None:
    """Move the score slider to ``value`` (as a user's drag does: the value, then an input event)."""
    driver.execute_script("const slider = document.getElementById('threshold'); slider.value = arguments[0];"
                          "slider.dispatchEvent(new Event('input', {bubbles: true}));", str(value))


def drawn_boxes(driver) -> list[dict]:
    """The boxes drawn over the image: score, class label text and the rect's x, y, width, height."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#overlay g.detection')].map((group) => {
          const box = group.querySelector('rect.box');
          return {score: Number(group.dataset.score), text: group.querySelector('text').textContent,
                  x: Number(box.getAttribute('x')), y: Number(box.getAttribute('y')),
                  width: Number(box.getAttribute('width')), height: Number(box.getAttribute('height'))};
        });""")
