"""Where everything of one local stack lives: paths under the state root and port numbers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT_BASE = 20000
GLOBAL_DOMAIN = "ddmail.test"
# A unix socket path may not exceed 108 bytes; the longest one we make is run/dovecot/auth-postfix.
MAX_ROOT_LEN = 60
# With --dns, mail to domains under this suffix leaves by their MX records, verified with DANE
# or MTA-STS as in production; all other outbound mail goes to the sink.
DNS_ROUTED_SUFFIX = "remote.test"


@dataclass(frozen=True)
class StackLayout:
    root: Path
    port_base: int = DEFAULT_PORT_BASE
    db_url: str = ""
    # HOST:PORT of a DNS server the stack resolves through (backend checks, rspamd's SPF, DKIM
    # and DMARC); "" = the machine's resolver.
    dns_server: str = ""
    # MiB per mailbox Dovecot enforces and the pages state ([public] mailbox_quota_mb); 0: none.
    mailbox_quota_mb: int = 0

    # ports (all on 127.0.0.1)
    @property
    def smtp_port(self) -> int:
        return self.port_base + 25

    @property
    def submission_port(self) -> int:
        return self.port_base + 587

    @property
    def smtps_port(self) -> int:
        return self.port_base + 465

    @property
    def imaps_port(self) -> int:
        return self.port_base + 993

    @property
    def sink_port(self) -> int:
        return self.port_base + 26

    @property
    def web_port(self) -> int:
        return self.port_base + 443

    @property
    def mta_sts_port(self) -> int:
        """The MTA-STS resolver's socketmap (production: 8461) when the stack has --dns."""
        return self.port_base + 846

    @property
    def resolver_address(self) -> str:
        """The stack's validating resolver (Unbound, --dns only): a loopback address of its own
        at port 53, because resolv.conf, which Postfix reads, cannot name another port."""
        digest = hashlib.sha256(str(self.root.resolve()).encode()).digest()
        return f"127.53.{digest[0]}.{max(digest[1], 1)}"

    # The loopback listeners Tor's onion service and i2pd's server tunnels forward to (issue 12):
    # the panel over plain HTTP, IMAP and submission with authentication without TLS (the
    # anonymity network encrypts end to end).
    @property
    def anon_http_port(self) -> int:
        return self.port_base + 180

    @property
    def anon_imap_port(self) -> int:
        return self.port_base + 143

    @property
    def anon_submission_port(self) -> int:
        return self.port_base + 588

    @property
    def unlock_port(self) -> int:
        """Keyhandler's loopback TCP listener for Dovecot's Lua passdb (http only, no sockets)."""
        return self.port_base + 80

    # directories
    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def sink_dir(self) -> Path:
        return self.root / "sink"

    @property
    def db_dir(self) -> Path:
        return self.root / "db"

    @property
    def postfix_dir(self) -> Path:
        return self.etc / "postfix"

    @property
    def dovecot_dir(self) -> Path:
        return self.etc / "dovecot"

    @property
    def postfix_queue(self) -> Path:
        return self.root / "spool" / "postfix"

    @property
    def dovecot_base(self) -> Path:
        return self.run / "dovecot"

    @property
    def postfix_data(self) -> Path:
        """Postfix data_directory (owned by the postfix user)."""
        return self.root / "lib" / "postfix"

    @property
    def dovecot_state(self) -> Path:
        """Dovecot state_dir."""
        return self.root / "lib" / "dovecot"

    @property
    def dovecot_lmtp_socket(self) -> Path:
        """Dovecot's LMTP unix socket, its only LMTP listener: for the OpenPGP stage alone."""
        return self.dovecot_base / "lmtp"

    @property
    def dovecot_auth_socket(self) -> Path:
        """Dovecot's SASL socket for Postfix (mode 0660, user postfix)."""
        return self.dovecot_base / "auth-postfix"

    @property
    def filters_dir(self) -> Path:
        """Redis's, clamd's and rspamd's rendered configuration (roles redis, clamav, rspamd)."""
        return self.etc / "filters"

    @property
    def filters_state(self) -> Path:
        """Their state: Redis's snapshot, rspamd's caches, the ClamAV signature database."""
        return self.root / "lib" / "filters"

    @property
    def dkim_keys(self) -> Path:
        """The DKIM private keys and selector map: written by the backend, read by rspamd."""
        return self.root / "lib" / "dkim"

    @property
    def rspamd_run(self) -> Path:
        return self.run / "rspamd"

    @property
    def redis_run(self) -> Path:
        return self.run / "redis"

    @property
    def clamd_run(self) -> Path:
        return self.run / "clamav"

    @property
    def rspamd_milter_socket(self) -> Path:
        """The milter Postfix passes every message through (port 25 and submission)."""
        return self.rspamd_run / "milter.sock"

    @property
    def rspamd_controller_socket(self) -> Path:
        """rspamd's controller: learning ham and spam (Dovecot's IMAPSieve scripts)."""
        return self.rspamd_run / "controller.sock"

    @property
    def redis_socket(self) -> Path:
        return self.redis_run / "redis.sock"

    @property
    def clamd_socket(self) -> Path:
        return self.clamd_run / "clamd.sock"

    @property
    def effective_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.db_dir / 'ddmail.sqlite3'}"

    @property
    def ca_cert(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The local CA's key: it signs the next certificate of a TLS key rollover, and test
        servers' certificates (the stack's stand-in for the public CAs)."""
        return self.tls / "ca.key"

    @property
    def resolver_dir(self) -> Path:
        """Unbound's config, its trust anchors (anchors/*.conf) and the resolv.conf Postfix and
        the MTA-STS resolver see."""
        return self.etc / "unbound"

    @property
    def server_cert(self) -> Path:
        return self.tls / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.tls / "server.key"

    @property
    def web_url(self) -> str:
        return f"https://127.0.0.1:{self.web_port}"

    def socket(self, service: str) -> Path:
        return self.run / f"{service}.sock"

    def stack_json(self, onion_address: str = "", i2p_address: str = "") -> dict[str, object]:
        """ONION_ADDRESS, I2P_ADDRESS: the names of the stack's onion service and I2P destination
        (made by its tor and i2pd on the first start; ddmail_stack.anonymity)."""
        return {
            "web_url": self.web_url,
            "smtp_port": self.smtp_port,
            "submission_port": self.submission_port,
            "smtps_port": self.smtps_port,
            "imaps_port": self.imaps_port,
            "onion_address": onion_address,
            "i2p_address": i2p_address,
            "anon_http_port": self.anon_http_port,
            "anon_imap_port": self.anon_imap_port,
            "anon_submission_port": self.anon_submission_port,
            "sink_dir": str(self.sink_dir),
            "mail_root": str(self.mail_root),
            "log_dir": str(self.log_dir),
            "tls_ca": str(self.ca_cert),
            "db_url": self.effective_db_url,
            "global_domain": GLOBAL_DOMAIN,
            "port_base": self.port_base,
            "backend_socket": str(self.socket("backend")),
            "keyhandler_socket": str(self.socket("keyhandler")),
            "config": str(self.etc / "ddmail.toml"),
            "dns_server": self.dns_server,
            "resolver": f"{self.resolver_address}:53" if self.dns_server else "",
            "dns_routed_suffix": DNS_ROUTED_SUFFIX if self.dns_server else "",
            "mailbox_quota_mb": self.mailbox_quota_mb,
        }

    def write_stack_json(self, onion_address: str, i2p_address: str) -> None:
        # Atomically: tools wait for this file and read it as soon as it exists.
        tmp = self.root / "stack.json.tmp"
        content = self.stack_json(onion_address, i2p_address)
        tmp.write_text(json.dumps(content, indent=2) + "\n")
        tmp.replace(self.root / "stack.json")

    @classmethod
    def load(cls, root: Path) -> StackLayout:
        data = json.loads((root / "stack.json").read_text())
        return cls(
            root=root,
            port_base=int(data["port_base"]),
            db_url=str(data["db_url"]),
            dns_server=str(data.get("dns_server", "")),
            mailbox_quota_mb=int(data.get("mailbox_quota_mb", 0)),
        )
