"""Headless Chromium for the end-to-end tests, driven by Selenium through the system chromedriver
(Debian `chromium-driver`): nothing is downloaded at run time. The stack's own CA is not in any
trust store, so Chromium is told to accept exactly the stack's server key (an SPKI pin), not
every certificate."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "artifacts" / "screenshots"


def spki_pin(server_pem: Path) -> str:
    """Base64 SHA-256 of the server certificate's public key, as Chromium's pin list wants it."""
    cert = x509.load_pem_x509_certificate(server_pem.read_bytes())  # the first one: the leaf
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium(
    server_pem: Path,
    profile: Path,
    downloads: Path,
    *,
    javascript: bool,
    network_log: bool = False,
) -> webdriver.Chrome:
    """A headless Chromium that trusts only SERVER_PEM's key. NETWORK_LOG keeps DevTools'
    network events in the "performance" log, so a test can ask for a response's exact body."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
        # Trust only the stack's server key (it is signed by the stack's throwaway CA).
        f"--ignore-certificate-errors-spki-list={spki_pin(server_pem)}",
    ):
        options.add_argument(arg)
    prefs: dict[str, object] = {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
        "download.directory_upgrade": True,
        "safebrowsing.enabled": False,
    }
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    options.add_experimental_option("prefs", prefs)
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver path: Selenium Manager never looks for (or downloads) a driver.
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    browser.set_page_load_timeout(20)
    return browser


def full_page_png(driver: webdriver.Chrome) -> bytes:
    """The whole page as PNG, over DevTools (this needs no JavaScript in the page), so that
    nothing below the fold is lost."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    return base64.b64decode(shot["data"])


def code(driver: webdriver.Chrome, element_id: str) -> str:
    """A value the panel generated for the user to copy (`<code id=...>`)."""
    return str(driver.find_element(By.CSS_SELECTOR, f"code#{element_id}").text).strip()


def button(driver: webdriver.Chrome, label: str) -> None:
    driver.find_element(By.XPATH, f"//main//button[normalize-space()={label!r}]").click()
