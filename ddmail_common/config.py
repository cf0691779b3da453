"""One TOML file per deployment, validated at start; secrets are file paths, never inline values."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddmail_common.db import URL_CREDENTIAL_REFUSED, has_inline_password
from ddmail_common.validators import (
    InvalidInput,
    is_operator_address,
    normalize_domain,
    parse_foreign_address,
)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and says what is expected."""


REGISTRATION_MODES = ("open", "voucher")


@dataclass(frozen=True)
class Argon2Settings:
    memory_kib: int = 19456  # OWASP minimum for argon2id: 19 MiB, t=2, p=1
    time_cost: int = 2
    parallelism: int = 1


@dataclass(frozen=True)
class WebSettings:
    """The panel's own settings (section [web]); every one has a safe default."""

    global_domain: str = "ddmail.test"
    panel_url: str = "https://ddmail.test"
    master_keys: Path | None = None  # envelope master keys for TOTP secrets
    new_accounts_enabled: bool = False  # production: an account starts unfunded
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    # "open", or "voucher": a new account needs a voucher code (the switch under a flood)
    registration: str = "open"
    unfunded_accounts_max: int = 20000  # never-funded accounts at once (bounds the database)
    purge_unclaimed_hours: int = 1  # a never-funded account nobody logged into is then deleted
    login_failures_per_user: int = 10  # per 15 minutes, counted only with the right key file
    logins_per_user: int = 30  # argon2 checks per user per 15 minutes, whatever their outcome
    argon2_slots: int = 1  # argon2id runs at once across all panel workers (CPU guard)
    price_cents_per_gb_month: int = 100  # every started GB, at least one
    currency: str = "EUR"  # shown next to every price (pricing page, funds page)
    grace_days: int = 30  # a disabled account is deleted after this many days
    purge_unfunded_days: int = 30  # an account never funded is deleted after this many days
    argon2: Argon2Settings = field(default_factory=Argon2Settings)


@dataclass(frozen=True)
class PublicSettings:
    """What the public pages, autoconfig and MTA-STS publish (section [public])."""

    mail_hostname: str = "mail.ddmail.test"  # what mail programs connect to
    smtp_port: int = 25  # where other mail servers deliver (the MX's TLSA name); 25 but locally
    imaps_port: int = 993
    submission_port: int = 587  # STARTTLS
    submissions_port: int = 465  # implicit TLS
    onion_hostname: str | None = None  # published only when set
    i2p_hostname: str | None = None
    # The ports the onion service and the I2P tunnels offer IMAP and submission on (without
    # TLS: the network encrypts end to end; issue 12).
    anon_imap_port: int = 143
    anon_submission_port: int = 587
    security_contacts: tuple[str, ...] = ("mailto:security@ddmail.test",)
    # Certificate authorities allowed to issue for the global domains (CAA "issue").
    caa_issuers: tuple[str, ...] = ("letsencrypt.org",)
    mta_sts_mode: str = "enforce"
    mta_sts_mx: tuple[str, ...] = ("mail.ddmail.test",)
    # Each mailbox's limit in MiB of stored (encrypted) mail, as Dovecot enforces it (rendered
    # from the same value: site ddmail_mailbox_quota_mb, the stack's --mailbox-quota-mb); 0: none.
    mailbox_quota_mb: int = 0


MTA_STS_MODES = ("enforce", "testing", "none")


@dataclass(frozen=True)
class MilterSettings:
    """The submission milter (section [milter]): From/Sender ownership and the send limit."""

    socket: Path = Path("/run/ddmail-milter/milter.sock")  # Postfix's submission smtpd connects
    # The mail_senders view is all it reads: production points this at the SELECT-only role of
    # the mail daemons ("" = database.url).
    db_url: str = ""
    send_limit_recipients: int = 200  # per login and window; no IP address is used
    send_limit_window_seconds: int = 3600


@dataclass(frozen=True)
class BackupSettings:
    """Encrypted backups (section [backup], `ddmail admin backup ...`, DN 33)."""

    dir: Path = Path("/var/lib/ddmail/backups")
    public_key: Path | None = None  # the operator's OpenPGP public key (a file, ASCII armour)
    keep: int = 7  # the newest this many are kept
    paths: tuple[Path, ...] = ()  # more files or directories to include, e.g. the TLS key+cert


