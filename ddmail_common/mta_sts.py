"""The MTA-STS policy (RFC 8461) from the one config: the panel serves its text, and
`ddmail admin dns zone` publishes its id, which changes exactly when the text does."""

from __future__ import annotations

import hashlib

from ddmail_common.config import PublicSettings

MAX_AGE = 604800  # one week, in seconds


def policy_text(public: PublicSettings) -> str:
    """The policy body: CRLF-separated key/value lines."""
    lines = ["version: STSv1", f"mode: {public.mta_sts_mode}"]
    lines += [f"mx: {mx}" for mx in public.mta_sts_mx]
    lines.append(f"max_age: {MAX_AGE}")
    return "\r\n".join(lines) + "\r\n"


def policy_id(public: PublicSettings) -> str:
    """RFC 8461 §3.1: 1-32 alphanumerics; senders fetch the policy again when it changes."""
    return hashlib.sha256(policy_text(public).encode()).hexdigest()[:20]
