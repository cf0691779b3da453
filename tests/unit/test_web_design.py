"""The panel's visual design holds its promises (issue 13): every table scrolls in a box of its
own that a keyboard user can reach and a screen reader names; every destructive form's button
looks destructive, and a form has one primary action; the one stylesheet meets WCAG AA contrast
in light and dark, shows focus (3 px or more) and loads nothing else. The measurements in a real
browser (320 px, axe-core) are in tests/e2e."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask

import ddmail_web
from tests.services import Services
from tests.unit.test_web_accessible import SETTINGS_PAGES
from tests.webclient import Browser

pytestmark = pytest.mark.postgres
STYLESHEET = Path(ddmail_web.__file__).parent / "static" / "ddmail.css"
DESTRUCTIVE = {"remove", "delete", "revoke"}  # the last part of a destructive route's path


class Page(HTMLParser):
    """Tables with the element around each, and forms with their buttons' classes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tables: list[dict[str, str | None]] = []  # the attributes of each table's parent
        self.forms: list[tuple[dict[str, str | None], list[set[str]]]] = []
        self.styled = False
        self._stack: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.styled |= "style" in found or tag == "style"
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "table":
            self.tables.append(self._stack[-1][1] if self._stack else {})
        if tag == "form":
            self.forms.append((found, []))
        if tag == "button" and self.forms:
            self.forms[-1][1].append(set(str(found.get("class") or "").split()))
        if tag not in ("input", "br", "meta", "link", "img"):
            self._stack.append((tag, found))

    def handle_endtag(self, tag: str) -> None:
        while self._stack and self._stack.pop()[0] != tag:
            pass


@pytest.fixture
def pages(env: tuple[Services, Flask], public_key: tuple[str, str]) -> dict[str, str]:
    """Every page a user reaches, with something in every list: by name, its HTML."""
    app = env[1]
    browser = Browser(app)
    shown = {"registered": browser.post("/register").get_data(as_text=True)}
    for path in ("/", "/help", "/about", "/terms", "/contact", "/pricing", "/login", "/register"):
        shown[path] = browser.get(path).get_data(as_text=True)
    reg = browser.register_and_login()
    made = browser.post("/settings/mailboxes", {"local_part": "alice", "domain": "ddmail.test"})
    shown["mailbox password"] = made.get_data(as_text=True)
    browser.post(
        "/settings/aliases",
        {"local_part": "team", "domain": "ddmail.test", "destination": ["alice@ddmail.test"]},
    )
    browser.post("/settings/domains", {"domain": "example.org"})
    added = browser.post_with_keyfile("/settings/users", {}, reg.keyfile)
    shown["new user"] = added.get_data(as_text=True)
    key, _ = public_key
    browser.post(
        "/settings/openpgp",
        {"public_key": (io.BytesIO(key.encode()), "key.asc")},
        content_type="multipart/form-data",
    )
    for path in SETTINGS_PAGES:
        shown[path] = browser.get(path).get_data(as_text=True)
    bad = browser.post("/settings/mailboxes", {"local_part": "bad name!", "domain": "ddmail.test"})
    shown["field error"] = bad.get_data(as_text=True)
    return shown


def test_every_table_scrolls_in_a_named_box_of_its_own(pages: dict[str, str]) -> None:
    with_tables = set()
    for name, html in pages.items():
        page = Page(html)
        labels = []
        for box in page.tables:
            assert "table-scroll" in str(box.get("class")).split(), name
            assert box.get("tabindex") == "0" and box.get("role") == "region", name
            label = box.get("aria-label") or ""
            labelled_by = box.get("aria-labelledby")
            assert label.strip() or (labelled_by and labelled_by in page.ids), name
            labels.append(label or labelled_by)
        assert len(labels) == len(set(labels)), f"{name}: two tables of the same name"
        if page.tables:
            with_tables.add(name)
    assert with_tables >= {
        *("/", "/help", "/contact", "registered", "new user", "mailbox password"),
        *("/settings/mailboxes", "/settings/aliases", "/settings/domains", "/settings/openpgp"),
        *("/settings/users", "/settings/sessions", "/settings/funds", "/settings/audit"),
    }


