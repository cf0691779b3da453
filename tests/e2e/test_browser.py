"""A real browser, with JavaScript switched off, against a real `ddmail stack up`.

Headless Chromium driven by Selenium through the system chromedriver (Debian `chromium-driver`):
nothing is downloaded at run time. The stack's own CA is not in any trust store, so Chromium is
told to accept exactly the stack's server key (an SPKI pin), not every certificate.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser import CHROMEDRIVER, CHROMIUM, SCREENSHOTS, button, chromium, code, full_page_png
from tests.stackrun import RunningStack, wait_until

pytestmark = pytest.mark.e2e

NO_JS = re.compile(r"<script|\son[a-z]+\s*=", re.IGNORECASE)
# A page whose title only changes if a script runs: the check that JavaScript is really off.
JS_PROBE = "data:text/html,<title>js-off</title><script>document.title='js-on'</script>"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(
    stack: RunningStack, downloads: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[webdriver.Chrome]:
    if not (CHROMEDRIVER.exists() and CHROMIUM.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver")
    browser = chromium(
        stack.root / "tls" / "server.pem",
        tmp_path_factory.mktemp("chromium-profile"),
        downloads,
        javascript=False,
    )
    yield browser
    browser.quit()


def shoot(driver: webdriver.Chrome, name: str) -> str:
    """Screenshot the page, and check that it carries no script and no inline handler."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path))  # the viewport, the plain WebDriver way
    # Then the whole page, so that nothing below the fold is lost.
    path.write_bytes(full_page_png(driver))
    source = driver.page_source
    found = NO_JS.search(source)
    assert not found, f"{name}: {found.group(0)!r} in {driver.current_url}"
    return source


def test_javascript_is_really_off(driver: webdriver.Chrome) -> None:
    driver.get(JS_PROBE)
    assert driver.title == "js-off"


def test_register_log_in_add_a_mailbox_and_read_mail(
    stack: RunningStack, driver: webdriver.Chrome, downloads: Path
) -> None:
    base = stack.info["web_url"]

    driver.get(base + "/")
    assert "Logged in as user: Not logged in" in shoot(driver, "01-landing")

    driver.get(base + "/register")
    shoot(driver, "02-register")
    button(driver, "Create my account")
    wait_until(lambda: driver.find_elements(By.ID, "username"), 10, "the new account page")
    shoot(driver, "03-registered")
    username, password = code(driver, "username"), code(driver, "password")
    assert code(driver, "account") and username and password

    button(driver, "Download the key file")
    keyfile = downloads / f"ddmail-{username}.key"
    wait_until(
        lambda: keyfile.exists() and not list(downloads.glob("*.crdownload")),
        15,
        "the key file download",
    )
    assert keyfile.read_bytes().count(b"key: ") == 1

    driver.get(base + "/login")
    shoot(driver, "04-login")
    driver.find_element(By.ID, "user").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "key").send_keys(str(keyfile))
    button(driver, "Log in")
    wait_until(lambda: "/settings" in driver.current_url, 10, "the redirect after login")
    assert f"Logged in as user: {username}" in shoot(driver, "05-settings")

    driver.get(base + "/settings/mailboxes")
    shoot(driver, "06-mailboxes")
    local = "e2e" + uuid.uuid4().hex[:8]
    address = f"{local}@ddmail.test"
    driver.find_element(By.ID, "local_part").send_keys(local)
    domain = driver.find_element(By.ID, "domain")
    domain.find_element(By.CSS_SELECTOR, "option[value='ddmail.test']").click()
    button(driver, "Add mailbox")
    wait_until(lambda: driver.find_elements(By.ID, "mailbox-password"), 10, "the mailbox password")
    assert address in shoot(driver, "07-mailbox-password")
    mailbox_password = code(driver, "mailbox-password")
    assert mailbox_password

    driver.get(base + "/settings/mailboxes")
    assert address in shoot(driver, "08-mailboxes-after")
    driver.get(base + "/settings/audit")
    audit = shoot(driver, "09-audit")
    assert "mailbox added" in audit and "login" in audit
    driver.get(base + "/help")
    shoot(driver, "10-help")

    marker = "e2e-" + uuid.uuid4().hex
    stack.deliver(address, f"hello {marker}", f"The marker is {marker}.\n")

    def fetch() -> bytes | None:
        with stack.imap() as imap:
            imap.login(address, mailbox_password)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "BODY", marker)
            ids = found[0].split()
            if not ids:
                return None
            _, data = imap.fetch(ids[0], "(RFC822)")
            return bytes(data[0][1])  # type: ignore[index]

    message = wait_until(fetch, 20, "the message over IMAPS")
    assert marker.encode() in message

    # Privacy, after everything above: no secret of this user and no IP address is kept in
    # plaintext in any log or table of the stack.
    session_cookie = driver.get_cookie("__Host-ddmail_session")
    assert session_cookie is not None
    key_line = next(line for line in keyfile.read_text().splitlines() if line.startswith("key:"))
    secrets = [password, mailbox_password, key_line[4:].strip(), session_cookie["value"]]
    logs = "\n".join(p.read_text(errors="replace") for p in stack.log_dir.rglob("*") if p.is_file())
    tables, blobs = database_text(stack.info["db_url"])
    for secret in secrets:
        assert secret not in logs
        assert secret not in tables
        assert secret.encode() not in blobs
    for text_ in (logs, tables):
        assert not IP.search(text_), IP.search(text_)
    assert b"127.0.0.1" not in blobs  # the address every request here came from


# IPv4, compressed IPv6 (::1, fe80::…) and full eight-group IPv6; clock times do not match.
IP = re.compile(
    r"\b(?:\d{1,3}\.){3}\d{1,3}\b|[0-9a-f]*::[0-9a-f:]*[0-9a-f]|\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b"
)


def database_text(url: str) -> tuple[str, bytes]:
    """Every row of every table: the text columns as text, the binary ones (ciphertext, digests)
    apart. Random bytes shown as text spell an 'IPv6 address' now and then ('d68::a')."""
    engine = sa.create_engine(url)
    text_values: list[str] = []
    binary_values: list[bytes] = []
    with engine.connect() as conn:
        for name in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{name}"')):
                for value in row:
                    if isinstance(value, (bytes, memoryview)):
                        binary_values.append(bytes(value))
                    else:
                        text_values.append(repr(value))
    engine.dispose()
    return "\n".join(text_values), b"\n".join(binary_values)
