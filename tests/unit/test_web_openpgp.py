"""OpenPGP key management through the panel, with the real backend and keyhandler behind it
(in-process), and the backend's API as the panel and the admin CLI see it."""

from __future__ import annotations

import io
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from ddmail_common.client import ServiceClient
from ddmail_common.db import Database
from ddmail_common.errors import ApiError
from ddmail_keyhandler.openpgp_keys import OpenPgpKeys
from tests.services import Services, db_rows, db_run
from tests.unit.test_openpgp_keys import PgpKeys, make_keys
from tests.webclient import Browser, codes

pytestmark = pytest.mark.postgres

PAGE = "/settings/openpgp"
NO_JS = re.compile(r"<script|\son[a-z]+\s*=|\sstyle\s*=", re.IGNORECASE)


@pytest.fixture(scope="module")
def keys() -> Iterator[PgpKeys]:
    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:
        yield make_keys(Path(home))


def user(app: Flask, *mailboxes: str) -> tuple[Browser, str]:
    """A logged-in browser of a new account with MAILBOXES (local parts); and the account."""
    browser = Browser(app)
    reg = browser.register_and_login()
    for local in mailboxes:
        made = browser.post("/settings/mailboxes", {"local_part": local, "domain": "ddmail.test"})
        assert "mailbox-password" in codes(made.get_data(as_text=True))
    return browser, reg.account


def upload(browser: Browser, data: bytes | str, follow: bool = True) -> TestResponse:
    raw = data.encode() if isinstance(data, str) else data
    return browser.post(
        PAGE,
        {"public_key": (io.BytesIO(raw), "key.asc")},
        content_type="multipart/form-data",
        follow_redirects=follow,
    )


def act(browser: Browser, action: str, **fields: str) -> TestResponse:
    return browser.post(f"{PAGE}/{action}", fields, token_from=PAGE, follow_redirects=True)


def alice_with_active_key(app: Flask, key: str, fingerprint: str) -> tuple[Browser, TestResponse]:
    """A logged-in browser of a new account with alice@ddmail.test, KEY uploaded and activated
    for that mailbox; and the answer to the activation."""
    browser, _ = user(app, "alice")
    upload(browser, key)
    return browser, act(browser, "activate", mailbox="alice@ddmail.test", fingerprint=fingerprint)


def key_store(svc: Services) -> OpenPgpKeys:
    """The keyhandler's OpenPGP keys, as the delivery stage reads them."""
    return OpenPgpKeys(Database(svc.cfg.db_url))


def page_of(resp: TestResponse) -> str:
    return resp.get_data(as_text=True)


def test_upload_activate_deactivate_remove(env: tuple[Services, Flask], keys: PgpKeys) -> None:
    svc, app = env
    browser, _ = user(app, "alice")
    first = browser.get(PAGE)
    assert first.status_code == 200
    assert "Delivery-time encryption uses the activated key" in page_of(first)
    assert first.headers["Cache-Control"] == "no-store"

    resp = upload(browser, keys.good)
    page = page_of(resp)
    assert resp.status_code == 200
    assert codes(page)["fingerprint"] == keys.good_fpr
    assert 'class="flash-success"' in page and "good &lt;good@example.org&gt;" in page
    assert "no mailbox" in page and "no expiry" in page
    assert not NO_JS.search(page)

    again = upload(browser, keys.good_binary)
    assert again.status_code == 200
    assert "is already in your account; nothing in it changed." in page_of(again)

    activated = act(browser, "activate", mailbox="alice@ddmail.test", fingerprint=keys.good_fpr)
    page = page_of(activated)
    assert "Mail arriving for alice@ddmail.test is now encrypted to the key" in page
    assert "Stop OpenPGP encryption" in page
    assert db_rows(svc, "SELECT address, fingerprint FROM keyhandler_openpgp_activations") == [
        ("alice@ddmail.test", keys.good_fpr)
    ]

    refused = act(browser, "remove", fingerprint=keys.good_fpr)
    assert refused.status_code == 422
    assert "This key is active on alice@ddmail.test. Deactivate it there first." in page_of(refused)

    stopped = act(browser, "deactivate", mailbox="alice@ddmail.test")
    assert "no longer encrypted with OpenPGP" in page_of(stopped)
    assert db_rows(svc, "SELECT count(*) FROM keyhandler_openpgp_activations") == [(0,)]

    removed = act(browser, "remove", fingerprint=keys.good_fpr.lower())
    assert "is removed" in page_of(removed) and "No keys yet." in page_of(removed)
    assert db_rows(svc, "SELECT count(*) FROM keyhandler_openpgp_keys") == [(0,)]

    audit = page_of(browser.get("/settings/audit"))
    for action in (
        "openpgp key uploaded",
        "openpgp activated",
        "openpgp deactivated",
        "openpgp key removed",
    ):
        assert action in audit
    assert "alice@ddmail.test " + keys.good_fpr[:4] in audit  # grouped, not masked


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("expired", "This key expired on 2020-12-3"),
        ("revoked", "This key is revoked"),
        ("sign_only", "This key cannot encrypt: it has no encryption subkey."),
        ("expired_subkey", "The encryption subkey of this key is expired or revoked."),
        ("weak", "The encryption key is too weak"),
        ("two", "This file holds 2 keys. Upload exactly one key"),
        ("secret", "This is a secret (private) key. Upload only your public key"),
    ],
)
def test_each_refused_key_is_explained_and_nothing_is_stored(
    env: tuple[Services, Flask], keys: PgpKeys, kind: str, message: str
) -> None:
    svc, app = env
    browser, _ = user(app)
    resp = upload(browser, getattr(keys, kind))
    assert resp.status_code == 422
    page = page_of(resp)
    assert message in page and 'class="flash-error"' in page
    assert 'id="fingerprint"' not in page
    assert db_rows(svc, "SELECT count(*) FROM keyhandler_openpgp_keys") == [(0,)]


