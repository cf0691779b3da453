"""`ddmail-tlsrpt`: the SMTP TLS report parser, an LMTP server Postfix hands report mail to.

Mail to tlsrpt@ of a hosted domain goes to the operator mailbox as before; Postfix also sends a
blind copy (recipient_bcc_maps, sql-tlsrpt.cf) through the transport `postfix_tlsrpt_transport`
to this server's unix socket (group postfix only). Mailboxes are encrypted at rest, so this is
the one place a report can be read. The report is parsed here, in a process that holds no
database access, and only its summary (ddmail_common.tlsrpt: no addresses) goes to the backend,
signed as caller `tlsrpt`.

Answers: 250 for a report stored, a duplicate, a report for no domain of ours and a malformed
or oversize one (logged with a fixed reason, never a value from the mail: a refusal would only
bounce to the reporting organisation, which cannot fix a thing); 451 while the backend cannot
be reached, so Postfix keeps the copy and retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import threading
from pathlib import Path

from aiosmtpd.controller import UnixSocketController
from aiosmtpd.smtp import SMTP, Envelope, Session

from ddmail_common import lmtp_server, socket_daemon
from ddmail_common.client import ServiceClient
from ddmail_common.errors import ApiError
from ddmail_common.tlsrpt import ReportError, parse_report, report_json

log = logging.getLogger(__name__)
ACCEPTED = "250 2.0.0 OK"
# Above Postfix's message_size_limit: aiosmtpd would refuse larger mail with a 552, which
# Postfix bounces to the reporter; Intake.handle refuses an oversize report quietly instead.
DATA_LIMIT = 64 * 1024 * 1024
TEMPFAIL_BACKEND = "451 4.3.0 The report store is not reachable now; retry later"


class Intake:
    """What happens to one report mail."""

    def __init__(self, backend: ServiceClient) -> None:
        self.backend = backend

    def handle(self, message: bytes) -> str:
        try:
            report = parse_report(report_json(message))
        except ReportError as exc:
            log.warning("TLS-RPT report refused: %s", exc)
            return ACCEPTED
        try:
            # The same mail retried carries the same key: the backend answers it again.
            self.backend.call(
                "POST",
                "/v1/tls-reports",
                report.as_summary(),
                idempotency_key=hashlib.sha256(message).hexdigest(),
            )
        except ApiError as exc:
            if exc.status >= 500:
                log.warning("TLS-RPT report deferred: the backend answered %s", exc.status)
                return TEMPFAIL_BACKEND
            log.warning("TLS-RPT report refused by the backend: %s", exc.message)
        return ACCEPTED


class _Handler(lmtp_server.OneRecipientHandler):
    def __init__(self, intake: Intake) -> None:
        super().__init__(4, "tlsrpt")
        self.intake = intake

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, self.intake.handle, envelope.original_content or b""
        )


def serve(intake: Intake, socket_path: Path) -> UnixSocketController:
    return lmtp_server.serve(_Handler(intake), socket_path, "ddmail-tlsrpt", DATA_LIMIT)


def main() -> None:
    cfg = socket_daemon.start("DDMail's SMTP TLS report (RFC 8460) parser", "tlsrpt")
    backend = ServiceClient("tlsrpt", cfg.secret("tlsrpt"), cfg.backend_socket, "backend")
    controller = serve(Intake(backend), cfg.tlsrpt_socket)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    controller.stop()
    cfg.tlsrpt_socket.unlink(missing_ok=True)
