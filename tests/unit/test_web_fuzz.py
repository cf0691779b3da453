"""Fuzz every form of the panel, and the query strings of its pages: whatever a browser (or
anyone else) sends, the answer is never a 5xx, no exception escapes a view, and the backend
behind the panel never fails on what the panel passes on.

One logged-in user with the mailbox alice@ddmail.test, so that the mailbox forms reach the
backend. Each field gets, besides hostile values, values that pass its own validators (drawn
from its Regexp and Length) and the user's real name, password, key file and mailbox, so whole
forms get through now and then and the views behind them run too. The fuzzer may thereby log
itself out, change its password or key file, or delete its account: the fixture then logs in
again, or registers a new user.

`--hypothesis-show-statistics` shows the answers each route gave.
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
from wtforms.validators import Length, Regexp

from ddmail_web import forms
from ddmail_web.app import create_app
from tests.services import running_services
from tests.webclient import Browser, Registered, codes, csrf

pytestmark = pytest.mark.postgres

DOMAIN = "ddmail.test"
BASE = "https://localhost"
POST_EXAMPLES = 20  # per POST route
BODY_EXAMPLES = 20  # per route in the malformed-body test
GET_EXAMPLES = 120  # over all GET routes
REPORT_LIMIT = 1500  # characters of an input shown in a failure
ON_POSTGRES = os.environ.get("DDMAIL_TEST_DB") == "postgresql"

# Bugs found by this fuzzer and not fixed yet: (route or "" for any, text of the exception).
# The fuzzer passes over them so that it keeps looking for new ones; each has its own strict
# xfail test below, which fails once the bug is fixed: then remove both.
KNOWN_BUGS: list[tuple[str, str]] = []


# -- the panel's forms -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    is_file: bool
    patterns: tuple[re.Pattern[str], ...]  # its Regexp validators
    max_length: int | None  # its Length validator


def form_of(view: Any) -> type[FlaskForm]:
    """The form a view reads: the first FlaskForm class its source instantiates."""
    view = inspect.unwrap(view)  # through the access decorator (functools.wraps)
    for match in re.finditer(r"\b([A-Z][A-Za-z]*Form)\(", inspect.getsource(view)):
        found = view.__globals__.get(match.group(1))
        if isinstance(found, type) and issubclass(found, FlaskForm):
            return found
    raise AssertionError(f"{view.__qualname__} instantiates no FlaskForm that form_of can see")


def post_forms(app: Flask) -> dict[str, type[FlaskForm]]:
    """Every POST route and the form its view reads."""
    return {
        rule.rule: form_of(app.view_functions[rule.endpoint])
        for rule in app.url_map.iter_rules()
        if "POST" in (rule.methods or set())
    }


def form_fields(form: type[FlaskForm]) -> list[Field]:
    """The form's fields, the CSRF token aside."""
    found = []
    for name in sorted(dir(form)):
        unbound = getattr(form, name, None)
        if not isinstance(unbound, UnboundField) or name == "csrf_token":
            continue
        validators = unbound.kwargs.get("validators") or []
        lengths = [v.max for v in validators if isinstance(v, Length) and v.max >= 0]
        found.append(
            Field(
                name,
                issubclass(unbound.field_class, FileField),
                tuple(v.regex for v in validators if isinstance(v, Regexp)),
                min(lengths) if lengths else None,
            )
        )
    return found


def routes(app: Flask, method: str) -> list[str]:
    return sorted(
        rule.rule for rule in app.url_map.iter_rules() if method in (rule.methods or set())
    )


POST_FORMS = post_forms(create_app())


# -- the running panel -------------------------------------------------------------------------


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
            app = create_app(svc.cfg)
            app.config["PROPAGATE_EXCEPTIONS"] = True  # an exception reaches the test
            state = Panel(app, Browser(app), Registered("", "", "", b""), "", errors)
            state.start_user()
            yield state
    finally:
        api_log.removeHandler(errors)


# -- values ------------------------------------------------------------------------------------

NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "\n",
    "\t",
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
    "\x7f\x1b[2J",
    "é",
    "straße.test",
    "xn--nxasmq6b.test",
    "xn--",
    "\u2603@ddmail.test",
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
    "2147483648",
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
CHARS = st.characters(codec="utf-8")  # no lone surrogates: a form is sent as UTF-8


def text_values(known: list[str]) -> st.SearchStrategy[str]:
    """Hostile and random text: NUL, CR/LF, markup, SQL, unicode, up to 5000 characters."""
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


