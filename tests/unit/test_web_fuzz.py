"""Fuzz every form of the panel, and the query strings of its pages: whatever a browser (or
anyone else) sends, the answer is never a 5xx, no exception escapes a view, and the backend
behind the panel never fails on what the panel passes on.

One logged-in user with the mailbox alice@ddmail.test, so that the mailbox forms reach the
backend. The generated values include that user's real name, password, key file and mailbox,
so the fuzzer also walks the happy paths (and may log itself out, change its password or key
file, or delete its account: the fixture then logs in again, or registers a new user).
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import io
import logging
import os
import re
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_wtf import FlaskForm
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, TestResponse
from wtforms import FileField
from wtforms.fields.core import UnboundField

from ddmail_web import forms
from ddmail_web.app import create_app
from tests.services import running_services
from tests.webclient import Browser, Registered, codes, csrf

pytestmark = pytest.mark.postgres

DOMAIN = "ddmail.test"
BASE = "https://localhost"
POST_EXAMPLES = 20  # per route
GET_EXAMPLES = 150  # over all GET routes
REPORT_LIMIT = 1500  # characters of an input shown in a failure


def form_of(view: Any) -> type[FlaskForm]:
    """The form a view reads: the first form class of ddmail_web.forms its source instantiates."""
    source = inspect.getsource(view)  # follows functools.wraps to the view itself
    for match in re.finditer(r"\b([A-Z][A-Za-z]*Form)\(", source):
        found = getattr(forms, match.group(1), None)
        if isinstance(found, type) and issubclass(found, FlaskForm):
            return found
    raise AssertionError(f"{view.__qualname__} instantiates no form of ddmail_web.forms")


def post_forms(app: Flask) -> dict[str, type[FlaskForm]]:
    """Every POST route and the form its view reads."""
    return {
        rule.rule: form_of(app.view_functions[rule.endpoint])
        for rule in app.url_map.iter_rules()
        if "POST" in (rule.methods or set())
    }


POST_FORMS = post_forms(create_app())


def form_fields(form: type[FlaskForm]) -> dict[str, bool]:
    """The form's field names (the CSRF token aside), each with whether it is a file field."""
    found = {}
    for name in dir(form):
        value = getattr(form, name, None)
        if isinstance(value, UnboundField) and name != "csrf_token":
            found[name] = issubclass(value.field_class, FileField)
    return found


def routes(app: Flask, method: str) -> list[str]:
    return sorted(
        rule.rule for rule in app.url_map.iter_rules() if method in (rule.methods or set())
    )


