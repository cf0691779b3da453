"""Every page a user can reach, audited in a real browser against a real `ddmail stack up`.

On each page: the Nu Html Checker finds no error in the HTML exactly as the server sent it (the
response body, read over DevTools); axe-core finds no WCAG 2.0/2.1 A or AA violation and nothing
scrolls sideways in a window 320 CSS px wide (WCAG 1.4.10, reflow), both as the page loads and
with its <details> opened; and full-page screenshots at 1280 and 360 px land in
artifacts/screenshots/. Everything found is also written to artifacts/page-audit/ (report.json
and the HTML as served), for whoever fixes the templates.

The panel has no JavaScript (CSP `default-src 'none'`), but axe is a script: this browser has
JavaScript on, and axe is injected over WebDriver (DevTools' Runtime), which the page's CSP does
not govern. The page itself still runs under its CSP, so it renders exactly as users see it
(tests/e2e/test_browser.py checks the panel with JavaScript off). The checkers come pinned from
the npm registry (tests/e2e/audit-tools.txt, installed by `./dev test`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from ddmail_web.app import create_app
from tests.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    REPO,
    SCREENSHOTS,
    button,
    chromium,
    code,
    full_page_png,
)
from tests.panel_down import panel_down
from tests.stackrun import VENV_BIN, RunningStack, wait_until

# The walk visits ~40 pages, each with axe, two screenshots and a reflow check: more than the
# suite's default 300 s on a busy 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
DESKTOP, PHONE, REFLOW = 1280, 360, 320
TOOLS_LIST = Path(__file__).with_name("audit-tools.txt")
REPORT = REPO / "artifacts" / "page-audit"
# GET routes that serve no HTML page (files, images, machine-readable documents): every other
# GET route of the panel must be among the audited pages.
NOT_PAGES = {
    "static",
    "healthz",
    "public.autoconfig",
    "public.mta_sts_file",
    "public.security_txt_file",
    "wkd.advanced",
    "wkd.advanced_policy",
    "wkd.direct",
    "wkd.direct_policy",
    "totp.qr",  # the QR image on /settings/totp
    "account_data.export",  # a JSON download
}


def tool_dir(name: str) -> Path:
    """Where `./dev test` unpacked the pinned version of NAME."""
    root = Path(os.environ.get("DDMAIL_TEST_TOOLS", "/var/cache/ddmail-test-tools"))
    for line in TOOLS_LIST.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            path = root / f"{name}-{fields[1]}"
            # Never a skip: the audit is only worth something if it always runs.
            assert path.is_dir(), f"{path} is missing: `./dev test` installs it (setup_test_tools)"
            return path
    raise AssertionError(f"{name} is not pinned in {TOOLS_LIST}")


@dataclass
class Page:
    name: str
    url: str
    method: str
    status: int
    html: str
    # Each with "state": the page as loaded, or with every <details> opened (DETAILS_OPEN).
    violations: list[dict[str, Any]]
    incomplete: list[str]  # axe rules it could not decide (not failures; listed in the report)
    reflow: dict[str, dict[str, Any]]  # state -> widths at 320 CSS px
    vnu: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


# Runs in the page (over WebDriver, outside the page's CSP); resolves with axe's findings.
AXE_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}, resultTypes: ['violations']})
  .then(r => done(JSON.stringify({
      version: axe.version,
      passes: r.passes.length,
      // resultTypes keeps one example node of each rule axe could not decide.
      incomplete: r.incomplete.map(v => `${v.id}: ${v.nodes.map(n => n.target).join(', ')}`),
      violations: r.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => ({target: n.target, html: n.html.slice(0, 200)})),
      })),
    })),
    e => done(JSON.stringify({error: String(e)})));
"""

