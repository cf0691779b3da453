"""`ddmail-web --config FILE --bind unix:PATH`: the panel under gunicorn, behind nginx, which
holds the TLS connections, or the plain-HTTP loopback connections of Tor and I2P (it says
which in X-Forwarded-Proto: ddmail_web.transport)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ddmail_common import config as config_mod
from ddmail_common.logredact import install as install_redaction
from ddmail_common.serve import serve
from ddmail_web.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--bind", required=True, help="unix:PATH (or HOST:PORT on loopback)")
    parser.add_argument(
        "--workers",
        type=int,
        # The panel's work is CPU (a page is ~1 ms); one more than the cores covers the time
        # a worker waits for the backend. More workers measured slower (cache, switching).
        default=(os.cpu_count() or 1) + 1,
        help="worker processes (default: one per core, plus one)",
    )
    args = parser.parse_args()
    install_redaction()
    cfg = config_mod.load_service(args.config)
    # Made once, before the fork, and shared by the workers (copy-on-write): the panel starts
    # no threads (the database layer drops connections a fork inherits: ddmail_common.db).
    app = create_app(cfg)
    # Sync workers: nginx keeps the clients' connections alive and hands each request to
    # whichever worker is free. Pinning keep-alive connections to threaded workers left one
    # worker overloaded while another idled (docs/performance-panel.md).
    serve(lambda: app, [args.bind], workers=args.workers, worker_class="sync")