class BackendErrors(logging.Handler):
    """Collects the backend's and keyhandler's 'unhandled ...' errors (ddmail_common.api)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclasses.dataclass
class Panel:
    app: Flask
    browser: Browser
    reg: Registered
    mailbox: str
    errors: BackendErrors
    generation: int = 0

    def start_user(self) -> None:
        """Register a user, log in and create its mailbox through the panel."""
        self.reg = self.browser.register()
        assert self.browser.login(self.reg).status_code == 302
        local = "alice" if self.generation == 0 else f"alice{self.generation}"
        self.generation += 1
        made = self.browser.post("/settings/mailboxes", {"local_part": local, "domain": DOMAIN})
        assert "mailbox-password" in codes(made.get_data(as_text=True)), made.status_code
        self.mailbox = f"{local}@{DOMAIN}"

    def token(self) -> str:
        """A fresh CSRF token, logged in (again, or as a new user if the old one is gone)."""
        page = self.browser.get("/settings")
        if page.status_code != 200:
            if self.browser.login(self.reg).status_code != 302:
                self.start_user()
            page = self.browser.get("/settings")
        assert page.status_code == 200, page.status_code
        return csrf(page.get_data(as_text=True))

    def known(self) -> list[str]:
        return [
            self.reg.username,
            self.reg.password,
            self.reg.account,
            self.reg.keyfile.decode(),
            self.mailbox,
            self.mailbox.split("@")[0],
            DOMAIN,
            "postmaster@" + DOMAIN,
        ]


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    from tests.stackrun import postgres_url

    root: Path = tmp_path_factory.mktemp("fuzz")
    errors = BackendErrors()
    api_log = logging.getLogger("ddmail_common.api")
    api_log.addHandler(errors)
    try:
        with running_services(root, postgres_url()) as svc:
            svc.admin.call("POST", "/v1/domains/global", {"name": DOMAIN})
            # Valid registrations are generated too; the hourly limit must not end the run.
            web = dataclasses.replace(svc.cfg.web, registrations_per_hour=1_000_000)
            app = create_app(dataclasses.replace(svc.cfg, web=web))
            app.config["PROPAGATE_EXCEPTIONS"] = True  # an exception reaches the test
            state = Panel(app, Browser(app), Registered("", "", "", b""), "", errors)
            state.start_user()
            yield state
    finally:
        api_log.removeHandler(errors)


# -- values ---------------------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "\n",
    "x\r\nSet-Cookie: a=b",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' OR '1'='1",
    "'; DROP TABLE web_users; --",
    "{{ 7*7 }}",
    "${7*7}",
    "%s%s%n%x",
    "%00",
    "../../../../etc/passwd",
    "\u202e\ufeff\u200b",
    "é",
    "straße.test",
    "xn--nxasmq6b.test",
    "xn--",
    "☃@ddmail.test",
    "@",
    "@@",
    ".",
    "..",
    "a..b",
    "-",
    "a" * 64,
    "a" * 65,
    "a" * 254,
    "-1",
    "0",
    "1",
    "2",
    "3",
    "999999999999",
    "9" * 40,
    "1e309",
    "NaN",
    "y",
    "on",
    "true",
    "false",
    "123456",
    " 123 456 ",
    "123456\n",
    "\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits
    "\uff11\uff12\uff13\uff14\uff15\uff16",  # fullwidth digits
    "\U0001f600" * 10,
]
CHARS = st.characters(blacklist_categories=("Cs",))  # surrogates cannot be UTF-8 encoded


def text_values(known: list[str]) -> st.SearchStrategy[str]:
    plain = st.text(CHARS, max_size=40)
    long = st.builds(
        lambda unit, n: (unit * n)[:5000],
        st.text(CHARS, min_size=1, max_size=8),
        st.integers(1, 5000),
    )
    mixed = st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from(known + NASTY),
        st.sampled_from(NASTY),
        st.sampled_from(["", *known]),
    )
    return st.one_of(st.sampled_from(known), st.sampled_from(NASTY), plain, mixed, long)


def keyfile_bytes(real: bytes) -> st.SearchStrategy[bytes]:
    wrong_key = st.binary(min_size=0, max_size=80).map(
        lambda b: b"key: " + base64.b64encode(b) + b"\n"
    )
    garbled = st.builds(
        lambda i, b: real[:i] + b + real[i + 1 :],
        st.integers(0, max(len(real) - 1, 0)),
        st.binary(max_size=3),
    )
    return st.one_of(
        st.just(real),
        st.binary(max_size=5000),
        wrong_key,
        garbled,
        st.just(real + b"\x00" * 5000),
        st.just(b"A" * 300_000),  # larger than the panel accepts
    )


def plausible(panel: Panel, name: str) -> st.SearchStrategy[str]:
    """Values that pass the field's own validators, so that whole forms get through now and
    then and the views behind them run (the key file field: the real key file, see files)."""
    local_part = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
    table: dict[str, st.SearchStrategy[str]] = {
        "user": st.one_of(
            st.just(panel.reg.username), st.from_regex(r"[a-z0-9]{1,32}", fullmatch=True)
        ),
        "password": st.just(panel.reg.password),
        "totp": st.from_regex(r"[0-9]{6}", fullmatch=True),
        "session": st.integers(0, 60).map(str),
        "local_part": local_part,
        "domain": st.sampled_from([DOMAIN, "example.org", "bücher.example", "xn--bcher-kva.test"]),
        "mailbox": st.one_of(st.just(panel.mailbox), local_part.map(lambda x: f"{x}@{DOMAIN}")),
        "destination": st.just(panel.mailbox),
        "alias": local_part.map(lambda x: f"{x}@{DOMAIN}"),
        "confirm": st.sampled_from(["y", "on", "1"]),
        "code": st.from_regex(r"[A-Z2-9]{5}(-[A-Z2-9]{5}){3}", fullmatch=True),
    }
    return table.get(name, st.sampled_from(panel.known()))


def browser_name(name: str) -> str:
    """A name as a browser writes it in a multipart header (HTML's form-data encoding)."""
    return name.replace("\n", "%0A").replace("\r", "%0D").replace('"', "%22")


@st.composite
def form_data(
    draw: st.DrawFn, fields: dict[str, bool], panel: Panel, token: str, multipart: bool
) -> dict[str, Any]:
    values = text_values(panel.known())
    escape = browser_name if multipart else str
    files = st.builds(
        lambda content, name: (io.BytesIO(content), escape(name)),
        keyfile_bytes(panel.reg.keyfile),
        st.one_of(st.just("my.key"), st.text(CHARS, max_size=30)),
    )
    data: dict[str, Any] = {}
    for name, is_file in fields.items():
        kind = draw(st.integers(0, 9))
        if kind == 0:
            continue  # the field left out
        if is_file and kind > 1:
            data[name] = draw(files) if multipart else draw(values)
        elif kind == 1:
            data[name] = draw(st.lists(st.one_of(plausible(panel, name), values), max_size=3))
        elif kind <= 5:
            data[name] = draw(plausible(panel, name))
        else:
            data[name] = draw(values)
    for _ in range(draw(st.integers(0, 3))):
        extra = draw(st.one_of(st.text(CHARS, min_size=1, max_size=20), st.sampled_from(NASTY)))
        data[escape(extra)] = draw(values)
    choice = draw(st.integers(0, 19))
    if choice == 0:
        data.pop("csrf_token", None)
    elif choice == 1:
        data["csrf_token"] = draw(values)
    else:
        data["csrf_token"] = token
    return data


def shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= REPORT_LIMIT else text[:REPORT_LIMIT] + f"... ({len(text)} chars)"


def send(panel: Panel, method: str, path: str, what: str, **kwargs: Any) -> TestResponse:
    """Send one request; fail, naming the route and the input, on a 5xx or an exception."""
    builder = EnvironBuilder(path=path, method=method, base_url=BASE, **kwargs)
    try:
        request = builder.get_request()
    except Exception:  # an input the test client cannot even encode: not the panel's concern
        reject()
    finally:
        builder.close()
    before = len(panel.errors.messages)
    try:
        resp = panel.browser.client.open(request)
    except Exception:
        pytest.fail(f"{method} {path} raised with {what}:\n{traceback.format_exc()}")
    event(f"HTTP {resp.status_code}")  # --hypothesis-show-statistics
    assert resp.status_code < 500, f"{method} {path} answered {resp.status_code} to {what}"
    crashed = panel.errors.messages[before:]
    assert not crashed, f"{method} {path}: the backend failed ({crashed}) on {what}"
    return resp


def test_the_route_table_finds_every_form() -> None:
    assert POST_FORMS["/login"] is forms.LoginForm
    assert POST_FORMS["/settings/domains/verify"] is forms.DomainForm
    assert set(form_fields(forms.LoginForm)) == {"user", "password", "key", "totp"}
    assert form_fields(forms.ConfirmDeleteForm) == {"confirm": False, "key": True}


FUZZ = settings(
    max_examples=POST_EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ in the work tree; a failure prints its input
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("path", sorted(POST_FORMS))
@FUZZ
@given(data=st.data())
def test_a_form_never_fails_on_any_input(panel: Panel, path: str, data: st.DataObject) -> None:
    token = panel.token()
    fields = form_fields(POST_FORMS[path])
    multipart = any(fields.values()) or data.draw(st.booleans(), label="multipart")
    payload = data.draw(form_data(fields, panel, token, multipart), label="form")
    content_type = "multipart/form-data" if multipart else "application/x-www-form-urlencoded"
    send(panel, "POST", path, f"form {shown(payload)}", data=payload, content_type=content_type)


@pytest.mark.parametrize("path", ["/login", "/settings/mailboxes", "/settings/account/delete"])
@FUZZ
@given(body=st.binary(max_size=2000), multipart=st.booleans())
def test_a_form_never_fails_on_a_malformed_body(
    panel: Panel, path: str, body: bytes, multipart: bool
) -> None:
    token = panel.token()
    if multipart:
        content_type = "multipart/form-data; boundary=xYzZY"
        body = b"--xYzZY\r\n" + body
    else:
        content_type = "application/x-www-form-urlencoded"
        body = b"csrf_token=" + token.encode() + b"&" + body
    send(panel, "POST", path, f"body {shown(body)}", data=body, content_type=content_type)


def query_strings(known: list[str]) -> st.SearchStrategy[Any]:
    values = text_values(known)
    return st.one_of(
        st.dictionaries(st.one_of(st.sampled_from(["account", "page", "next"]), values), values),
        st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=300),
        st.binary(max_size=200).map(lambda b: "".join(f"%{x:02X}" for x in b)),
    )


@settings(FUZZ, max_examples=GET_EXAMPLES)
@given(data=st.data())
def test_a_page_never_fails_on_any_query_string(panel: Panel, data: st.DataObject) -> None:
    panel.token()  # logged in
    path = data.draw(st.sampled_from(routes(panel.app, "GET")), label="route")
    if "<" in path:  # /static/<path:filename>
        names = sorted(os.listdir(panel.app.static_folder or "."))
        name = data.draw(st.one_of(st.sampled_from(names), st.text(CHARS, max_size=40)))
        path = re.sub(r"<[^>]+>", lambda _m: name, path)
    query = data.draw(query_strings(panel.known()), label="query")
    send(panel, "GET", path, f"query {shown(query)}", query_string=query)
