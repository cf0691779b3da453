"""The local LMTP servers Postfix hands mail to (the OpenPGP stage, the TLS report parser): one
recipient per transaction, the work in a bounded thread pool, a socket only Postfix may open."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.controller import UnixSocketController
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from ddmail_common import socket_daemon


class OneRecipientHandler:
    """Subclasses answer DATA (`handle_DATA`), running blocking work in `self.pool`: a hung
    step holds one of its threads, never the event loop or every delivery."""

    def __init__(self, workers: int, name: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # One answer after DATA is exact only for one recipient (Postfix sends one anyway:
        # lmtp_destination_recipient_limit = 1).
        if envelope.rcpt_tos:
            return "452 4.5.3 One recipient per transaction"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


class _Controller(UnixSocketController):
    def __init__(
        self, handler: OneRecipientHandler, socket_path: Path, hostname: str, data_limit: int
    ) -> None:
        super().__init__(handler, unix_socket=str(socket_path))
        self._hostname = hostname
        self._data_limit = data_limit

    def factory(self) -> SMTP:
        return LMTP(
            self.handler,
            decode_data=False,
            enable_SMTPUTF8=True,
            data_size_limit=self._data_limit,
            hostname=self._hostname,
        )


def serve(
    handler: OneRecipientHandler, socket_path: Path, hostname: str, data_limit: int
) -> UnixSocketController:
    """Listen on SOCKET_PATH (replacing a stale one) until the controller is stopped."""
    socket_path.unlink(missing_ok=True)
    controller = _Controller(handler, socket_path, hostname, data_limit)
    controller.start()
    # Postfix's LMTP client (user postfix) connects; nobody else may.
    socket_daemon.restrict_to_postfix(socket_path)
    return controller
