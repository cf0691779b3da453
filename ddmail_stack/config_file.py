"""The stack's ddmail.toml: the same settings a production deployment has, with local values."""

from __future__ import annotations

import json

from ddmail_common.config import Config
from ddmail_common.config import load as load_config
from ddmail_stack.layout import GLOBAL_DOMAIN, StackLayout
from ddmail_stack.processes import python_script

CALLERS = ("web", "admin", "backend", "dovecot", "tlsrpt")
# Secret files: each caller's signing secret, and the key of the panel's audit trail.
SECRETS = (*CALLERS, "audit")
# The operator's mailbox in the local stack: outside every hosted domain, so Postfix relays it to
# the sink (stack/sink/*.eml), where a person trying DDMail reads postmaster@ and abuse@ mail.
OPERATOR_ADDRESS = "operator@operator.invalid"


# Low enough that a test reaches it quickly; every test sends from a mailbox of its own.
STACK_SEND_LIMIT_RECIPIENTS = 30


STACK_DNS_TTL = 5
STACK_DKIM_GRACE_SECONDS = 15


def dns_lines(layout: StackLayout) -> list[str]:
    """[backend] settings for --dns: the one server, at its port."""
    if not layout.dns_server:
        return []
    host, _, port = layout.dns_server.rpartition(":")
    return [f"dns_nameservers = {json.dumps([host])}", f"dns_port = {port}"]


def stack_command(layout: StackLayout, command: str) -> list[str]:
    return [python_script("ddmail"), "stack", command, "--root", str(layout.root)]


def render(
    layout: StackLayout,
    argon2_memory_kib: int,
    argon2_time_cost: int,
    milter_db_url: str,
    onion_address: str = "",
    i2p_address: str = "",
) -> str:
    q = json.dumps  # TOML basic strings are compatible with JSON strings
    lines = [
        "[database]",
        f"url = {q(layout.effective_db_url)}",
        "",
        "[backend]",
        f"socket = {q(str(layout.socket('backend')))}",
        f"mail_root = {q(str(layout.mail_root))}",
        f"postfix_reload = {q(['postfix', '-c', str(layout.postfix_dir), 'reload'])}",
        "reserved_local_parts = []",
        f"dns_ttl = {STACK_DNS_TTL}",
        *dns_lines(layout),
        # postmaster@, abuse@ and the report addresses: delivered to the sink (OPERATOR_ADDRESS).
        f"operator_address = {q(OPERATOR_ADDRESS)}",
        "",
        "[keyhandler]",
        f"socket = {q(str(layout.socket('keyhandler')))}",
        f"unlock_listen = {q(f'127.0.0.1:{layout.unlock_port}')}",
        f"argon2_memory_kib = {argon2_memory_kib}",
        f"argon2_time_cost = {argon2_time_cost}",
        "argon2_parallelism = 1",
        "",
        "[pgpstage]",
        f"socket = {q(str(layout.socket('pgpstage')))}",
        f"dovecot_lmtp = {q(str(layout.dovecot_lmtp_socket))}",
        "",
        "[tlsrpt]",
        f"socket = {q(str(layout.socket('tlsrpt')))}",
        "",
        "[milter]",
        f"socket = {q(str(layout.socket('milter')))}",
        f"db_url = {q(milter_db_url)}",
        f"send_limit_recipients = {STACK_SEND_LIMIT_RECIPIENTS}",
        "send_limit_window_seconds = 3600",
        "",
        "[web]",
        f"global_domain = {q(GLOBAL_DOMAIN)}",
        f"panel_url = {q(layout.web_url)}",
        "new_accounts_enabled = true",
        f"master_keys = {q(str(layout.secrets / 'master.keys'))}",
        f"argon2_memory_kib = {argon2_memory_kib}",
        f"argon2_time_cost = {argon2_time_cost}",
        "",
        "[dkim]",
        f"key_dir = {q(str(layout.dkim_keys))}",
        # A rotation completes in seconds here (production: a TTL plus an hour, then a week of
        # grace). The switch waits for DNS only where the stack has a DNS server (--dns).
        "switch_margin_seconds = 0",
        f"grace_seconds = {STACK_DKIM_GRACE_SECONDS}",
        "maintain_every_seconds = 1",
        f"check_dns = {'true' if layout.dns_server else 'false'}",
        "",
        "[zone]",
        # `dns zone --sign`: the stack's own zone as the test suite's name server would serve it.
        f"nameservers = {q(['ns1.' + GLOBAL_DOMAIN])}",
        'addresses = ["127.0.0.1"]',
        f"dnssec_key_dir = {q(str(layout.root / 'lib' / 'dnssec'))}",
        f"signed_dir = {q(str(layout.root / 'lib' / 'zones'))}",
        "",
        "[tls]",
        f"certificate = {q(str(layout.server_cert))}",
        f"key = {q(str(layout.server_key))}",
        # A key rollover: the stack's CA issues the next certificate; the daemons reload.
        f"issue_command = {q(stack_command(layout, 'issue-certificate'))}",
        f"reload_command = {q(stack_command(layout, 'reload-tls'))}",
        # The stack's Unbound (--dns) is the validating resolver that must serve the next key.
        f"resolver = {q(f'{layout.resolver_address}:53')}",
        "switch_margin_seconds = 0",
        "",
        "[public]",
        # What the pages and autoconfig tell mail programs: this machine, the stack's ports.
        'mail_hostname = "localhost"',
        # Where other mail servers deliver: the MX's TLSA record names this port.
        f"smtp_port = {layout.smtp_port}",
        f"imaps_port = {layout.imaps_port}",
        f"submission_port = {layout.submission_port}",
        f"submissions_port = {layout.smtps_port}",
        # The stack's onion service and I2P destination (keys made offline; issue 12).
        *([f"onion_hostname = {q(onion_address)}"] if onion_address else []),
        *([f"i2p_hostname = {q(i2p_address)}"] if i2p_address else []),
        f"mailbox_quota_mb = {layout.mailbox_quota_mb}",
        "",
        "[secrets]",
    ]
    lines += [f"{name} = {q(str(layout.secrets / (name + '.key')))}" for name in SECRETS]
    return "\n".join(lines) + "\n"


def load(layout: StackLayout) -> Config:
    return load_config(layout.etc / "ddmail.toml")
