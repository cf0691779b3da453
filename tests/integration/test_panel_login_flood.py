"""Login floods against the running stack's panel, over HTTPS through nginx, as an outsider
would send them: they must never stop the owner's correct login."""

from __future__ import annotations

import http.client
import re
import secrets
import time
from urllib.parse import urlencode, urlsplit

from tests.stackrun import RunningStack
from tests.webclient import codes, csrf

JUNK_KEYFILE = b"key: " + b"B" * 88 + b"\n"


class Panel:
    """One browser: a kept-alive TLS connection and its cookies."""

    def __init__(self, stack: RunningStack) -> None:
        url = urlsplit(stack.info["web_url"])
        self.conn = http.client.HTTPSConnection(url.hostname or "", url.port, context=stack.tls())
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = ""
    ) -> tuple[int, bytes]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if content_type:
            headers["Content-Type"] = content_type
        self.conn.request(method, path, body=body or None, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        for header in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header or "expires=Thu, 01 Jan 1970" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return resp.status, data

    def form(self, path: str, fields: dict[str, str], token_from: str) -> tuple[int, bytes]:
        token = csrf(self.request("GET", token_from)[1].decode())
        body = urlencode({"csrf_token": token, **fields}).encode()
        return self.request("POST", path, body, "application/x-www-form-urlencoded")

    def login(self, user: str, password: str, keyfile: bytes, token: str) -> int:
        boundary = "b" + secrets.token_hex(8)
        parts = [
            (f'name="{name}"', value.encode())
            for name, value in (("csrf_token", token), ("user", user), ("password", password))
        ]
        parts.append(('name="key"; filename="my.key"', keyfile))
        body = b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; {disp}\r\n\r\n".encode()
            + value
            + b"\r\n"
            for disp, value in parts
        )
        body += f"--{boundary}--\r\n".encode()
        kind = f"multipart/form-data; boundary={boundary}"
        status, _ = self.request("POST", "/login", body, kind)
        return status

    def login_token(self) -> str:
        return csrf(self.request("GET", "/login")[1].decode())


def test_a_flood_of_failed_logins_never_locks_out_a_correct_login_through_the_stack(
    stack: RunningStack,
) -> None:
    owner = Panel(stack)
    status, page = owner.form("/register", {}, token_from="/register")
    assert status == 200, status
    found = codes(page.decode())
    token = csrf(page.decode())
    status, keyfile = owner.request(
        "POST",
        "/register/keyfile",
        urlencode({"csrf_token": token}).encode(),
        "application/x-www-form-urlencoded",
    )
    assert status == 200 and b"key: " in keyfile
    attacker = Panel(stack)
    token = attacker.login_token()
    started = time.monotonic()
    statuses = set()
    # What tripped the old global guard (300 failures a minute): ~320 in a few seconds, made-up
    # users and the real user with a junk key file.
    for i in range(320):
        user = found["username"] if i % 2 else f"nosuch{i:06d}"
        statuses.add(attacker.login(user, "guess", JUNK_KEYFILE, token))
    assert statuses == {401}
    assert time.monotonic() - started < 120
    status = owner.login(found["username"], found["password"], keyfile, owner.login_token())
    assert status == 302
    status, settings = owner.request("GET", "/settings")
    assert status == 200
    assert re.search(rf"Logged in as user: {found['username']}", settings.decode())