def plausible(panel: Panel, field: Field) -> st.SearchStrategy[str]:
    """Values that pass the field's own validators (and a few that name real things)."""
    local_part = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
    real: dict[str, st.SearchStrategy[str]] = {
        "user": st.just(panel.reg.username),
        "password": st.just(panel.reg.password),
        "session": st.integers(0, 60).map(str),
        "domain": st.sampled_from([DOMAIN, "example.org", "bücher.example", "xn--bcher-kva.test"]),
        "mailbox": st.one_of(st.just(panel.mailbox), local_part.map(lambda x: f"{x}@{DOMAIN}")),
        "destination": st.just(panel.mailbox),
        "alias": local_part.map(lambda x: f"{x}@{DOMAIN}"),
        "local_part": local_part,
        "confirm": st.sampled_from(["y", "on", "1"]),
        "code": st.from_regex(r"[A-Z2-9]{5}(-[A-Z2-9]{5}){3}", fullmatch=True),
    }
    options = [real.get(field.name, st.sampled_from(panel.known()))]
    # Not fullmatch: with its ^...$ anchors a pattern then also yields a trailing newline.
    options += [st.from_regex(p) for p in field.patterns]
    options += [st.from_regex(p, fullmatch=True) for p in field.patterns]
    if field.max_length is not None:
        options.append(st.text(CHARS, min_size=1, max_size=field.max_length))
    return st.one_of(options)


