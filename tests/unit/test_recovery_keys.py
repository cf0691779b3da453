"""The keyhandler's account recovery keys under concurrent registrations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ddmail_common.config import Argon2Settings
from ddmail_common.db import Database
from ddmail_common.errors import ApiError
from ddmail_common.migrate import upgrade
from ddmail_keyhandler.keys import KeyStore
from tests.stackrun import postgres_url

pytestmark = pytest.mark.postgres
FAST = Argon2Settings(memory_kib=64, time_cost=1, parallelism=1)


def test_concurrent_registrations_each_get_one_recovery_key(tmp_path: Path) -> None:
    url = postgres_url() or f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url)
    store = KeyStore(Database(url), FAST)
    accounts = [f"acct{i % 6}" for i in range(18)]  # each account id three times at once
    start = threading.Barrier(len(accounts))
    outcomes: dict[str, list[str]] = {a: [] for a in accounts}

    def register(account: str) -> None:
        start.wait()
        try:
            store.set_recovery_key(account, b"s" * 32)
            outcomes[account].append("made")
        except ApiError as exc:
            outcomes[account].append(f"{exc.status} {exc.code}")

    workers = [threading.Thread(target=register, args=(a,)) for a in accounts]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    for account, seen in outcomes.items():
        assert sorted(seen) == ["409 recovery_key_exists"] * 2 + ["made"], (account, seen)
