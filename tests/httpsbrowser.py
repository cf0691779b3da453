"""A browser without JavaScript for the panel behind the stack's nginx: HTTPS (or plain HTTP, as
Tor and I2P forward it, with the onion or I2P name as Host), cookies, forms (urlencoded or
multipart), no redirects followed. For tests through the real stack."""

from __future__ import annotations

import http.client
import ssl
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from tests.panelforms import Registered, codes, csrf


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _multipart(fields: dict[str, str | tuple[bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            data, filename = value
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream"
            )
        else:
            data, head = value.encode(), f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class HttpsBrowser:
    def __init__(
        self, base_url: str, tls: ssl.SSLContext | None, host_header: str | None = None
    ) -> None:
        url = urlsplit(base_url)
        self.host, self.port, self.tls = url.hostname or "", url.port, tls
        self.host_header = host_header
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []  # every Set-Cookie header received, in order

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> Answer:
        headers = {"Host": self.host_header} if self.host_header else {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if content_type:
            headers["Content-Type"] = content_type
        conn = (
            http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=60)
            if self.tls is not None
            else http.client.HTTPConnection(self.host, self.port, timeout=60)
        )
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            answer = Answer(resp.status, resp.headers, resp.read())
        finally:
            conn.close()
        for header in answer.headers.get_all("Set-Cookie") or []:
            self.set_cookies.append(header)
            pair, _, attributes = header.partition(";")
            name, _, value = pair.strip().partition("=")
            if not value or "max-age=0" in attributes.lower().replace(" ", ""):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(
        self,
        path: str,
        fields: dict[str, str | tuple[bytes, str]] | None = None,
        token_from: str | None = None,
        multipart: bool = False,
    ) -> Answer:
        """POST a form with the CSRF token of the page at TOKEN_FROM (default: PATH)."""
        form = dict(fields or {})
        if "csrf_token" not in form:
            form["csrf_token"] = csrf(self.get(token_from or path).text)
        if multipart or any(isinstance(v, tuple) for v in form.values()):
            body, content_type = _multipart(form)
        else:
            plain = {k: v for k, v in form.items() if isinstance(v, str)}
            body, content_type = urlencode(plain).encode(), "application/x-www-form-urlencoded"
        return self.request("POST", path, body, content_type)

    def register(self) -> Registered:
        page = self.post("/register").text
        found = codes(page)
        keyfile = self.post("/register/keyfile", {"csrf_token": csrf(page)})
        assert keyfile.status == 200, keyfile.status
        return Registered(found["account"], found["username"], found["password"], keyfile.body)

    def login(self, reg: Registered) -> Answer:
        return self.post(
            "/login",
            {
                "user": reg.username,
                "password": reg.password,
                "totp": "",
                "key": (reg.keyfile, "my.key"),
            },
        )