# The widths of the page and its viewport, and what is too wide: the innermost elements whose
# box or content reaches past the viewport, leaving out those inside a box that clips or scrolls
# them (such as a wide table's own scroll container), which do not widen the page.
MEASURE = """
const root = document.documentElement, limit = root.clientWidth + 0.5;
const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
  [...el.classList].map(c => '.' + c).join('') +
  (el.getAttribute('name') ? `[name=${el.getAttribute('name')}]` : '');
const contained = el => {
  for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    if (getComputedStyle(a).overflowX !== 'visible') return true;
  }
  return false;
};
const extent = el => {
  const r = el.getBoundingClientRect();
  if (!r.width || !el.checkVisibility()) return 0;
  // A box that clips or scrolls its content (a table's scroll container, visually-hidden
  // text) reaches only as far as the box itself.
  const spills = getComputedStyle(el).overflowX === 'visible';
  return spills ? Math.max(r.right, r.left + el.scrollWidth) : r.right;
};
const sticksOut = el => extent(el) > limit && !contained(el);
const wide = [...document.body.querySelectorAll('*')]
  .filter(el => sticksOut(el) && ![...el.children].some(sticksOut))
  .map(el => `${name(el.parentElement)} > ${name(el)} (right edge ${Math.round(extent(el))})`);
return {innerWidth: innerWidth, clientWidth: root.clientWidth, scrollWidth: root.scrollWidth,
        wide: wide.slice(0, 10)};
"""


AS_LOADED, DETAILS_OPEN = "as loaded", "every <details> open"
OPEN_DETAILS = """
const closed = [...document.querySelectorAll('details:not([open])')];
closed.forEach(d => { d.open = true; });
return closed.length;
"""