def test_bad_files_are_explained(env: tuple[Services, Flask], keys: PgpKeys) -> None:
    _, app = env
    browser, _ = user(app)
    big = upload(browser, b"x" * (64 * 1024 + 1))
    assert big.status_code == 400 and "larger than 64 KiB" in page_of(big)
    empty = upload(browser, b"  \n")
    assert empty.status_code == 400 and "The key file is empty." in page_of(empty)
    junk = upload(browser, b"\x00\x01 not a key")
    assert junk.status_code == 400 and "not an OpenPGP key" in page_of(junk)
    missing = browser.post(PAGE, {}, content_type="multipart/form-data")
    assert missing.status_code == 400
    assert "Choose your OpenPGP public key file." in page_of(missing)


def test_accounts_never_see_or_touch_each_others_keys(
    env: tuple[Services, Flask], keys: PgpKeys
) -> None:
    svc, app = env
    alice, alice_account = user(app, "alice")
    bob, bob_account = user(app, "bob")
    upload(alice, keys.good)
    act(alice, "activate", mailbox="alice@ddmail.test", fingerprint=keys.good_fpr)

    bobs_page = page_of(bob.get(PAGE))
    assert keys.good_fpr not in bobs_page and "alice@ddmail.test" not in bobs_page
    # The same key in another account is its own, separate entry: nothing leaks either way.
    assert codes(page_of(upload(bob, keys.good)))["fingerprint"] == keys.good_fpr
    assert "alice@ddmail.test" not in page_of(bob.get(PAGE))

    # Bob's page offers only his mailboxes; the backend refuses another account's mailbox.
    wrong = act(bob, "activate", mailbox="alice@ddmail.test", fingerprint=keys.good_fpr)
    assert wrong.status_code == 400 and "Choose one of your mailboxes." in page_of(wrong)
    for path, body in (
        ("/v1/openpgp/activate", {"address": "alice@ddmail.test", "fingerprint": keys.good_fpr}),
        ("/v1/openpgp/deactivate", {"address": "alice@ddmail.test"}),
    ):
        with pytest.raises(ApiError) as caught:
            svc.web.call("POST", path, {"account": bob_account, **body})
        assert caught.value.status == 404
        assert caught.value.message == "No such mailbox in this account."

    # Bob removing his copy leaves Alice's key and its activation alone.
    assert "is removed" in page_of(act(bob, "remove", fingerprint=keys.good_fpr))
    assert db_rows(
        svc, "SELECT account, fingerprint FROM keyhandler_openpgp_keys ORDER BY account"
    ) == [(alice_account, keys.good_fpr)]
    with pytest.raises(ApiError) as caught:
        svc.web.call(
            "POST", "/v1/openpgp/remove", {"account": bob_account, "fingerprint": keys.good_fpr}
        )
    assert caught.value.status == 404
    assert db_rows(svc, "SELECT account FROM keyhandler_openpgp_activations") == [(alice_account,)]


