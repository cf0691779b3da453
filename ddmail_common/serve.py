"""Run a service's WSGI app under gunicorn, bound to its unix socket (and loopback ports)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from ddmail_common import config as config_mod
from ddmail_common.logredact import install as install_redaction


class GunicornApp(BaseApplication):  # type: ignore[misc]
    """LOAD makes the WSGI app; gunicorn calls it in each worker after the fork, unless the
    app is preloaded (LOAD then hands back an app made before)."""

    def __init__(self, load: Callable[[], Any], options: dict[str, Any]) -> None:
        self._load = load
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._load()


def serve(build: Callable[[], Any], binds: Sequence[str], **workers: Any) -> None:
    """Serve the app BUILD makes on BINDS; WORKERS: how many and of which class."""
    GunicornApp(
        build,
        {
            "bind": list(binds),
            **workers,
            "umask": 0o117,
            "timeout": 60,
            "graceful_timeout": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            # gunicorn (25.1+) would open a control socket that can change the worker count
            # and reload the app, under $XDG_RUNTIME_DIR or $HOME: nothing of DDMail uses it.
            "control_socket_disable": True,
        },
    ).run()


def run(build: Callable[[], Any], binds: Sequence[str], threads: int = 8) -> None:
    # One worker process: the replay cache of signed requests lives in it (signing.NonceCache).
    # Threads give concurrency; argon2 and AES release the GIL. The app is made in the worker,
    # never in the arbiter: the backend's job thread, its locks and its database connections
    # must exist in the one process that serves requests (made before the fork, the job loop
    # ran on in the arbiter beside the worker's, and two processes made the same DKIM key).
    serve(build, binds, workers=1, worker_class="gthread", threads=threads)


def main_for(
    build: Callable[[config_mod.Config], Any], binds: Callable[[config_mod.Config], list[str]]
) -> None:
    """Console-script entry: `SERVICE --config FILE`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    install_redaction()
    cfg = config_mod.load_service(args.config)
    for bind in binds(cfg):
        if bind.startswith("unix:"):
            Path(bind[5:]).unlink(missing_ok=True)
    run(lambda: build(cfg), binds(cfg))