def performance_log(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The DevTools events logged since the last call (the log is emptied by reading it)."""
    entries: list[dict[str, Any]] = driver.get_log("performance")  # type: ignore[no-untyped-call]
    return entries


def _left(element: WebElement) -> bool:
    """True once ELEMENT's page is gone. Mid-navigation Chromium may answer "Node with given id
    does not belong to the document" instead of a stale reference (which Selenium's
    staleness_of expects, failing the walk now and then at the slow registration)."""
    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


class Auditor:
    """Walks the panel in one browser and audits every page it lands on."""

    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver, self.base = driver, base
        self.axe_source = (tool_dir("axe-core") / "axe.min.js").read_text()
        self.pages: list[Page] = []

    # -- getting around ------------------------------------------------------------------------

    def get(self, name: str, path: str, base: str | None = None) -> Page:
        performance_log(self.driver)  # forget earlier network events
        self.driver.get((base or self.base) + path)
        return self.audit(name)

    def go(self, path: str) -> None:
        """Only get there (a page audited elsewhere)."""
        self.driver.get(self.base + path)

    def press(self, label: str, scope: str = "main") -> None:
        """Press the button LABEL inside SCOPE and wait for the page it leads to."""
        performance_log(self.driver)  # forget earlier network events
        old = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(
            By.XPATH, f"//{scope}//button[normalize-space()={label!r}]"
        ).click()
        WebDriverWait(self.driver, 30).until(lambda _: _left(old))
        # A script may also meet the old document on its way out: look again.
        WebDriverWait(self.driver, 30, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )

    def submit(self, name: str, label: str, scope: str = "main") -> Page:
        """Press the button LABEL and audit the page it leads to."""
        self.press(label, scope)
        return self.audit(name)

    def type_into(self, element_id: str, text: str) -> None:
        field = self.driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(text)

    def choose(self, element_id: str, value: str) -> None:
        Select(self.driver.find_element(By.ID, element_id)).select_by_value(value)

    def upload(self, xpath: str, path: Path) -> None:
        """Put PATH into the file field XPATH."""
        self.driver.find_element(By.XPATH, xpath).send_keys(str(path))

    def log_in(self, username: str, password: str, keyfile: Path) -> None:
        self.type_into("user", username)
        self.type_into("password", password)
        self.upload("//input[@id='key']", keyfile)

    # -- the audit -----------------------------------------------------------------------------

    def audit(self, name: str) -> Page:
        request_id, method, status, mime = self._document()
        assert mime == "text/html", f"{name}: {mime} at {self.driver.current_url}"
        body = self.driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": request_id})
        assert not body["base64Encoded"], f"{name}: the body is not text"
        self._screenshots(name)
        violations: list[dict[str, Any]] = []
        incomplete: set[str] = set()
        reflow: dict[str, dict[str, Any]] = {}
        for state in (AS_LOADED, DETAILS_OPEN):
            # What a user sees after opening the page's <details> (a mailbox's forms) is
            # checked too: the browser does exactly this when a summary is clicked.
            if state == DETAILS_OPEN and not self.driver.execute_script(OPEN_DETAILS):
                break
            axe = self.run_axe(name)
            seen = {(v["id"], json.dumps(v["nodes"])) for v in violations}
            violations += [
                {**v, "state": state}
                for v in axe["violations"]
                if (v["id"], json.dumps(v["nodes"])) not in seen
            ]
            incomplete.update(axe["incomplete"])
            reflow[state] = self.measure_reflow()
        page = Page(
            name=name,
            url=self.driver.current_url,
            method=method,
            status=status,
            html=body["body"],
            violations=violations,
            incomplete=sorted(incomplete),
            reflow=reflow,
        )
        self.pages.append(page)
        return page

    def _document(self) -> tuple[str, str, int, str]:
        """The top-level document's response since the last look at the network log: its
        request id, the method of its (last) request, its status and its MIME type."""
        methods: dict[str, str] = {}
        found: dict[str, Any] | None = None
        for entry in performance_log(self.driver):
            event = json.loads(entry["message"])["message"]
            params = event.get("params", {})
            if event["method"] == "Network.requestWillBeSent":
                methods[params["requestId"]] = params["request"]["method"]  # last of redirects
            elif event["method"] == "Network.responseReceived" and params["type"] == "Document":
                found = params
        assert found is not None, f"no document response for {self.driver.current_url}"
        request_id = str(found["requestId"])
        response = found["response"]
        return request_id, methods.get(request_id, "GET"), response["status"], response["mimeType"]

    def run_axe(self, name: str) -> dict[str, Any]:
        if not self.driver.execute_script("return typeof axe === 'object'"):
            self.driver.execute_script(self.axe_source)
        result: dict[str, Any] = json.loads(self.driver.execute_async_script(AXE_RUN, AXE_TAGS))
        assert "error" not in result, f"{name}: axe failed: {result.get('error')}"
        # Rules that passed prove axe really looked at the page.
        assert result["passes"] > 0, f"{name}: axe checked nothing"
        return result

    def _emulate(self, width: int, height: int = 900) -> None:
        """A viewport WIDTH CSS px wide, as a window of that size (not a phone's zoomed one)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def _screenshots(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        number = len(self.pages) + 1
        # Overlay scrollbars, as on phones: else the picture is a scrollbar narrower than the
        # page laid out for it and cuts off its right edge.
        self.driver.execute_cdp_cmd("Emulation.setScrollbarsHidden", {"hidden": True})
        try:
            for width in (DESKTOP, PHONE):
                self._emulate(width)
                path = SCREENSHOTS / f"audit-{number:02d}-{name}-{width}.png"
                path.write_bytes(full_page_png(self.driver))
        finally:
            self.driver.execute_cdp_cmd("Emulation.setScrollbarsHidden", {"hidden": False})
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def measure_reflow(self) -> dict[str, Any]:
        self._emulate(REFLOW, 800)
        try:
            measured: dict[str, Any] = self.driver.execute_script(MEASURE)
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        assert measured["innerWidth"] == REFLOW, measured  # the override really took effect
        return measured


def make_public_key(home: Path, uid: str) -> Path:
    """An OpenPGP public key (primary key and encryption subkey), armored, in HOME."""
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--no-tty", "--quiet", "--homedir", str(home)]
    try:
        subprocess.run(
            [*gpg, "--pinentry-mode", "loopback", "--passphrase", "",
             "--quick-gen-key", uid, "default", "default", "never"],
            check=True, timeout=120,
        )  # fmt: skip
        armour = subprocess.run(
            [*gpg, "--armor", "--export"], capture_output=True, check=True, timeout=60
        ).stdout
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    path = home / "public.asc"
    path.write_bytes(armour)
    return path


def walk(a: Auditor, stack: RunningStack, downloads: Path, scratch: Path) -> None:
    """Every page a user can reach, in the states worth seeing: empty and filled lists, a field
    error, a page error, success messages and the one-time pages that show a secret."""
    driver = a.driver
    domain = stack.info["global_domain"]
    tag = uuid.uuid4().hex[:8]

    for name, path in (
        ("landing", "/"),
        ("help", "/help"),
        ("about", "/about"),
        ("pricing", "/pricing"),
        ("terms", "/terms"),
        ("contact", "/contact"),
        ("register", "/register"),
        ("login", "/login"),
    ):
        assert a.get(name, path).status == 200, name
    assert a.get("not-found", f"/no-such-page-{tag}").status == 404

    junk = scratch / "junk.key"
    junk.write_bytes(b"not a key file\n")
    a.go("/login")
    a.log_in("nosuchuser", "not the password", junk)
    page = a.submit("login-failed", "Log in")  # a page-level error
    assert page.status == 401 and "flash-error" in page.html
    a.log_in("Not a user name!", "not the password", junk)
    page = a.submit("login-field-error", "Log in")  # an error tied to a field
    assert page.status == 400 and 'id="user-error"' in page.html
    big = scratch / "big.key"
    big.write_bytes(b"k" * 300 * 1024)  # over the 256 KiB nginx takes: its own 413 page
    a.log_in("nosuchuser", "not the password", big)
    assert a.submit("too-large", "Log in").status == 413

    a.go("/register")
    a.submit("registered", "Create my account")
    username, password = code(driver, "username"), code(driver, "password")
    account = code(driver, "account")
    button(driver, "Download the key file")
    keyfile = downloads / f"ddmail-{username}.key"
    wait_until(
        lambda: keyfile.exists() and not list(downloads.glob("*.crdownload")), 15, "the key file"
    )

    a.go("/login")
    a.log_in(username, password, keyfile)
    assert a.submit("settings", "Log in").path == "/settings"

    a.get("mailboxes-empty", "/settings/mailboxes")
    a.type_into("local_part", "not valid!")
    page = a.submit("mailbox-field-error", "Add mailbox")
    assert page.status == 400 and 'id="local_part-error"' in page.html
    local = f"audit{tag}"
    address = f"{local}@{domain}"
    a.type_into("local_part", local)
    a.choose("domain", domain)
    assert address in a.submit("mailbox-password", "Add mailbox").html
    a.get("mailboxes", "/settings/mailboxes")

    a.get("aliases-empty", "/settings/aliases")
    a.type_into("local_part", f"alias{tag}")
    a.choose("domain", domain)
    a.choose("destination", address)
    assert "flash-success" in a.submit("alias-added", "Add alias").html  # a success message

    a.get("domains-empty", "/settings/domains")
    own = f"audit{tag}.example"
    a.type_into("domain", own)
    assert "flash-success" in a.submit("domain-added", "Add domain").html
    assert stack.dns is not None
    token = code(driver, "verification-token")
    stack.dns.publish(own, f'_ddmail-verify.{own}. IN TXT "{token}"')
    assert "flash-success" in a.submit("domain-verified", f"Check DNS now for {own}").html

    a.get("openpgp-empty", "/settings/openpgp")
    a.upload("//input[@id='public_key']", make_public_key(scratch / "gnupg", f"Audit <{address}>"))
    assert 'id="fingerprint"' in a.submit("openpgp-uploaded", "Upload key").html
    a.submit("openpgp-active", "Encrypt this mailbox's incoming mail with this key")

    a.get("users", "/settings/users")
    a.upload("//input[@id='key']", keyfile)
    assert 'id="username"' in a.submit("new-user", "Add a user").html
    a.get("users-two", "/settings/users")

    a.get("funds", "/settings/funds")
    admin = [str(VENV_BIN / "ddmail"), "admin", "account", "--root", str(stack.root)]
    subprocess.run([*admin, "disable", account], check=True, capture_output=True, timeout=60)
    try:
        # What every new account sees in production, where accounts start unfunded.
        assert "flash-error" in a.get("funds-disabled", "/settings/funds").html
    finally:
        subprocess.run([*admin, "enable", account], check=True, capture_output=True, timeout=60)

    a.get("sessions", "/settings/sessions")
    a.get("totp", "/settings/totp")
    a.type_into("totp", "12")
    a.upload("//input[@id='key']", keyfile)
    assert 'id="totp-error"' in a.submit("totp-field-error", "Turn one-time codes on").html
    a.get("audit-trail", "/settings/audit")

    a.go("/settings")
    a.upload("//form[@action='/settings/password']//input[@type='file']", keyfile)
    a.submit("new-password", "Make a new password")
    password = code(driver, "password")

    a.get("delete-account", "/settings/account/delete")
    assert "flash-success" in a.submit("logged-out", "Log out", scope="header").html
    a.log_in(username, password, keyfile)
    a.press("Log in")
    a.go("/settings/account/delete")
    driver.find_element(By.ID, "confirm").click()
    a.upload("//input[@id='key']", keyfile)
    a.submit("account-deleted", "Delete everything")

    with panel_down(scratch / "panel-down", stack.root) as down:
        base = f"https://127.0.0.1:{down.web_port}"
        assert a.get("panel-unavailable", "/settings", base=base).status == 502


@pytest.fixture(scope="module")
def audit_downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-downloads")


@pytest.fixture(scope="module")
def audit_driver(
    stack: RunningStack, audit_downloads: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[webdriver.Chrome]:
    assert CHROMEDRIVER.exists() and CHROMIUM.exists(), "./dev test installs chromium-driver"
    browser = chromium(
        stack.root / "tls" / "server.pem",
        tmp_path_factory.mktemp("audit-profile"),
        audit_downloads,
        javascript=True,  # for axe only: the page's CSP still keeps every script of its own out
        network_log=True,
    )
    browser.set_script_timeout(120)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def audited(
    stack: RunningStack,
    audit_driver: webdriver.Chrome,
    audit_downloads: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[Page]:
    auditor = Auditor(audit_driver, stack.info["web_url"])
    for old in SCREENSHOTS.glob("audit-*.png"):
        old.unlink()  # a renamed page leaves no stale picture behind
    walk(auditor, stack, audit_downloads, tmp_path_factory.mktemp("audit"))
    return auditor.pages


def run_vnu(files: list[Path]) -> dict[Path, list[dict[str, Any]]]:
    """The Nu Html Checker's messages for each file (one JVM for all of them)."""
    java = shutil.which("java")
    assert java, "./dev test installs default-jre-headless"
    jar = tool_dir("vnu-jar") / "build" / "dist" / "vnu.jar"
    done = subprocess.run(
        [java, "-jar", str(jar), "--format", "json", "--stdout", "--exit-zero-always",
         *map(str, files)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    found: dict[Path, list[dict[str, Any]]] = {path.resolve(): [] for path in files}
    for message in json.loads(done.stdout)["messages"]:
        path = Path(urlsplit(message.get("url", "")).path).resolve()
        assert path in found, f"a message about no file checked: {message}"
        found[path].append(message)
    return found


VNU_CONTROL = '<!doctype html><html lang="en"><head><title>c</title></head><body><p><div></p>'


@pytest.fixture(scope="module")
def validated(audited: list[Page], tmp_path_factory: pytest.TempPathFactory) -> list[Page]:
    """The pages with the Nu Html Checker's messages; the HTML as served and a report of
    everything found are kept in artifacts/page-audit/."""
    shutil.rmtree(REPORT, ignore_errors=True)
    (REPORT / "html").mkdir(parents=True)
    files = []
    for number, page in enumerate(audited, 1):
        path = REPORT / "html" / f"{number:02d}-{page.name}.html"
        path.write_text(page.html, encoding="utf-8")
        files.append(path)
    control = tmp_path_factory.mktemp("vnu") / "control.html"
    control.write_text(VNU_CONTROL)
    found = run_vnu([*files, control])
    # The control proves that the checker ran and that its errors reach this test.
    assert any(m["type"] == "error" for m in found[control.resolve()]), found[control.resolve()]
    for page, path in zip(audited, files, strict=True):
        page.vnu = found[path.resolve()]
    report = [
        {**{k: v for k, v in asdict(page).items() if k != "html"}, "file": path.name}
        for page, path in zip(audited, files, strict=True)
    ]
    (REPORT / "report.json").write_text(json.dumps(report, indent=2))
    return audited


# -- the checks ---------------------------------------------------------------------------------

# A page under a CSP that allows no script, with an image without a text alternative and a line
# that cannot wrap: what axe and the reflow check must report.
CONTROL = (
    "data:text/html,<!doctype html><html lang=en><head><meta charset=utf-8>"
    "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'\">"
    "<title>control</title></head><body><main><h1>Control</h1><img src=x.png>"
    f"<pre id=wide>{'x' * 200}</pre></main></body></html>"
)


def test_the_checks_see_known_faults(audit_driver: webdriver.Chrome) -> None:
    """axe, injected over WebDriver, runs on a page whose CSP allows no script at all and
    reports what it finds; the reflow check sees a page wider than 320 px and names the cause.
    (The Nu Html Checker's control is in `validated`.)"""
    audit_driver.get(CONTROL)
    auditor = Auditor(audit_driver, "")
    assert "image-alt" in [v["id"] for v in auditor.run_axe("control")["violations"]]
    reflow = auditor.measure_reflow()
    assert reflow["scrollWidth"] > reflow["clientWidth"]
    assert [w.split(" (")[0] for w in reflow["wide"]] == ["main > pre#wide"]


def test_every_page_of_the_panel_is_audited(audited: list[Page]) -> None:
    """Each GET route that serves a page is among the audited ones (a new page joins the walk)."""
    urls = create_app().url_map.bind("localhost")
    seen = set()
    for page in audited:
        if page.method == "GET" and page.status == 200:
            seen.add(urls.match(page.path, method="GET")[0])
    pages = {r.endpoint for r in urls.map.iter_rules() if "GET" in (r.methods or ())}
    assert pages - NOT_PAGES - seen == set()


def test_axe_finds_no_wcag_a_or_aa_violation(audited: list[Page]) -> None:
    lines = []
    for page in audited:
        for v in page.violations:
            where = f"{page.name} ({page.path}, {v['state']})"
            lines.append(f"{where}: {v['id']} [{v['impact']}] {v['help']}")
            lines += [
                f"    {' '.join(n['target'])}  {' '.join(n['html'].split())}" for n in v["nodes"]
            ]
    assert not lines, f"axe ({', '.join(AXE_TAGS)}):\n" + "\n".join(lines)


def test_the_html_as_served_is_valid(validated: list[Page]) -> None:
    lines = []
    for page in validated:
        for m in page.vnu:
            if m["type"] != "info":  # "error", or "non-document-error" (could not check)
                where = f"line {m.get('lastLine', '?')}"
                lines.append(f"{page.name} ({page.path}) {where}: {m['message']}")
                if m.get("extract"):
                    lines.append(f"    {m['extract']!r}")
    assert not lines, "Nu Html Checker:\n" + "\n".join(lines)


def test_nothing_scrolls_sideways_at_320_css_px(audited: list[Page]) -> None:
    lines = []
    for page in audited:
        for state, r in page.reflow.items():
            if r["scrollWidth"] > r["clientWidth"]:
                where = f"{page.name} ({page.path}, {state})"
                lines.append(f"{where}: {r['scrollWidth']} px wide in {r['clientWidth']}")
                lines += [f"    {w}" for w in r["wide"]]
    assert not lines, f"horizontal scroll at {REFLOW} CSS px:\n" + "\n".join(lines)
