"""A loopback SMTP sink standing in for the Internet: every outbound message lands in a file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class _SinkHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        stem = f"{time.time_ns()}-{os.getpid()}-{self.count}"
        content = envelope.original_content or b""
        (self.directory / f"{stem}.eml").write_bytes(content)
        meta: dict[str, Any] = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}
        (self.directory / f"{stem}.json").write_text(json.dumps(meta))
        return "250 OK: stored by the local sink"


def start_sink(directory: Path, port: int) -> Controller:
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(
        _SinkHandler(directory), hostname="127.0.0.1", port=port, decode_data=False
    )
    controller.start()
    return controller