@dataclass(frozen=True)
class ZoneSettings:
    """For operators who serve the global domains' zones themselves (section [zone]):
    `ddmail admin dns zone --sign`."""

    nameservers: tuple[str, ...] = ()  # the zone's NS records; the first is in the SOA
    addresses: tuple[str, ...] = ()  # the server's IPv4/IPv6 addresses: A/AAAA of its host names
    # Where `dns zone --sign --write` (the ddmail-zone-sign timer) puts <domain>.zone for the
    # name server to load; None: not written.
    signed_dir: Path | None = None
    dnssec_key_dir: Path = Path("/var/lib/ddmail/dnssec")  # KSK and ZSK per domain (root's)


@dataclass(frozen=True)
class TlsSettings:
    """The certificate every TLS port serves (section [tls]); its key's TLSA records, and the
    key rollover (`ddmail admin tls rollover`, DN 42)."""

    certificate: Path | None = None  # PEM; None: no TLSA records are printed
    key: Path | None = None  # its private key (PEM)
    # Makes a new key and its certificate at the paths in $DDMAIL_TLS_NEXT_KEY and
    # $DDMAIL_TLS_NEXT_CERTIFICATE (rollover prepare).
    issue_command: tuple[str, ...] = ()
    reload_command: tuple[str, ...] = ()  # makes every TLS daemon load the certificate again
    # The validating resolver (HOST, PORT) that must serve the next key's TLSA records, with
    # DNSSEC authenticated, before the switch.
    resolver: tuple[str, int] = ("127.0.0.1", 53)
    # The switch waits dns_ttl + this long after prepare, so no resolver still caches the
    # records without the next key.
    switch_margin_seconds: int = 3600


@dataclass(frozen=True)
class DkimSettings:
    """DKIM signing keys (section [dkim], DN 38): one key pair per domain, two alternating
    selectors, rotated without a change in the customers' DNS."""

    # The backend writes each private key here once (the directory is group _rspamd, setgid);
    # rspamd signs with them. Never in the database.
    key_dir: Path = Path("/var/lib/ddmail/dkim")
    rotate_days: int = 180  # a scheduled rotation starts this long after a key became active
    # The next key signs only once DNS serves it and dns_ttl + switch_margin_seconds have
    # passed since it was published, so no resolver still has the old answer cached.
    switch_margin_seconds: int = 3600
    grace_seconds: int = 7 * 86400  # the old key stays published this long after the switch
    check_dns: bool = True  # the switch waits until DNS serves the next key
    # How often the job loop looks for due switches, retirements and lost key files (a new
    # domain gets its key at once, from the request that made it).
    maintain_every_seconds: int = 60


