"""Login and registration under abuse: floods of failures must stop nobody, argon2 work stays
bounded, one-time codes cannot be guessed without limit."""

from __future__ import annotations

import base64
import dataclasses
import multiprocessing
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from flask import Flask

from ddmail_web import totp
from ddmail_web.workslots import Busy, WorkSlots
from tests.services import Services, db_rows
from tests.webclient import Browser, Registered, codes, freeze_time

pytestmark = pytest.mark.postgres

JUNK_KEYFILE = b"key: " + b"B" * 88 + b"\n"


@contextmanager
def count_argon2(app: Flask) -> Iterator[mock.Mock]:
    """Wrap the panel's argon2 hasher so a test can count verify runs (they still run)."""
    passwords = app.extensions["ddmail_web"].passwords
    spy = mock.Mock(wraps=passwords._hasher)
    with mock.patch.object(passwords, "_hasher", spy):
        yield spy.verify


def test_a_flood_of_failed_logins_never_stops_a_correct_login_and_costs_no_argon2(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    app = env[1]
    reg = browser.register()
    attacker = Browser(app)
    unknown = dataclasses.replace(reg, username="nosuchuser00")
    with count_argon2(app) as verify:
        # More than the old global guard allowed per minute (300), half with made-up users,
        # half with the real user and a junk key file.
        for i in range(320):
            resp = attacker.login(unknown if i % 2 else reg, password="guess", keyfile=JUNK_KEYFILE)
            assert resp.status_code == 401
        assert verify.call_count == 0
        assert browser.login(reg).status_code == 302
        assert verify.call_count == 1


def test_wrong_one_time_codes_count_toward_the_users_lock_out(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    reg, secret = logged_in_with_totp(browser)
    limit = env[0].cfg.web.login_failures_per_user
    wrong = a_wrong_code(secret)
    guesser = Browser(browser.app)  # has the password and the key file, not the phone
    for _ in range(limit):
        assert guesser.login(reg, totp=wrong).status_code == 401
    right = totp.code_at(secret, int(time.time()))
    assert Browser(browser.app).login(reg, totp=right).status_code == 401  # locked for a while


def test_argon2_checks_per_user_are_bounded_even_when_they_succeed(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    app = env[1]
    reg = browser.register()
    budget = env[0].cfg.web.logins_per_user
    with count_argon2(app) as verify:
        statuses = [Browser(app).login(reg).status_code for _ in range(budget + 5)]
    assert statuses[:budget] == [302] * budget and set(statuses[budget:]) == {401}
    assert verify.call_count == budget


def _hold(slots: WorkSlots, seconds: float, log: Path, name: str) -> None:
    with slots.slot(30, priority=True):
        with log.open("a") as fh:
            fh.write(f"{name} start {time.monotonic()}\n")
        time.sleep(seconds)
        with log.open("a") as fh:
            fh.write(f"{name} end {time.monotonic()}\n")


def _max_overlap(log: Path) -> int:
    events = sorted(
        (float(t), 1 if kind == "start" else -1)
        for _, kind, t in (line.split() for line in log.read_text().splitlines())
    )
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_argon2_work_across_worker_processes_never_exceeds_the_slots(tmp_path: Path) -> None:
    slots = WorkSlots(2)
    log = tmp_path / "log"
    fork = multiprocessing.get_context("fork")  # gunicorn forks its workers the same way
    procs = [fork.Process(target=_hold, args=(slots, 0.1, log, f"p{i}")) for i in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert len(log.read_text().splitlines()) == 12
    assert _max_overlap(log) == 2


def test_a_worker_that_dies_holding_a_slot_does_not_leak_it(tmp_path: Path) -> None:
    slots = WorkSlots(1)
    fork = multiprocessing.get_context("fork")
    proc = fork.Process(target=_hold, args=(slots, 60, tmp_path / "log", "killed"))
    proc.start()
    while not (tmp_path / "log").exists():
        time.sleep(0.01)
    proc.kill()
    proc.join(10)
    with slots.slot(5, priority=True):
        pass


def test_registrations_are_shed_while_a_proven_login_waits_for_argon2() -> None:
    slots = WorkSlots(1)
    held, release = threading.Event(), threading.Event()
    got_it: list[bool] = []

    def holder() -> None:
        with slots.slot(1, priority=True):
            held.set()
            release.wait(10)

    def login() -> None:
        with slots.slot(10, priority=True):
            got_it.append(True)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    held.wait(5)
    threads.append(threading.Thread(target=login))
    threads[1].start()
    time.sleep(0.1)  # the login is now waiting
    started = time.monotonic()
    with pytest.raises(Busy), slots.slot(5, priority=False):
        pass
    assert time.monotonic() - started < 1  # shed at once, not after waiting
    release.set()
    for thread in threads:
        thread.join(10)
    assert got_it == [True]


def test_a_busy_server_sheds_a_registration_with_a_clear_page_and_creates_nothing(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    slots: WorkSlots = env[1].extensions["ddmail_web"].passwords.slots
    with slots.slot(1, priority=True):
        resp = browser.post("/register")
    assert resp.status_code == 503
    assert "nothing was changed" in resp.get_data(as_text=True)
    assert db_rows(env[0], "SELECT count(*) FROM web_accounts") == [(0,)]


def post_totp(browser: Browser, code: str, keyfile: bytes) -> str:
    resp = browser.post_with_keyfile("/settings/totp", {"totp": code}, keyfile)
    follow = browser.get("/settings/totp") if resp.status_code == 302 else resp
    return follow.get_data(as_text=True)


def offered_secret(browser: Browser) -> str:
    """The TOTP secret the settings page offers the logged-in BROWSER."""
    return codes(browser.get("/settings/totp").get_data(as_text=True))["totp-secret"]


def turn_totp_on(browser: Browser, reg: Registered) -> str:
    """Turn TOTP on for the logged-in BROWSER; return the secret."""
    secret = offered_secret(browser)
    page = post_totp(browser, totp.code_at(secret, int(time.time())), reg.keyfile)
    assert "One-time codes are <strong>on</strong>" in page
    return secret


def logged_in_with_totp(browser: Browser) -> tuple[Registered, str]:
    """A new account logged in in BROWSER, with TOTP on; and its secret."""
    reg = browser.register_and_login()
    return reg, turn_totp_on(browser, reg)


def a_wrong_code(secret: str) -> str:
    now = int(time.time())
    good = {totp.code_at(secret, now + d * 30) for d in (-1, 0, 1, 2)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444") if c not in good)


def test_turning_totp_on_or_off_needs_the_key_file(
    browser: Browser,
) -> None:
    reg = browser.register_and_login()
    secret = offered_secret(browser)
    now = int(time.time())
    page = post_totp(browser, totp.code_at(secret, now), JUNK_KEYFILE)
    assert "That is not your key file." in page and "<strong>on</strong>" not in page
    secret = turn_totp_on(browser, reg)
    code = totp.code_at(secret, int(time.time()) + 30)
    with freeze_time(int(time.time()) + 30):
        page = post_totp(browser, code, JUNK_KEYFILE)
        assert "That is not your key file." in page and "<strong>on</strong>" in page
        page = post_totp(browser, code, reg.keyfile)
    assert "One-time codes are off." in page


def test_guessing_the_code_on_the_totp_off_form_is_limited_per_user(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    reg, secret = logged_in_with_totp(browser)
    wrong = a_wrong_code(secret)
    for _ in range(env[0].cfg.web.login_failures_per_user):
        assert "That code is not right" in post_totp(browser, wrong, reg.keyfile)
    right = totp.code_at(secret, int(time.time()))
    page = post_totp(browser, right, reg.keyfile)
    assert "That code is not right" in page and "<strong>on</strong>" in page


def test_the_pending_totp_secret_is_never_in_a_cookie_and_ends_with_the_session(
    env: tuple[Services, Flask],
    browser: Browser,
) -> None:
    reg = browser.register_and_login()
    secret = offered_secret(browser)
    assert offered_secret(browser) == secret
    jar = " ".join(f"{c.key}={c.value}" for c in browser.client._cookies.values())
    assert secret not in jar
    for cookie in browser.client._cookies.values():
        if "csrf" in cookie.key:  # Flask's cookie is signed, not encrypted: look inside
            payload = cookie.value.lstrip(".").split(".")[0]
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            assert secret.encode() not in (zlib.decompress(raw) if cookie.value[0] == "." else raw)
    assert secret not in repr(db_rows(env[0], "SELECT * FROM web_sessions"))
    browser.post("/logout", token_from="/settings")
    # The next person at this browser logs in (the same account, say) and gets a new secret.
    browser.login(reg)
    again = offered_secret(browser)
    assert again != secret
    # A new login in the same browser also starts afresh.
    browser.login(reg)
    assert offered_secret(browser) != again


def test_a_secret_left_in_the_cookie_by_an_older_version_is_dropped_at_login_and_logout(
    browser: Browser,
) -> None:
    reg = browser.register()
    for step in ("login", "logout"):
        with browser.client.session_transaction(base_url="https://localhost") as cookie:
            cookie["totp_pending"] = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        if step == "login":
            assert browser.login(reg).status_code == 302
        else:
            browser.post("/logout", token_from="/settings")
        with browser.client.session_transaction(base_url="https://localhost") as cookie:
            assert "totp_pending" not in cookie
        page = browser.get("/settings/totp").get_data(as_text=True)
        assert "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP" not in page
