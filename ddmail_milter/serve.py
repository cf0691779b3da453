"""``ddmail-milter``: the submission milter as a process, listening on a unix socket that only
Postfix (group postfix) may use."""

from __future__ import annotations

import argparse
import asyncio
import grp
import logging
import os
import signal
from pathlib import Path

from ddmail_common import config as config_mod
from ddmail_common.logredact import install as install_redaction
from ddmail_milter.ownership import SenderOwnership
from ddmail_milter.ratelimit import SendLimit
from ddmail_milter.session import Policy, serve_connection


async def run(policy: Policy, socket_path: Path) -> None:
    socket_path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(
        lambda r, w: serve_connection(policy, r, w), path=str(socket_path)
    )
    # Only Postfix (group postfix) may connect. In production the socket directory is setgid
    # postfix, so the group is already right and an unprivileged milter need not change it.
    postfix_gid = grp.getgrnam("postfix").gr_gid
    if socket_path.stat().st_gid != postfix_gid:
        os.chown(socket_path, -1, postfix_gid)
    socket_path.chmod(0o660)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    async with server:
        await done.wait()
    socket_path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="DDMail's submission milter")
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    install_redaction()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s milter: %(message)s")
    cfg = config_mod.load(args.config)
    settings = cfg.milter
    policy = Policy(
        ownership=SenderOwnership(settings.db_url or cfg.db_url),
        limit=SendLimit(settings.send_limit_recipients, settings.send_limit_window_seconds),
    )
    asyncio.run(run(policy, settings.socket))