@dataclass(frozen=True)
class Config:
    db_url: str
    backend_socket: Path
    keyhandler_socket: Path
    unlock_listen: tuple[str, int]
    secret_files: dict[str, Path]
    argon2: Argon2Settings
    mail_root: Path
    reserved_local_parts: frozenset[str] = frozenset()
    postfix_reload: tuple[str, ...] = ()
    dns_nameservers: tuple[str, ...] = ()
    dns_port: int = 53
    mail_hostname: str = "mail.ddmail.test"  # the MX name own domains must point at
    pgpstage_socket: Path = Path("/run/ddmail/pgpstage.sock")  # Postfix delivers here
    dovecot_lmtp_socket: Path = Path("/run/dovecot/lmtp")  # the stage hands mail on here
    gnupg_binary: str = "gpg"
    tlsrpt_socket: Path = Path("/run/ddmail-tlsrpt/tlsrpt.sock")  # Postfix hands TLS reports here
    operator_address: str = "operator@ddmail.test"  # receives postmaster@, abuse@, reports
    public: PublicSettings = field(default_factory=PublicSettings)
    web: WebSettings = field(default_factory=WebSettings)
    milter: MilterSettings = field(default_factory=MilterSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    zone: ZoneSettings = field(default_factory=ZoneSettings)
    dns_ttl: int = 3600  # the TTL of the records `ddmail admin dns zone` prints
    source: Path = field(default=Path("-"))

    def secret(self, name: str) -> bytes:
        """Read a secret from its file; refuse files that others may read."""
        path = self.secret_files.get(name)
        if path is None:
            raise ConfigError(f"secrets.{name}: missing (a path to a file holding the secret)")
        return read_secret_file(path, f"secrets.{name}")


def read_secret_file(path: Path, setting: str) -> bytes:
    try:
        st = path.stat()
        data = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if st.st_mode & stat.S_IROTH or st.st_mode & stat.S_IWOTH:
        raise ConfigError(f"{setting}: {path} is readable by others; use mode 0600 or 0640")
    if len(data) < 32:
        raise ConfigError(f"{setting}: {path} holds fewer than 32 bytes; generate a longer secret")
    return data


def _get(table: dict[str, Any], dotted: str, kind: type, default: Any = None) -> Any:
    node: Any = table
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not None:
                return default
            raise ConfigError(f"{dotted}: missing")
        node = node[part]
    if kind is float and isinstance(node, int):
        node = float(node)
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        raise ConfigError(f"{dotted}: expected {kind.__name__}, got {type(node).__name__}")
    return node


def _listen(value: str, setting: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{setting}: expected HOST:PORT, got {value!r}")
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"{setting}: must listen on loopback only, got {host!r}")
    return host, int(port)


def _hostname(value: str, setting: str, suffix: str = "") -> str:
    try:
        name = normalize_domain(value.removeprefix("*."))
    except InvalidInput as exc:
        raise ConfigError(f"{setting}: {value!r}: {exc}") from None
    if not name.endswith(suffix):
        raise ConfigError(f"{setting}: expected a name ending in {suffix}, got {value!r}")
    return "*." + name if value.startswith("*.") else name


def _port(data: dict[str, Any], setting: str, default: int) -> int:
    port: int = _get(data, setting, int, default)
    if not 0 < port < 65536:
        raise ConfigError(f"{setting}: expected a port number, got {port}")
    return port


def _positive(data: dict[str, Any], setting: str, default: int) -> int:
    return _at_least(1, data, setting, default)


def _at_least(low: int, data: dict[str, Any], setting: str, default: int) -> int:
    value: int = _get(data, setting, int, default)
    if value < low:
        what = "a positive whole number" if low == 1 else f"a whole number from {low}"
        raise ConfigError(f"{setting}: expected {what}, got {value}")
    return value


def _single_lines(items: list[Any], setting: str) -> tuple[str, ...]:
    if not all(isinstance(x, str) and x.strip() and not set(x) & set("\r\n\0") for x in items):
        raise ConfigError(f"{setting}: expected a list of one-line strings")
    return tuple(x.strip() for x in items)


def parse_public(data: dict[str, Any], mail_hostname: str, global_domain: str) -> PublicSettings:
    """Section [public]: every value a public page, autoconfig or MTA-STS states."""
    onion = _get(data, "public.onion_hostname", str, "")
    i2p = _get(data, "public.i2p_hostname", str, "")
    contacts = _single_lines(
        _get(data, "public.security_contact", list, [f"mailto:security@{global_domain}"]),
        "public.security_contact",
    )
    mode = _get(data, "public.mta_sts_mode", str, "enforce")
    if mode not in MTA_STS_MODES:
        raise ConfigError(f"public.mta_sts_mode: expected one of {', '.join(MTA_STS_MODES)}")
    mx = _single_lines(_get(data, "public.mta_sts_mx", list, [mail_hostname]), "public.mta_sts_mx")
    client_host = _get(data, "public.mail_hostname", str, mail_hostname)
    return PublicSettings(
        # Default: the MX name (backend.mail_hostname); the local stack says "localhost".
        mail_hostname=client_host
        if client_host == "localhost"
        else _hostname(client_host, "public.mail_hostname"),
        smtp_port=_port(data, "public.smtp_port", 25),
        imaps_port=_port(data, "public.imaps_port", 993),
        submission_port=_port(data, "public.submission_port", 587),
        submissions_port=_port(data, "public.submissions_port", 465),
        anon_imap_port=_port(data, "public.anon_imap_port", 143),
        anon_submission_port=_port(data, "public.anon_submission_port", 587),
        onion_hostname=_hostname(onion, "public.onion_hostname", ".onion") if onion else None,
        i2p_hostname=_hostname(i2p, "public.i2p_hostname", ".i2p") if i2p else None,
        # RFC 9116 wants a URI; a bare address is what an operator most likely means.
        security_contacts=tuple(f"mailto:{c}" if ":" not in c else c for c in contacts),
        caa_issuers=_single_lines(
            _get(data, "public.caa_issuers", list, list(PublicSettings.caa_issuers)),
            "public.caa_issuers",
        ),
        mta_sts_mode=mode,
        mta_sts_mx=tuple(_hostname(m, "public.mta_sts_mx") for m in mx),
        mailbox_quota_mb=_at_least(0, data, "public.mailbox_quota_mb", 0),
    )


def _operator_address(data: dict[str, Any], global_domain: str) -> str:
    """The mailbox that postmaster@, abuse@ and the report addresses are delivered to: required,
    since RFC 5321 section 4.5.1 requires a working postmaster."""
    value = _get(data, "backend.operator_address", str)
    try:
        local, domain = parse_foreign_address(value)
    except InvalidInput as exc:
        raise ConfigError(f"backend.operator_address: {value!r}: {exc}") from None
    if is_operator_address(local):
        # It would be delivered to itself: Postfix would loop on the alias.
        raise ConfigError(
            f"backend.operator_address: {value!r} is itself delivered to the operator address; "
            "use a mailbox such as operator@ or an address at another provider"
        )
    return f"{local}@{domain}"


def _absolute(value: Any, setting: str) -> Path:
    if not isinstance(value, str) or not value.startswith("/") or set(value) & set("\r\n\0"):
        raise ConfigError(f"{setting}: expected an absolute path, got {value!r}")
    return Path(value)


def _optional_path(data: dict[str, Any], setting: str) -> Path | None:
    value = _get(data, setting, str, "")
    return _absolute(value, setting) if value else None


def _command(data: dict[str, Any], setting: str) -> tuple[str, ...]:
    argv = _single_lines(_get(data, setting, list, []), setting)
    if argv and not argv[0].startswith("/"):
        raise ConfigError(f"{setting}: the program must be an absolute path, got {argv[0]!r}")
    return argv


def parse_tls(data: dict[str, Any]) -> TlsSettings:
    """Section [tls]: the served certificate and how a key rollover makes and loads the next."""
    host, _, port = _get(data, "tls.resolver", str, "127.0.0.1:53").rpartition(":")
    try:
        ipaddress.ip_address(host)
        resolver = (host, int(port))
    except ValueError:
        raise ConfigError("tls.resolver: expected IP:PORT of a validating resolver") from None
    margin = _get(data, "tls.switch_margin_seconds", int, 3600)
    if margin < 0:
        raise ConfigError("tls.switch_margin_seconds: expected 0 or more")
    return TlsSettings(
        certificate=_optional_path(data, "tls.certificate"),
        key=_optional_path(data, "tls.key"),
        issue_command=_command(data, "tls.issue_command"),
        reload_command=_command(data, "tls.reload_command"),
        resolver=resolver,
        switch_margin_seconds=margin,
    )


def _addresses(values: list[Any], setting: str) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_address(v)) for v in _single_lines(values, setting))
    except ValueError:
        raise ConfigError(f"{setting}: expected IPv4 or IPv6 addresses") from None


