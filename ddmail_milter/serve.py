"""``ddmail-milter``: the submission milter as a process, listening on a unix socket that only
Postfix (group postfix) may use."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from ddmail_common import socket_daemon
from ddmail_milter.ownership import SenderOwnership
from ddmail_milter.ratelimit import SendLimit
from ddmail_milter.session import Policy, serve_connection


async def run(policy: Policy, socket_path: Path) -> None:
    socket_path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(
        lambda r, w: serve_connection(policy, r, w), path=str(socket_path)
    )
    # In production the socket directory is setgid postfix, so the group is already right and
    # the unprivileged milter need not change it.
    socket_daemon.restrict_to_postfix(socket_path)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    async with server:
        await done.wait()
    socket_path.unlink(missing_ok=True)


def main() -> None:
    cfg = socket_daemon.start("DDMail's submission milter", "milter")
    settings = cfg.milter
    policy = Policy(
        ownership=SenderOwnership(settings.db_url or cfg.db_url),
        limit=SendLimit(settings.send_limit_recipients, settings.send_limit_window_seconds),
    )
    asyncio.run(run(policy, settings.socket))