def test_activating_another_key_replaces_the_mailboxs_key(
    env: tuple[Services, Flask], keys: PgpKeys
) -> None:
    svc, app = env
    browser, _ = user(app, "carol", "dave")
    upload(browser, keys.good)
    upload(browser, keys.other)
    act(browser, "activate", mailbox="carol@ddmail.test", fingerprint=keys.good_fpr)
    act(browser, "activate", mailbox="dave@ddmail.test", fingerprint=keys.good_fpr)
    page = page_of(browser.get(PAGE))
    assert "carol@ddmail.test, dave@ddmail.test" in page
    assert "(replaces its current key)" in page
    act(browser, "activate", mailbox="carol@ddmail.test", fingerprint=keys.other_fpr)
    assert db_rows(
        svc, "SELECT address, fingerprint FROM keyhandler_openpgp_activations ORDER BY address"
    ) == [("carol@ddmail.test", keys.other_fpr), ("dave@ddmail.test", keys.good_fpr)]


def test_a_failed_activation_keeps_the_choice_and_says_why(
    env: tuple[Services, Flask], keys: PgpKeys
) -> None:
    svc, app = env
    browser, _ = user(app, "erin", "frank")
    upload(browser, keys.good)
    # The key expires after the upload (simulated): activation is refused, the page says so.
    db_run(svc, "UPDATE keyhandler_openpgp_keys SET expires_at = 1600000000")
    resp = act(browser, "activate", mailbox="frank@ddmail.test", fingerprint=keys.good_fpr)
    page = page_of(resp)
    assert resp.status_code == 422
    assert "This key expired on 2020-09-13" in page
    assert "<strong>Expired:</strong>" in page
    unknown = act(browser, "activate", mailbox="frank@ddmail.test", fingerprint="AB" * 20)
    assert unknown.status_code == 404
    assert "No such OpenPGP key in this account." in page_of(unknown)
    db_run(svc, "UPDATE keyhandler_openpgp_keys SET expires_at = NULL")
    # The keyhandler no longer knows the mailbox (as if removed meanwhile): the refusal keeps
    # the chosen mailbox selected in that key's form.
    db_run(svc, "DELETE FROM keyhandler_mailbox_keys WHERE address = 'frank@ddmail.test'")
    kept = act(browser, "activate", mailbox="frank@ddmail.test", fingerprint=keys.good_fpr)
    assert kept.status_code == 404 and "No such mailbox in this account." in page_of(kept)
    assert '<option value="frank@ddmail.test" selected>' in page_of(kept)
    bad = act(browser, "activate", mailbox="frank@ddmail.test", fingerprint="not-hex")
    assert bad.status_code == 400 and "reload the page" in page_of(bad)
    not_active = act(browser, "deactivate", mailbox="erin@ddmail.test")
    assert not_active.status_code == 404
    assert "This mailbox has no active OpenPGP key." in page_of(not_active)


def test_a_removed_mailbox_frees_its_key(env: tuple[Services, Flask], keys: PgpKeys) -> None:
    svc, app = env
    browser = Browser(app)
    reg = browser.register_and_login()
    browser.post("/settings/mailboxes", {"local_part": "gina", "domain": "ddmail.test"})
    upload(browser, keys.good)
    act(browser, "activate", mailbox="gina@ddmail.test", fingerprint=keys.good_fpr)
    browser.post_with_keyfile(
        "/settings/mailboxes/remove",
        {"mailbox": "gina@ddmail.test", "confirm": "y"},
        reg.keyfile,
        token_from="/settings/mailboxes",
        follow_redirects=True,
    )
    page = page_of(browser.get(PAGE))
    assert "gina@ddmail.test" not in page and "no mailbox" in page
    assert "is removed" in page_of(act(browser, "remove", fingerprint=keys.good_fpr))
    assert db_rows(svc, "SELECT count(*) FROM keyhandler_openpgp_activations") == [(0,)]


def test_every_openpgp_post_needs_the_csrf_token(env: tuple[Services, Flask]) -> None:
    _, app = env
    browser, _ = user(app)
    for path in (PAGE, f"{PAGE}/activate", f"{PAGE}/deactivate", f"{PAGE}/remove"):
        resp = browser.client.post(path, data={}, base_url="https://localhost")
        assert resp.status_code == 400 and "security token" in page_of(resp), path


def test_openpgp_pages_need_a_login(env: tuple[Services, Flask]) -> None:
    _, app = env
    anonymous = Browser(app)
    resp = anonymous.get(PAGE)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PAGE):
            assert app.view_functions[rule.endpoint]._ddmail_access == "authenticated"