def parse_backup(data: dict[str, Any]) -> BackupSettings:
    """Section [backup]: where encrypted backups go, to whose key, how many stay."""
    key = _get(data, "backup.public_key", str, "")
    keep = _get(data, "backup.keep", int, BackupSettings.keep)
    if keep < 1:
        raise ConfigError(f"backup.keep: expected at least 1 (backups kept), got {keep}")
    paths = _get(data, "backup.paths", list, [])
    return BackupSettings(
        dir=_absolute(_get(data, "backup.dir", str, str(BackupSettings.dir)), "backup.dir"),
        public_key=_absolute(key, "backup.public_key") if key else None,
        keep=keep,
        paths=tuple(_absolute(p, "backup.paths") for p in paths),
    )


def parse_dkim(data: dict[str, Any]) -> DkimSettings:
    """Section [dkim]: where the signing keys live and how rotation is timed."""
    numbers = {
        name: _get(data, f"dkim.{name}", int, getattr(DkimSettings, name))
        for name in ("rotate_days", "switch_margin_seconds", "grace_seconds")
    }
    numbers["maintain_every_seconds"] = _positive(
        data, "dkim.maintain_every_seconds", DkimSettings.maintain_every_seconds
    )
    if numbers["rotate_days"] < 0 or numbers["switch_margin_seconds"] < 0:
        raise ConfigError("dkim.rotate_days and dkim.switch_margin_seconds: 0 or more")
    if numbers["grace_seconds"] < 1:
        raise ConfigError("dkim.grace_seconds: at least 1 (the old key stays published)")
    return DkimSettings(
        key_dir=_absolute(
            _get(data, "dkim.key_dir", str, str(DkimSettings.key_dir)), "dkim.key_dir"
        ),
        check_dns=_get(data, "dkim.check_dns", bool, True),
        **numbers,
    )


