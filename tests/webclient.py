"""Drive the panel through Flask's test client over https, like a browser without JavaScript;
or as nginx's loopback listener for Tor and I2P hands it on (plain HTTP, the onion name)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.panelforms import Registered, codes, csrf

__all__ = ["Browser", "Registered", "codes", "csrf", "freeze_time", "keyfile_upload"]


def keyfile_upload(data: bytes) -> tuple[io.BytesIO, str]:
    """DATA as the file of a form's key file field."""
    return (io.BytesIO(data), "my.key")


@contextmanager
def freeze_time(at: int) -> Iterator[None]:
    """The panel's TOTP views see the clock at AT."""
    with mock.patch("ddmail_web.totp_views.time.time", return_value=at):
        yield


class Browser:
    def __init__(self, app: Flask, onion: str | None = None) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.base_url, self.headers = "https://localhost", {"X-Forwarded-Proto": "https"}
        if onion is not None:
            self.base_url, self.headers = f"http://{onion}", {"X-Forwarded-Proto": "http"}

    def get(self, path: str) -> TestResponse:
        return self.client.get(path, base_url=self.base_url, headers=self.headers)

    def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        token_from: str | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        """POST a form; the CSRF token is taken from the page at TOKEN_FROM (default: PATH)."""
        data = dict(data or {})
        if "csrf_token" not in data:
            data["csrf_token"] = csrf(self.get(token_from or path).get_data(as_text=True))
        return self.client.post(
            path, data=data, base_url=self.base_url, headers=self.headers, **kwargs
        )

    def post_with_keyfile(
        self,
        path: str,
        data: dict[str, Any],
        keyfile: bytes,
        token_from: str | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        """POST a form with KEYFILE in its key field, as every irreversible action needs."""
        return self.post(
            path,
            {**data, "key": keyfile_upload(keyfile)},
            token_from,
            content_type="multipart/form-data",
            **kwargs,
        )

    def download_keyfile(self, page: str) -> TestResponse:
        """The one-time download of the key file offered on PAGE (a new account or user)."""
        return self.post("/register/keyfile", {"csrf_token": csrf(page)})

    def register(self) -> Registered:
        page = self.post("/register").get_data(as_text=True)
        found = codes(page)
        keyfile = self.download_keyfile(page)
        assert keyfile.status_code == 200, keyfile.status_code
        return Registered(found["account"], found["username"], found["password"], keyfile.data)

    def register_and_login(self) -> Registered:
        """A new account, logged in in this browser."""
        reg = self.register()
        assert self.login(reg).status_code == 302
        return reg

    def login(
        self,
        reg: Registered,
        password: str | None = None,
        keyfile: bytes | None = None,
        totp: str = "",
    ) -> TestResponse:
        return self.post(
            "/login",
            {
                "user": reg.username,
                "password": password or reg.password,
                "totp": totp,
                "key": keyfile_upload(reg.keyfile if keyfile is None else keyfile),
            },
            content_type="multipart/form-data",
        )