def test_keyhandler_down_is_a_clear_message(env: tuple[Services, Flask], keys: PgpKeys) -> None:
    svc, app = env
    browser, _ = user(app)
    svc.stop_keyhandler()
    resp = upload(browser, keys.good)
    assert "not reachable right now" in page_of(resp)
    assert resp.status_code < 500
    assert db_rows(svc, "SELECT count(*) FROM keyhandler_openpgp_keys") == [(0,)]


# -- the APIs behind the panel --------------------------------------------------------------


def test_the_backend_api_answers_with_real_statuses(
    env: tuple[Services, Flask], keys: PgpKeys
) -> None:
    svc, _ = env
    account = "acct-api"
    made = svc.web.call("POST", "/v1/openpgp/keys", {"account": account, "key": keys.good})
    assert made["fingerprint"] == keys.good_fpr and made["uids"] == ["good <good@example.org>"]
    assert made["expires_at"] is None and made["key_version"] == 4
    listed = svc.admin.call("GET", f"/v1/openpgp/keys?account={account}")["keys"]
    assert [k["fingerprint"] for k in listed] == [keys.good_fpr]
    assert "public_key" not in listed[0]
    for body, status, code in (
        ({"account": account, "key": keys.sign_only}, 422, "cannot_encrypt"),
        ({"account": account, "key": "nonsense!"}, 400, "invalid_key"),
        ({"account": account}, 400, "bad_request"),
    ):
        with pytest.raises(ApiError) as caught:
            svc.web.call("POST", "/v1/openpgp/keys", body)
        assert (caught.value.status, caught.value.code) == (status, code)
    with pytest.raises(ApiError) as caught:
        svc.web.call("POST", "/v1/openpgp/remove", {"account": account, "fingerprint": "12"})
    assert (caught.value.status, caught.value.code) == (400, "invalid_fingerprint")


def test_a_retried_upload_gets_the_first_answer(env: tuple[Services, Flask], keys: PgpKeys) -> None:
    svc, _ = env
    body = {"account": "acct-retry", "key": keys.other}
    first = svc.web.call("POST", "/v1/openpgp/keys", body, idempotency_key="retry-0001")
    again = svc.web.call("POST", "/v1/openpgp/keys", body, idempotency_key="retry-0001")
    assert first == again and first["fingerprint"] == keys.other_fpr
    assert first["updated"] is False
    # Another request with the same key is an update that changes nothing.
    third = svc.web.call("POST", "/v1/openpgp/keys", body, idempotency_key="retry-0002")
    assert third["updated"] is True and third["changed"] is False