def parse(data: dict[str, Any], source: Path = Path("-")) -> Config:
    argon = Argon2Settings(
        memory_kib=_get(data, "keyhandler.argon2_memory_kib", int, Argon2Settings.memory_kib),
        time_cost=_get(data, "keyhandler.argon2_time_cost", int, Argon2Settings.time_cost),
        parallelism=_get(data, "keyhandler.argon2_parallelism", int, Argon2Settings.parallelism),
    )
    if argon.memory_kib < 8 * argon.parallelism or argon.time_cost < 1:
        raise ConfigError("keyhandler.argon2_*: memory_kib >= 8*parallelism and time_cost >= 1")
    secrets = _get(data, "secrets", dict)
    for name, value in secrets.items():
        if not isinstance(value, str) or not value.startswith("/"):
            raise ConfigError(f"secrets.{name}: expected an absolute file path, not a value")
    reserved = _get(data, "backend.reserved_local_parts", list, [])
    reload_cmd = _get(data, "backend.postfix_reload", list, [])
    nameservers = _get(data, "backend.dns_nameservers", list, [])
    for setting, items in (
        ("backend.reserved_local_parts", reserved),
        ("backend.postfix_reload", reload_cmd),
        ("backend.dns_nameservers", nameservers),
    ):
        if not all(isinstance(x, str) for x in items):
            raise ConfigError(f"{setting}: expected a list of strings")
    master = _get(data, "web.master_keys", str, "")
    web = WebSettings(
        global_domain=_hostname(
            _get(data, "web.global_domain", str, WebSettings.global_domain), "web.global_domain"
        ),
        panel_url=_single_lines(
            [_get(data, "web.panel_url", str, WebSettings.panel_url)], "web.panel_url"
        )[0],
        master_keys=Path(master) if master else None,
        new_accounts_enabled=bool(_get(data, "web.new_accounts_enabled", bool, False)),
        session_idle_minutes=_get(data, "web.session_idle_minutes", int, 30),
        session_absolute_hours=_get(data, "web.session_absolute_hours", int, 12),
        registration=_get(data, "web.registration", str, "open"),
        unfunded_accounts_max=_get(data, "web.unfunded_accounts_max", int, 20000),
        purge_unclaimed_hours=_get(data, "web.purge_unclaimed_hours", int, 1),
        login_failures_per_user=_get(data, "web.login_failures_per_user", int, 10),
        logins_per_user=_get(data, "web.logins_per_user", int, 30),
        argon2_slots=_get(data, "web.argon2_slots", int, max(1, (os.cpu_count() or 2) // 2)),
        price_cents_per_gb_month=_get(data, "web.price_cents_per_gb_month", int, 100),
        currency=_get(data, "web.currency", str, WebSettings.currency),
        grace_days=_get(data, "web.grace_days", int, 30),
        purge_unfunded_days=_get(data, "web.purge_unfunded_days", int, 30),
        argon2=Argon2Settings(
            memory_kib=_get(data, "web.argon2_memory_kib", int, Argon2Settings.memory_kib),
            time_cost=_get(data, "web.argon2_time_cost", int, Argon2Settings.time_cost),
            parallelism=1,
        ),
    )
    if web.registration not in REGISTRATION_MODES:
        raise ConfigError(f"web.registration: expected one of {', '.join(REGISTRATION_MODES)}")
    if web.argon2_slots < 1 or web.unfunded_accounts_max < 1:
        raise ConfigError("web.argon2_slots and web.unfunded_accounts_max: at least 1")
    db_url = _get(data, "database.url", str)
    if has_inline_password(db_url):
        raise ConfigError(f"database.url: {URL_CREDENTIAL_REFUSED}")
    milter = MilterSettings(
        socket=Path(_get(data, "milter.socket", str, str(MilterSettings.socket))),
        db_url=_get(data, "milter.db_url", str, ""),
        send_limit_recipients=_get(
            data, "milter.send_limit_recipients", int, MilterSettings.send_limit_recipients
        ),
        send_limit_window_seconds=_get(
            data, "milter.send_limit_window_seconds", int, MilterSettings.send_limit_window_seconds
        ),
    )
    if has_inline_password(milter.db_url):
        raise ConfigError(f"milter.db_url: {URL_CREDENTIAL_REFUSED}")
    if milter.send_limit_recipients < 1 or milter.send_limit_window_seconds < 1:
        raise ConfigError("milter.send_limit_*: expected positive whole numbers")
    mail_hostname = _hostname(
        _get(data, "backend.mail_hostname", str, "mail." + web.global_domain),
        "backend.mail_hostname",
    )
    return Config(
        web=web,
        milter=milter,
        backup=parse_backup(data),
        dkim=parse_dkim(data),
        zone=ZoneSettings(
            nameservers=tuple(
                _hostname(ns, "zone.nameservers")
                for ns in _single_lines(
                    _get(data, "zone.nameservers", list, []), "zone.nameservers"
                )
            ),
            addresses=_addresses(_get(data, "zone.addresses", list, []), "zone.addresses"),
            signed_dir=_optional_path(data, "zone.signed_dir"),
            dnssec_key_dir=_absolute(
                _get(data, "zone.dnssec_key_dir", str, str(ZoneSettings.dnssec_key_dir)),
                "zone.dnssec_key_dir",
            ),
        ),
        tls=parse_tls(data),
        dns_ttl=_positive(data, "backend.dns_ttl", 3600),
        public=parse_public(data, mail_hostname, web.global_domain),
        operator_address=_operator_address(data, web.global_domain),
        db_url=db_url,
        backend_socket=Path(_get(data, "backend.socket", str)),
        keyhandler_socket=Path(_get(data, "keyhandler.socket", str)),
        unlock_listen=_listen(
            _get(data, "keyhandler.unlock_listen", str), "keyhandler.unlock_listen"
        ),
        secret_files={k: Path(v) for k, v in secrets.items()},
        argon2=argon,
        mail_root=Path(_get(data, "backend.mail_root", str)),
        reserved_local_parts=frozenset(x.lower() for x in reserved),
        postfix_reload=tuple(reload_cmd),
        dns_nameservers=tuple(nameservers),
        dns_port=_get(data, "backend.dns_port", int, 53),
        mail_hostname=mail_hostname,
        pgpstage_socket=Path(_get(data, "pgpstage.socket", str, "/run/ddmail/pgpstage.sock")),
        dovecot_lmtp_socket=Path(_get(data, "pgpstage.dovecot_lmtp", str, "/run/dovecot/lmtp")),
        gnupg_binary=_get(data, "pgpstage.gnupg_binary", str, "gpg"),
        tlsrpt_socket=Path(_get(data, "tlsrpt.socket", str, "/run/ddmail-tlsrpt/tlsrpt.sock")),
        source=source,
    )


def load(path: Path | None = None) -> Config:
    """Load the deployment's config from PATH or $DDMAIL_CONFIG."""
    if path is None:
        env = os.environ.get("DDMAIL_CONFIG")
        if not env:
            raise ConfigError("no config file: pass --config or set DDMAIL_CONFIG")
        path = Path(env)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    return parse(data, path)


SQLITE_TRIAL_WARNING = (
    "database.url is SQLite: for trials and tests only (one writer at a time, no per-service "
    "roles); production uses PostgreSQL, see docs/operations.md"
)


def load_service(path: Path | None = None) -> Config:
    """A service's config at start: `load`, plus one warning when the database is SQLite."""
    cfg = load(path)
    if cfg.db_url.startswith("sqlite"):
        logging.getLogger("ddmail.config").warning(SQLITE_TRIAL_WARNING)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """`python -m ddmail_common.config FILE`: exit 0 if FILE is a valid config, else print the
    reason and exit 1 (Ansible's `validate:` of /etc/ddmail/ddmail.toml). Secret files are not
    read: they are checked by each service at start, as the user that may read them."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ddmail_common.config FILE", file=sys.stderr)
        return 2
    try:
        load(Path(args[0]))
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