def spiced(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A value with something hostile put in at some place."""
    return st.builds(
        lambda value, at, bad: value[:at] + bad + value[at:],
        values,
        st.integers(0, 80),
        st.sampled_from(NASTY),
    )


def keyfile_bytes(real: bytes) -> st.SearchStrategy[bytes]:
    wrong_key = st.binary(max_size=80).map(lambda b: b"key: " + base64.b64encode(b) + b"\n")
    garbled = st.builds(
        lambda i, b: real[:i] + b + real[i + 1 :],
        st.integers(0, max(len(real) - 1, 0)),
        st.binary(max_size=3),
    )
    too_big = st.sampled_from([real + b"\x00" * 5000, b"A" * 300_000])  # > 4 KiB, > 256 KiB
    return st.one_of(st.just(real), st.binary(max_size=5000), wrong_key, garbled, too_big)


def browser_name(name: str) -> str:
    """A name as a browser writes it in a multipart header (HTML's form-data encoding). The
    test client does not escape; a raw CR or LF there is the malformed-body test's matter."""
    return name.replace("\n", "%0A").replace("\r", "%0D").replace('"', "%22")


@st.composite
def form_data(
    draw: st.DrawFn, fields: list[Field], panel: Panel, token: str, multipart: bool
) -> dict[str, Any]:
    values = text_values(panel.known())
    escape = browser_name if multipart else str
    files = st.builds(
        lambda content, name: (io.BytesIO(content), escape(name)),
        keyfile_bytes(panel.reg.keyfile),
        st.one_of(st.just("my.key"), st.text(CHARS, max_size=30)),
    )
    data: dict[str, Any] = {}
    for field in fields:
        good = plausible(panel, field)
        kind = draw(st.integers(0, 19))
        if kind == 0:
            continue  # the field left out
        if field.is_file and kind > 2:
            data[field.name] = draw(files) if multipart else draw(values)
        elif kind <= 2:
            data[field.name] = draw(st.lists(st.one_of(good, values), max_size=3))
        elif kind <= 10:
            data[field.name] = draw(good)
        elif kind <= 14:
            data[field.name] = draw(spiced(good))
        else:
            data[field.name] = draw(values)
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


# -- sending -----------------------------------------------------------------------------------


def shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= REPORT_LIMIT else text[:REPORT_LIMIT] + f"... ({len(text)} chars)"


def send(panel: Panel, method: str, path: str, what: str, **kwargs: Any) -> TestResponse:
    """Send one request; fail, naming the route and the input, on a 5xx or an exception."""
    try:
        builder = EnvironBuilder(path=path, method=method, base_url=BASE, **kwargs)
        try:
            request = builder.get_request()
        finally:
            builder.close()
    except Exception:  # an input the test client cannot even encode: not the panel's concern
        reject()
    before = len(panel.errors.messages)
    try:
        resp = panel.browser.client.open(request)
    except Exception as exc:
        if any(route in ("", path) and text in str(exc) for route, text in KNOWN_BUGS):
            event(f"known bug: {type(exc).__name__}")
            reject()
        pytest.fail(f"{method} {path} raised with {what}:\n{traceback.format_exc()}")
    event(f"HTTP {resp.status_code}")
    assert resp.status_code < 500, f"{method} {path} answered {resp.status_code} to {what}"
    crashed = panel.errors.messages[before:]
    assert not crashed, f"{method} {path}: the backend failed ({crashed}) on {what}"
    return resp


FUZZ = settings(
    max_examples=POST_EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ in the work tree; a failure prints its input
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


# -- the tests ---------------------------------------------------------------------------------


def test_the_route_table_finds_every_form() -> None:
    assert POST_FORMS["/login"] is forms.LoginForm
    assert POST_FORMS["/settings/domains/verify"] is forms.DomainForm
    assert [f.name for f in form_fields(forms.LoginForm)] == ["key", "password", "totp", "user"]
    session = form_fields(forms.RevokeForm)[0]
    assert session.patterns and session.max_length is None and not session.is_file
    assert [(f.name, f.is_file) for f in form_fields(forms.ConfirmDeleteForm)] == [
        ("confirm", False),
        ("key", True),
    ]


@pytest.mark.parametrize("path", sorted(POST_FORMS))
@FUZZ
@given(data=st.data())
def test_a_form_never_fails_on_any_input(panel: Panel, path: str, data: st.DataObject) -> None:
    token = panel.token()
    fields = form_fields(POST_FORMS[path])
    multipart = any(f.is_file for f in fields) or data.draw(st.booleans(), label="multipart")
    payload = data.draw(form_data(fields, panel, token, multipart), label="form")
    content_type = "multipart/form-data" if multipart else "application/x-www-form-urlencoded"
    send(panel, "POST", path, f"form {shown(payload)}", data=payload, content_type=content_type)


HEADER_LINES = [
    b'Content-Disposition: form-data; name="csrf_token"',
    b'Content-Disposition: form-data; name="key"; filename="k.key"',
    b'Content-Disposition: form-data; name="user"',
    b"Content-Disposition: form-data",
    b"Content-Disposition: attachment; name=",
    b"Content-Type: application/octet-stream",
    b"Content-Transfer-Encoding: base64",
    b"X: " + b"y" * 9000,
    b"",
]


@st.composite
def multipart_bodies(draw: st.DrawFn, token: str) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        headers = draw(st.lists(st.sampled_from(HEADER_LINES) | st.binary(max_size=60), max_size=3))
        value = draw(st.sampled_from([token.encode(), b""]) | st.binary(max_size=300))
        parts.append(b"\r\n".join(headers) + b"\r\n\r\n" + value)
    body = b"".join(b"--xYzZY\r\n" + part + b"\r\n" for part in parts)
    return body + draw(st.sampled_from([b"--xYzZY--\r\n", b"--xYzZY", b""]) | st.binary())


@pytest.mark.parametrize("path", ["/login", "/settings/mailboxes", "/settings/account/delete"])
@settings(FUZZ, max_examples=BODY_EXAMPLES)
@given(data=st.data())
def test_a_form_never_fails_on_a_malformed_body(
    panel: Panel, path: str, data: st.DataObject
) -> None:
    token = panel.token()
    if data.draw(st.booleans(), label="multipart"):
        content_type = "multipart/form-data; boundary=xYzZY"
        body = data.draw(multipart_bodies(token), label="body")
    else:
        content_type = "application/x-www-form-urlencoded"
        body = b"csrf_token=" + token.encode() + b"&" + data.draw(st.binary(max_size=2000))
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


# -- bugs the fuzzer found (see KNOWN_BUGS) -----------------------------------------------------


def post_plainly(panel: Panel, path: str, **kwargs: Any) -> int:
    """The status a plain client gets (the app's own 500 page instead of an exception)."""
    panel.app.config["PROPAGATE_EXCEPTIONS"] = False
    try:
        return panel.browser.client.post(path, base_url=BASE, **kwargs).status_code
    finally:
        panel.app.config["PROPAGATE_EXCEPTIONS"] = True


def test_a_form_part_without_a_name_is_refused(panel: Panel) -> None:
    body = b"--B\r\nContent-Disposition: form-data\r\n\r\nv\r\n--B--\r\n"
    status = post_plainly(
        panel, "/login", data=body, content_type="multipart/form-data; boundary=B"
    )
    assert status == 400


def test_a_username_with_nul_is_a_failed_login(panel: Panel) -> None:
    form = {
        "csrf_token": panel.token(),
        "user": "a\x00b",
        "password": "x",
        "key": (io.BytesIO(panel.reg.keyfile), "my.key"),
    }
    status = post_plainly(panel, "/login", data=form, content_type="multipart/form-data")
    assert status in (400, 401)  # refused like any malformed login, never a 500


def test_revoking_a_session_number_beyond_32_bits_is_no_such_session(panel: Panel) -> None:
    form = {"csrf_token": panel.token(), "session": "999999999999"}
    assert post_plainly(panel, "/settings/sessions/revoke", data=form) == 302