def test_an_account_keeps_a_bounded_number_of_keys(
    env: tuple[Services, Flask], keys: PgpKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, _ = env
    monkeypatch.setattr("ddmail_keyhandler.openpgp_keys.MAX_KEYS_PER_ACCOUNT", 1)
    svc.web.call("POST", "/v1/openpgp/keys", {"account": "acct-cap", "key": keys.good})
    with pytest.raises(ApiError) as caught:
        svc.web.call("POST", "/v1/openpgp/keys", {"account": "acct-cap", "key": keys.other})
    assert (caught.value.status, caught.value.code) == (422, "too_many_keys")
    assert "at most 1 OpenPGP keys" in caught.value.message


def test_only_the_backend_may_call_the_keyhandler(env: tuple[Services, Flask]) -> None:
    svc, _ = env
    as_web = ServiceClient("web", svc.cfg.secret("web"), svc.cfg.keyhandler_socket, "key")
    with pytest.raises(ApiError) as caught:
        as_web.call("GET", "/v1/openpgp/keys?account=x")
    assert caught.value.status == 401
    as_backend = ServiceClient(
        "backend", svc.cfg.secret("backend"), svc.cfg.keyhandler_socket, "key"
    )
    assert as_backend.call("GET", "/v1/openpgp/keys?account=x") == {"keys": []}
    assert as_backend.call("POST", "/v1/openpgp/purge", {"account": "x"}) == {"removed": 0}


def stored_key(svc: Services, fingerprint: str) -> tuple[object, ...]:
    rows = db_rows(
        svc, "SELECT fingerprint, expires_at, public_key, unusable FROM keyhandler_openpgp_keys"
    )
    [row] = [r[1:] for r in rows if r[0] == fingerprint]
    return row


def test_a_refreshed_key_uploaded_again_is_updated_and_stays_active(
    env: tuple[Services, Flask], keys: PgpKeys
) -> None:
    svc, app = env
    browser, _ = alice_with_active_key(app, keys.refreshable, keys.refreshable_fpr)
    old_expiry, old_key, _ = stored_key(svc, keys.refreshable_fpr)
    assert "Expires soon" in page_of(browser.get(PAGE))
    store = key_store(svc)
    now = int(time.time())
    assert [e for _, _, e in store.expiring(14 * 86400, now)] == [old_expiry]
    store.mark_warned("alice@ddmail.test", int(str(old_expiry)))  # the two-week notice went out

    resp = upload(browser, keys.refreshed)
    page = page_of(resp)
    assert resp.status_code == 200
    assert "Key updated:" in page and "it stays active for alice@ddmail.test" in page
    new_expiry, new_key, unusable = stored_key(svc, keys.refreshable_fpr)
    assert isinstance(new_expiry, int) and isinstance(old_expiry, int)
    assert new_expiry - old_expiry > 600 * 86400 and unusable is None and new_key != old_key
    assert app.jinja_env.filters["utc"](new_expiry) in page  # the new expiry is shown
    assert "Expires soon" not in page
    assert db_rows(svc, "SELECT address, fingerprint FROM keyhandler_openpgp_activations") == [
        ("alice@ddmail.test", keys.refreshable_fpr)
    ]
    # The delivery stage reads the updated key; the notice is due again only for the new
    # expiry, when that comes near.
    assert store.active_key("alice@ddmail.test") == new_key
    assert store.expiring(14 * 86400, now) == []
    assert [e for _, _, e in store.expiring(3 * 365 * 86400, now)] == [new_expiry]
    assert "openpgp key updated" in page_of(browser.get("/settings/audit"))


def test_a_revocation_uploaded_later_stops_the_key_being_used(
    env: tuple[Services, Flask], keys: PgpKeys
) -> None:
    from ddmail_keyhandler.pgpmime import EncryptionError, encrypt_message

    svc, app = env
    fingerprint = keys.revoked_fpr
    browser, _ = alice_with_active_key(app, keys.revoked_before, fingerprint)
    page = page_of(upload(browser, keys.revoked))
    assert "Key updated:" in page and "can no longer encrypt (the key is revoked)" in page
    assert "Mail for alice@ddmail.test is held back" in page
    assert stored_key(svc, fingerprint)[2] == "the key is revoked"
    # Still named for the mailbox, so its mail is held back rather than stored in plaintext.
    active = key_store(svc).active_key("alice@ddmail.test")
    assert active is not None
    with pytest.raises(EncryptionError, match="revoked"):
        encrypt_message(b"Subject: s\r\n\r\nbody\r\n", active.encode())
    # It cannot be activated anywhere any more.
    answer = act(browser, "activate", mailbox="alice@ddmail.test", fingerprint=fingerprint)
    assert answer.status_code == 422 and "cannot encrypt any more" in page_of(answer)


def wkd_url(address: str) -> str:
    from ddmail_keyhandler.wkd import wkd_hash

    local, _, domain = address.partition("@")
    return f"/.well-known/openpgpkey/{domain}/hu/{wkd_hash(local)}?l={local}"


def test_wkd_publishes_only_the_user_id_of_the_mailbox(
    env: tuple[Services, Flask], keys: PgpKeys
) -> None:
    import gnupg

    _, app = env
    browser, activated = alice_with_active_key(app, keys.two_uids, keys.two_uids_fpr)
    page = page_of(activated)
    assert "Alice Elsewhere" in page  # the key page shows all its user IDs ...
    assert (  # ... and says which one the directory publishes
        "alice@ddmail.test: published with only the user ID "
        "“Alice Real &lt;alice@ddmail.test&gt;”" in page
    )
    assert 'id="wkd-explained"' in page
    served = browser.get(wkd_url("alice@ddmail.test"))
    assert served.status_code == 200
    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:
        gpg = gnupg.GPG(gnupghome=home, options=["--no-autostart"])
        assert gpg.import_keys(served.get_data()).fingerprints == [keys.two_uids_fpr]
        [listed] = gpg.list_keys()
    assert listed["uids"] == ["Alice Real <alice@ddmail.test>"]
    assert "E" in listed["cap"]  # the encryption subkey is published with it


def test_wkd_publishes_nothing_for_a_key_without_the_mailboxs_address(
    env: tuple[Services, Flask], keys: PgpKeys
) -> None:
    _, app = env
    browser, activated = alice_with_active_key(app, keys.good, keys.good_fpr)
    page = page_of(activated)
    assert "alice@ddmail.test: not published (the key has no user ID with this address)" in page
    assert browser.get(wkd_url("alice@ddmail.test")).status_code == 404
