"""One milter connection from Postfix's submission smtpd: the submission policy.

* MAIL FROM: an authenticated login is required, the null sender is refused, and a login over
  its send limit is deferred (4.7.1).
* End of message: every address of From and Sender must be owned by the login (5.7.1), else
  the message is refused; if ownership cannot be looked up the answer is 4.3.0 (fail closed).
  The message's recipients then count toward the login's limit.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ddmail_milter import protocol
from ddmail_milter.header_senders import Refused, claimed_senders, for_reply, own_form
from ddmail_milter.ownership import LookupFailed, SenderOwnership
from ddmail_milter.ratelimit import SendLimit

log = logging.getLogger(__name__)

NO_LOGIN = "530 5.7.0 Authentication required"
NULL_SENDER = "553 5.7.1 The null sender <> cannot be used on submission; send from your address"
OVER_LIMIT = "450 4.7.1 This login has reached its sending limit; try again later"
LOOKUP_TEMPFAIL = "451 4.3.0 The sender addresses cannot be checked now; try again later"


@dataclass
class Policy:
    ownership: SenderOwnership
    limit: SendLimit
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="milter")
    )

    def login_key(self, login: str) -> str:
        return own_form(login) or login.lower()

    def judge_message(self, login: str, headers: list[tuple[str, str]], recipients: int) -> str:
        """The reply to the end of a message: "" to accept, else an SMTP reply."""
        key = self.login_key(login)
        try:
            claimed = claimed_senders(headers)
        except Refused as refused:
            log.info("refused a submission: unreadable From/Sender")
            return refused.reply
        try:
            for name, written, stored in claimed:
                if stored is None or not self.ownership.owns(key, stored):
                    log.info("refused a submission: %s header not owned by the login", name)
                    return (
                        f"550 5.7.1 {name} address <{for_reply(written)}> is not one of the "
                        "addresses of this login"
                    )
        except LookupFailed as exc:
            log.warning("sender ownership lookup failed (%s), deferring", exc)
            return LOOKUP_TEMPFAIL
        if recipients > self.limit.recipients:
            # It would never fit in a window: a temporary answer would be retried until the
            # sender's queue gave up days later.
            log.info("refused a submission: more recipients than the sending limit")
            return (
                f"550 5.7.1 A message may go to at most {self.limit.recipients} recipients; "
                "send it in parts"
            )
        if not self.limit.take(key, max(recipients, 1)):
            log.info("deferred a submission: login over its sending limit")
            return OVER_LIMIT
        return ""


@dataclass
class _Message:
    login: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    recipients: int = 0


async def serve_connection(
    policy: Policy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    loop = asyncio.get_running_loop()
    message = _Message()
    mail_macros: dict[str, str] = {}
    try:
        while True:
            command, data = await protocol.read_packet(reader)
            answer: bytes | None = protocol.proceed()
            if command == protocol.OPTNEG:
                answer = protocol.negotiate(data)
            elif command == protocol.MACRO:
                stage, values = protocol.macros(data)
                if stage == protocol.MAIL:
                    mail_macros = values
                answer = None
            elif command == protocol.MAIL:
                message = _Message(login=mail_macros.get("{auth_authen}", ""))
                args = protocol.strings(data)
                sender = args[0].strip() if args else ""
                if not message.login:
                    answer = protocol.reply(NO_LOGIN)
                elif sender in ("", "<>"):
                    answer = protocol.reply(NULL_SENDER)
                elif policy.limit.exhausted(policy.login_key(message.login)):
                    answer = protocol.reply(OVER_LIMIT)
            elif command == protocol.RCPT:
                message.recipients += 1
            elif command == protocol.HEADER:
                message.headers.append(protocol.header(data))
            elif command == protocol.BODYEOB:
                verdict = await loop.run_in_executor(
                    policy.pool,
                    policy.judge_message,
                    message.login,
                    message.headers,
                    message.recipients,
                )
                answer = protocol.reply(verdict) if verdict else protocol.proceed()
                message = _Message()
            elif command in (protocol.ABORT, protocol.QUIT_NC):
                message, mail_macros, answer = _Message(), {}, None
            elif command == protocol.QUIT:
                return
            if answer is not None:
                writer.write(answer)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    except protocol.ProtocolError as exc:
        log.warning("milter protocol error: %s", exc)
    finally:
        writer.close()