def test_every_destructive_form_looks_destructive_and_only_those(
    env: tuple[Services, Flask], pages: dict[str, str]
) -> None:
    destructive = {
        rule.rule
        for rule in env[1].url_map.iter_rules()
        if "POST" in (rule.methods or ()) and rule.rule.rsplit("/", 1)[-1] in DESTRUCTIVE
    }
    checked = set()
    for name, html in pages.items():
        for form, buttons in Page(html).forms:
            action = str(form.get("action"))
            if action in destructive:
                assert buttons and all("danger" in b for b in buttons), (name, action)
                checked.add(action)
            else:
                assert not any("danger" in b for b in buttons), (name, action)
    assert checked == destructive  # each one was on a page above


def test_a_form_has_one_primary_action(pages: dict[str, str]) -> None:
    for name, html in pages.items():
        for form, buttons in Page(html).forms:
            where = (name, form.get("action"))
            assert sum("primary" in b for b in buttons) <= 1, where
            # A form of its own (not a button in a row or the header) says what it is for.
            if "inline" not in str(form.get("class")).split():
                assert sum("primary" in b or "danger" in b for b in buttons) == 1, where


def test_no_page_styles_itself(pages: dict[str, str]) -> None:
    # CSP style-src 'self': a style attribute or element would be refused by the browser.
    assert [name for name, html in pages.items() if Page(html).styled] == []


def palettes() -> tuple[dict[str, str], dict[str, str]]:
    """The stylesheet's colours: light (the first :root) and dark (the media query's)."""
    css = STYLESHEET.read_text()
    light = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css.split("@media")[0]))
    dark_block = css.split("@media (prefers-color-scheme: dark)")[1].split("\n}\n")[0]
    return light, dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", dark_block))


def contrast(one: str, two: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(one), luminance(two)), reverse=True)
    return (high + 0.05) / (low + 0.05)


TEXT = [  # (text, background): 4.5:1
    *[("text", bg) for bg in ("bg", "surface", "field", "code", "hover")],
    *[("text", bg) for bg in ("danger-bg", "ok-bg", "warn-bg")],
    *[("muted", bg) for bg in ("bg", "surface")],
    *[("accent", bg) for bg in ("bg", "surface")],
    ("on-accent", "accent"),
    ("on-accent", "accent-hover"),
    ("on-danger", "danger"),
    ("on-danger", "danger-hover"),
    *[("danger", bg) for bg in ("bg", "surface", "danger-bg")],
    *[("ok", bg) for bg in ("bg", "ok-bg")],
    ("warn", "warn-bg"),
]
UI = [  # (border or focus ring, background): 3:1
    *[("border", bg) for bg in ("bg", "surface", "field")],
    *[("focus", bg) for bg in ("bg", "surface", "danger-bg", "ok-bg", "warn-bg")],
    ("warn-border", "warn-bg"),
]


@pytest.mark.parametrize("scheme", [0, 1], ids=["light", "dark"])
def test_colours_meet_wcag_aa_in_light_and_dark(scheme: int) -> None:
    palette = palettes()[scheme]
    assert set(palette) == set(palettes()[0]), "dark mode sets every colour light mode does"
    for pairs, least in ((TEXT, 4.5), (UI, 3.0)):
        for fg, bg in pairs:
            ratio = contrast(palette[fg], palette[bg])
            assert ratio >= least, f"--{fg} on --{bg}: {ratio:.2f}"


def test_the_stylesheet_shows_focus_and_loads_nothing_else() -> None:
    css = STYLESHEET.read_text()
    focus = re.search(r":focus-visible\s*\{[^}]*outline:\s*(\d+)px solid var\(--focus\)", css)
    assert focus is not None and int(focus.group(1)) >= 3
    assert not re.search(r"outline:\s*(none|0)\b", css)
    assert "@import" not in css and "@font-face" not in css and "url(" not in css
    assert re.search(r"\.table-scroll \{[^}]*overflow-x: auto", css)
