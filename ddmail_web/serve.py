"""`ddmail-web --config FILE`: the panel under gunicorn, over TLS (its cookies are `__Host-`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddmail_common import config as config_mod
from ddmail_common.logredact import install as install_redaction
from ddmail_common.serve import GunicornApp
from ddmail_web.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--listen", required=True, help="HOST:PORT on loopback")
    parser.add_argument("--certfile", type=Path, required=True)
    parser.add_argument("--keyfile", type=Path, required=True)
    args = parser.parse_args()
    install_redaction()
    cfg = config_mod.load(args.config)
    GunicornApp(
        create_app(cfg),
        {
            "bind": [args.listen],
            "workers": 2,
            "worker_class": "gthread",
            "threads": 4,
            "certfile": str(args.certfile),
            "keyfile": str(args.keyfile),
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
        },
    ).run()
