"""The panel with the real backend and keyhandler behind it (in-process), on the test database
with the global domain ddmail.test: shared by the panel's test files."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from ddmail_web.app import create_app
from tests.services import Services, running_services
from tests.unit.test_openpgp_keys import Gpg
from tests.webclient import Browser


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Services, Flask]]:
    from tests.stackrun import postgres_url

    with running_services(tmp_path, postgres_url()) as svc:
        yield svc, create_app(svc.cfg)


@pytest.fixture
def browser(env: tuple[Services, Flask]) -> Browser:
    return Browser(env[1])


@pytest.fixture(scope="module")
def public_key() -> Iterator[tuple[str, str]]:
    """One OpenPGP public key that can encrypt (armored), and its fingerprint."""
    with tempfile.TemporaryDirectory(prefix="ddmail-test-pgp-") as home:
        gpg = Gpg(Path(home))
        fingerprint = gpg.new("panel", "future-default", "default", "never")
        yield gpg.export("panel"), fingerprint
