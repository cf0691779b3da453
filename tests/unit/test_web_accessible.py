"""What a screen reader user and a new user notice on the panel (issue 13): every control has a
name that says what it acts on, errors are announced and tied to their field, messages follow
the heading and say in words what they are, and a new mailbox comes with its mail program
settings, the same ones the help page gives."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask

import ddmail_web
from tests.services import Services
from tests.webclient import Browser

pytestmark = pytest.mark.postgres
ONION = "b" * 56 + ".onion"
AUTOCONFIG = "/.well-known/autoconfig/mail/config-v1.1.xml"


class Structure(HTMLParser):
    """The parts of a page assistive technology names things by."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []  # with "in_label" set when wrapped
        self.label_for: set[str] = set()
        self.labels: list[str] = []
        self.buttons: list[str] = []
        self.headers: list[str] = []
        self.navs: list[dict[str, str | None]] = []
        self._open: dict[str, list[str]] = {}  # tag -> text of each open element
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label" and found.get("for"):
            self.label_for.add(str(found["for"]))
        if tag in ("label", "button", "th"):
            self._open.setdefault(tag, []).append("")
        if tag == "nav":
            self.navs.append(found)
        visible_input = tag == "input" and found.get("type") not in ("hidden", "submit")
        if visible_input or tag in ("select", "textarea"):
            self.controls.append({**found, "in_label": "y" if self._open.get("label") else None})

    def handle_data(self, data: str) -> None:
        for texts in self._open.values():
            if texts:
                texts[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if self._open.get(tag):
            text = " ".join(self._open[tag].pop().split())
            {"label": self.labels, "button": self.buttons, "th": self.headers}[tag].append(text)


def repeated(names: list[str]) -> list[str]:
    return sorted({name for name in names if names.count(name) > 1})


@pytest.fixture
def browser(env: tuple[Services, Flask]) -> Browser:
    browser = Browser(env[1])
    browser.register_and_login()
    for name in ("alice", "bob"):
        browser.post("/settings/mailboxes", {"local_part": name, "domain": "ddmail.test"})
    browser.post(
        "/settings/aliases",
        {"local_part": "team", "domain": "ddmail.test", "destination": ["alice@ddmail.test"]},
    )
    browser.post("/settings/domains", {"domain": "example.org"})
    return browser


SETTINGS_PAGES = (
    "/settings",
    "/settings/mailboxes",
    "/settings/aliases",
    "/settings/domains",
    "/settings/openpgp",
    "/settings/users",
    "/settings/sessions",
    "/settings/funds",
    "/settings/totp",
    "/settings/audit",
    "/settings/account/delete",
)


def test_every_control_is_named_for_what_it_acts_on(browser: Browser) -> None:
    for path in SETTINGS_PAGES:
        page = Structure(browser.get(path).get_data(as_text=True))
        unlabelled = [
            c for c in page.controls if not c["in_label"] and c.get("id") not in page.label_for
        ]
        assert unlabelled == [], path
        # Two "Remove" buttons or two "Key file" fields: a screen reader lists them by name.
        assert repeated(page.buttons) == [] and repeated(page.labels) == [], path
        assert all(page.headers), f"{path}: an empty table header"
        assert page.navs and all(nav.get("aria-label") for nav in page.navs), path


def test_repeated_controls_name_their_mailbox_and_session(browser: Browser) -> None:
    page = Structure(browser.get("/settings/mailboxes").get_data(as_text=True))
    assert "Remove mailbox alice@ddmail.test" in page.buttons
    assert "Remove mailbox bob@ddmail.test" in page.buttons
    sessions = Structure(browser.get("/settings/sessions").get_data(as_text=True))
    assert all(b.startswith("End the session started ") for b in sessions.buttons if b != "Log out")
    menu = Structure(browser.get("/settings").get_data(as_text=True))
    assert {"Key file for a new password", "Key file for a new key file"} <= set(menu.labels)


@pytest.mark.parametrize("path", ["/settings/mailboxes", "/settings/aliases"])
def test_the_domain_choice_is_labelled_and_starts_empty(browser: Browser, path: str) -> None:
    page = browser.get(path).get_data(as_text=True)
    assert '<label for="domain">Domain</label>' in page
    select = re.search(r'<select[^>]*id="domain"[^>]*>(.*?)</select>', page, re.S)
    assert select is not None
    options = re.findall(r"<option([^>]*)>([^<]*)</option>", select.group(1))
    assert options[0] == (' value=""', "Choose a domain")
    # The one choice most people make is made for them.
    assert options[1] == (' selected value="ddmail.test"', "ddmail.test")


def test_a_field_error_sits_at_its_field_and_the_title_says_error(browser: Browser) -> None:
    resp = browser.post("/settings/mailboxes", {"local_part": "bad name!", "domain": "ddmail.test"})
    page = resp.get_data(as_text=True)
    assert "<title>Error: Mailboxes · DDMail</title>" in page
    field = re.search(r'<input[^>]*id="local_part"[^>]*>', page)
    assert field is not None
    assert 'aria-invalid="true"' in field.group(0)
    assert 'aria-describedby="local_part-error"' in field.group(0)
    after = page[field.end() :]
    assert after.startswith('<span class="flash-error field-error" id="local_part-error">Error: ')
    assert "<title>Mailboxes · DDMail</title>" in browser.get("/settings/mailboxes").get_data(
        as_text=True
    )


def test_page_messages_follow_the_heading_and_say_what_they_are(browser: Browser) -> None:
    refused = browser.post(
        "/settings/mailboxes/password",
        {"mailbox": "alice@ddmail.test"},
        token_from="/settings/mailboxes",
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "<title>Error: Mailboxes · DDMail</title>" in refused
    assert re.search(r'<h1>Mailboxes</h1>\s*<p class="flash-error" role="alert">Error: ', refused)
    done = browser.post(
        "/settings/aliases",
        {"local_part": "info", "domain": "ddmail.test", "destination": ["bob@ddmail.test"]},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "<title>Aliases · DDMail</title>" in done
    assert re.search(r'<h1>Aliases</h1>\s*<p class="flash-success" role="status">Done: info@', done)
    missing = browser.get("/no/such/page").get_data(as_text=True)
    assert "<title>Error: Page not found · DDMail</title>" in missing
    assert 'role="alert">Error: There is no page at this address.' in missing


@pytest.mark.parametrize("name", ["too-large", "unavailable"])
def test_the_error_pages_nginx_serves_say_error_like_the_panels(name: str) -> None:
    page = (Path(ddmail_web.__file__).parent / "static" / "errors" / f"{name}.html").read_text()
    assert re.search(r"<title>Error: [^<]+ · DDMail</title>", page)
    assert re.search(r'</h1>\s*<p class="flash-error" role="alert">Error: ', page)


def test_the_notes_with_new_credentials_are_warnings(env: tuple[Services, Flask]) -> None:
    browser = Browser(env[1])
    page = browser.post("/register").get_data(as_text=True)
    assert '<p class="warning" role="alert">Warning: write these down now.' in page
    assert "flash-success" not in page
    reg = browser.register_and_login()
    page = browser.post_with_keyfile("/settings/users", {}, reg.keyfile).get_data(as_text=True)
    assert '<p class="warning" role="alert">Warning: give these to the new user now.' in page
    assert "flash-success" not in page


def _clearnet_table(page: str) -> str:
    found = re.search(r'<table class="settings">\n<tr><th scope="col">Serv.*?</table>', page, re.S)
    assert found is not None
    return found.group(0)


def test_a_new_mailbox_comes_with_its_mail_program_settings(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    public = env[0].cfg.public
    made = browser.post("/settings/mailboxes", {"local_part": "carol", "domain": "ddmail.test"})
    page = made.get_data(as_text=True)
    help_page = browser.get("/help").get_data(as_text=True)
    # The very table the help page gives, with the configured host and ports.
    table = _clearnet_table(page)
    assert table == _clearnet_table(help_page)
    assert f"<td><code>{public.mail_hostname}</code></td><td>{public.imaps_port}</td>" in table
    assert f"<td>{public.submission_port}</td><td>STARTTLS</td>" in table
    assert f"<td>{public.submissions_port}</td><td>SSL/TLS</td>" in table
    assert "User name: <code>carol@ddmail.test</code>" in page
    assert f'href="{AUTOCONFIG}"' in page and 'href="/help"' in page
    assert browser.get(AUTOCONFIG).status_code == 200
    assert ".onion" not in page and "Over Tor" not in page  # none configured
    listing = browser.get("/settings/mailboxes").get_data(as_text=True)
    for address in ("alice", "bob", "carol"):
        assert f"User name: <code>{address}@ddmail.test</code>" in listing


def test_the_mailbox_settings_name_the_onion_service_when_there_is_one(
    env: tuple[Services, Flask],
) -> None:
    svc, _ = env
    from ddmail_web.app import create_app

    cfg = svc.cfg
    app = create_app(
        dataclasses.replace(cfg, public=dataclasses.replace(cfg.public, onion_hostname=ONION))
    )
    browser = Browser(app)
    browser.register_and_login()
    page = browser.post(
        "/settings/mailboxes", {"local_part": "dan", "domain": "ddmail.test"}
    ).get_data(as_text=True)
    tor = page.split("Over Tor", 1)[1].split("</table>", 1)[0]
    assert f"<td><code>{ONION}</code></td><td>{cfg.public.anon_imap_port}</td><td>None</td>" in tor
    assert f"<td>{cfg.public.anon_submission_port}</td><td>None</td>" in tor


def test_each_mailbox_shows_the_storage_it_uses(
    env: tuple[Services, Flask], browser: Browser
) -> None:
    # Mail as Dovecot would have stored it for alice (encrypted files under her maildir).
    maildir = Path(env[0].cfg.mail_root) / "ddmail.test" / "alice" / "cur"
    maildir.mkdir(parents=True)
    (maildir / "1.mail").write_bytes(b"x" * (3 * 1024 * 1024 + 200 * 1024))
    page = browser.get("/settings/mailboxes").get_data(as_text=True)
    found = re.findall(r'<h3>(\S+@ddmail\.test)</h3>\s*<p class="storage">([^\n]*)', page)
    items = dict(found)
    assert items["alice@ddmail.test"] == "Storage used: 3.2 MiB"
    assert items["bob@ddmail.test"] == "Storage used: 0 B"
    assert "Mailboxes have no quota." in page
    # The funds page counts the same bytes, written the same way.
    assert "3.2 MiB" in browser.get("/settings/funds").get_data(as_text=True)


def test_the_mailboxes_page_states_the_quota_the_operator_set(
    env: tuple[Services, Flask],
) -> None:
    from ddmail_web.app import create_app

    cfg = env[0].cfg
    app = create_app(
        dataclasses.replace(cfg, public=dataclasses.replace(cfg.public, mailbox_quota_mb=2048))
    )
    browser = Browser(app)
    browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "erin", "domain": "ddmail.test"})
    page = browser.get("/settings/mailboxes").get_data(as_text=True)
    assert "Quota: 2.0 GiB per mailbox; when it is full, new mail waits" in page
    assert "no quota" not in page
