"""What users get while the panel is down: a second nginx from the nginx role's template, with
nobody behind its panel socket (the shared stack's panel stays up)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ddmail_stack.layout import StackLayout
from ddmail_stack.panel import render_nginx
from ddmail_stack.processes import port_open, spawn, stop, wait_for
from tests.stackrun import free_port_base


@contextmanager
def panel_down(where: Path, tls_from: Path) -> Iterator[StackLayout]:
    """An nginx under WHERE serving with the server key and CA of the stack root TLS_FROM (the
    ones a client already trusts); yields its layout (web_port, ca_cert)."""
    layout = StackLayout(root=where, port_base=free_port_base())
    for directory in (layout.run, layout.tls, layout.etc):
        directory.mkdir(parents=True)
    source = StackLayout(root=tls_from)
    for path in ("server_cert", "server_key", "ca_cert"):
        shutil.copy(getattr(source, path), getattr(layout, path))
    render_nginx(layout)
    nginx = spawn(
        [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(layout.run / "nginx"), "-c",
         str(layout.etc / "nginx" / "nginx.conf")],
        layout.root / "nginx.log",
    )  # fmt: skip
    try:
        wait_for("nginx", lambda: port_open(layout.web_port))
        yield layout
    finally:
        stop(nginx)
