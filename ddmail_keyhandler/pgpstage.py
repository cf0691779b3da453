"""The OpenPGP delivery stage: an LMTP server between Postfix and Dovecot.

For a recipient with an activated OpenPGP key every message is stored as PGP/MIME (then, like all
mail, encrypted at rest by mail_crypt). It fails closed: whenever encryption is impossible the
answer is a temporary failure, so Postfix keeps the message and retries; plaintext is never
handed to Dovecot for such a recipient. Recipients without a key pass through unchanged.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import signal
import smtplib
import threading
import time
from pathlib import Path

from aiosmtpd.controller import UnixSocketController
from aiosmtpd.smtp import SMTP, Envelope, Session

from ddmail_common import lmtp_server, socket_daemon
from ddmail_common.db import Database
from ddmail_common.validators import InvalidInput, parse_foreign_address
from ddmail_keyhandler.openpgp_keys import OpenPgpKeys
from ddmail_keyhandler.pgpmime import EncryptionError, encrypt_message, is_already_encrypted

log = logging.getLogger(__name__)
MAX_MESSAGE = 64 * 1024 * 1024
ENCRYPT_TIMEOUT = 60.0
TEMPFAIL_ENCRYPT = "451 4.7.0 The message cannot be encrypted for this mailbox now; retry later"
TEMPFAIL_KEYS = "451 4.3.0 The mailbox's encryption settings cannot be read now; retry later"
TEMPFAIL_STORE = "451 4.3.0 The mailbox store is not reachable now; retry later"


class Stage:
    """What happens to one message for one recipient."""

    def __init__(self, keys: OpenPgpKeys, dovecot_lmtp: Path, gnupg_binary: str = "gpg") -> None:
        self.keys = keys
        self.dovecot_lmtp = dovecot_lmtp
        self.gnupg_binary = gnupg_binary

    def key_for(self, recipient: str) -> str | None:
        """The armored key mail to RECIPIENT must be encrypted to, if any."""
        return self.keys.active_key(recipient.lower())

    def encrypt(self, recipient: str, raw: bytes, key: str) -> bytes:
        """RAW as stored for RECIPIENT; raises EncryptionError (fail closed)."""
        if is_already_encrypted(raw):
            return raw
        try:
            encrypted = encrypt_message(raw, key.encode(), self.gnupg_binary)
        except EncryptionError as exc:
            # The owner sees this on the key's page until a delivery succeeds again.
            self.keys.record_delivery(recipient.lower(), exc.reason)
            raise
        self.keys.record_delivery(recipient.lower(), None)
        return encrypted

    def store(self, sender: str, recipient: str, raw: bytes, options: list[str]) -> str:
        """Hand RAW to Dovecot's LMTP; return Dovecot's answer as one reply line."""
        with smtplib.LMTP(str(self.dovecot_lmtp), timeout=60) as dovecot:
            dovecot.ehlo()
            if not dovecot.has_extn("smtputf8"):
                # Dovecot 2.3's LMTP has no SMTPUTF8: the envelope sender (it only becomes
                # Return-Path) goes over in ASCII; the message itself is untouched.
                options = [o for o in options if o.upper() != "SMTPUTF8"]
                sender = ascii_sender(sender)
            try:
                dovecot.sendmail(sender, [recipient], raw, mail_options=options)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = exc.recipients[recipient]
                return f"{code} {_text(text)}"
            except smtplib.SMTPResponseException as exc:
                return f"{exc.smtp_code} {_text(exc.smtp_error)}"
        return "250 2.0.0 Stored"


def ascii_sender(sender: str) -> str:
    """SENDER with an A-label domain; the null sender if its local part is not ASCII."""
    if sender.isascii():
        return sender
    local, _, domain = sender.rpartition("@")
    try:
        ascii_domain = parse_foreign_address(f"x@{domain}")[1]
    except InvalidInput:
        return ""
    return f"{local}@{ascii_domain}" if local.isascii() else ""


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


class _Handler(lmtp_server.OneRecipientHandler):
    def __init__(self, stage: Stage) -> None:
        super().__init__(8, "pgpstage")  # a hung gpg holds one of these threads
        self.stage = stage

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        loop = asyncio.get_running_loop()
        recipient = envelope.rcpt_tos[0]
        raw = envelope.original_content or b""
        sender = envelope.mail_from or ""
        try:
            key = await loop.run_in_executor(self.pool, self.stage.key_for, recipient)
        except Exception as exc:
            log.warning("OpenPGP stage could not read keys (%s), deferring", type(exc).__name__)
            return TEMPFAIL_KEYS
        stored = raw
        if key is not None:
            try:
                stored = await asyncio.wait_for(
                    loop.run_in_executor(self.pool, self.stage.encrypt, recipient, raw, key),
                    ENCRYPT_TIMEOUT,
                )
            except EncryptionError as exc:
                log.warning("OpenPGP encryption refused, deferring: %s", exc.reason)
                return TEMPFAIL_ENCRYPT
            except Exception as exc:
                log.warning("OpenPGP encryption failed (%s), deferring", type(exc).__name__)
                return TEMPFAIL_ENCRYPT
        options = [
            o for o in envelope.mail_options if o.upper().split("=")[0] in ("BODY", "SMTPUTF8")
        ]
        try:
            return await loop.run_in_executor(
                self.pool, self.stage.store, sender, recipient, stored, options
            )
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("Dovecot LMTP not reachable (%s), deferring", type(exc).__name__)
            return TEMPFAIL_STORE


WARN_BEFORE = 14 * 86400
WARN_EVERY = 3600.0


def expiry_notice(address: str, expires_at: int, sender_domain: str) -> bytes:
    day = time.strftime("%Y-%m-%d", time.gmtime(expires_at))
    return (
        f"From: DDMail <postmaster@{sender_domain}>\r\nTo: <{address}>\r\n"
        f"Subject: Your OpenPGP key expires on {day}\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: {email.utils.make_msgid()}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"The OpenPGP key that incoming mail to {address} is encrypted to expires on {day}.\r\n"
        "After that, mail to this mailbox is held back on the server (never stored\r\n"
        "unencrypted). Extend it (gpg --quick-set-expire) and upload it again on the\r\n"
        "panel's OpenPGP page: it is updated there and stays active.\r\n"
    ).encode()


def warn_expiring(stage: Stage, sender_domain: str, now: int | None = None) -> int:
    """Mail each owner whose active key expires within two weeks, once per expiry date; the
    notice itself is encrypted to that key. Returns how many were sent."""
    now = int(time.time()) if now is None else now
    sent = 0
    for address, key, expires_at in stage.keys.expiring(WARN_BEFORE, now):
        try:
            raw = stage.encrypt(address, expiry_notice(address, expires_at, sender_domain), key)
            answer = stage.store("", address, raw, [])
        except (EncryptionError, OSError, smtplib.SMTPException) as exc:
            log.warning("expiry notice not delivered (%s); will retry", type(exc).__name__)
            continue
        if answer.startswith("250"):
            stage.keys.mark_warned(address, expires_at)
            sent += 1
    return sent


def serve(stage: Stage, socket_path: Path) -> UnixSocketController:
    return lmtp_server.serve(_Handler(stage), socket_path, "ddmail-pgpstage", MAX_MESSAGE)


def main() -> None:
    cfg = socket_daemon.start("DDMail's OpenPGP LMTP delivery stage", "pgpstage")
    stage = Stage(OpenPgpKeys(Database(cfg.db_url)), cfg.dovecot_lmtp_socket, cfg.gnupg_binary)
    controller = serve(stage, cfg.pgpstage_socket)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())

    def warner() -> None:
        while not done.is_set():
            try:
                warn_expiring(stage, cfg.web.global_domain)
            except Exception as exc:
                log.warning("expiry check failed (%s)", type(exc).__name__)
            done.wait(WARN_EVERY)

    threading.Thread(target=warner, name="expiry-notices", daemon=True).start()
    done.wait()
    controller.stop()
    cfg.pgpstage_socket.unlink(missing_ok=True)
