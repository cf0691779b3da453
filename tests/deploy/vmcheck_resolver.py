"""Checks of the outbound DANE / MTA-STS path, run INSIDE the booted deployment VM by
vmcheck.py (roles unbound and mta_sts_resolver, issue 11). Standard library only, like
vmcheck.py; the DNSSEC part runs its signing script with the deployment's own virtualenv
(dnspython and cryptography are DDMail dependencies).

What they show: Unbound and mta-sts-daemon run, each confined by its AppArmor profile in
enforce mode; Unbound accepts its configuration and listens on loopback only; the host's
resolv.conf names it with trust-ad after a real boot; Postfix's client is set to DANE with
DNSSEC lookups and asks the MTA-STS socketmap, which answers at once offline; no query name
reaches the journal. Then, offline: Unbound validates a zone signed in the VM (served from an
auth-zone, its DS as trust anchor) and Postfix's own DANE client (posttls-finger) verifies
the VM's port 25 against a TLSA record in it, and refuses to with a wrong one."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# unit -> the label its main process must carry (/proc/PID/attr/current).
RESOLVER_UNITS = {
    "unbound.service": "unbound (enforce)",  # Debian's profile, usr.sbin.unbound
    "postfix-mta-sts-resolver.service": "ddmail-mta-sts-daemon (enforce)",
}
UNBOUND_CONF = Path("/etc/unbound/unbound.conf")
SOCKETMAP = "socketmap:inet:127.0.0.1:8461:postfix"
# An address put on lo for the check: Unbound must not answer there.
NOT_LOOPBACK = "192.0.2.53"
VENV_PYTHON = "/opt/ddmail/venv/bin/python3"
CI_DIR = Path("/etc/unbound/ci")  # inside /etc/unbound: Unbound's profile reads it

SIGN = r"""
import json, smtplib, ssl, sys
from datetime import UTC, datetime, timedelta
import dns.dnssec, dns.dnssectypes, dns.zone
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

# The key the VM's port 25 actually presents (over STARTTLS), as DANE-EE 3 1 1 sees it.
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", 25, timeout=60) as smtp:
    smtp.starttls(context=ctx)
    der = smtp.sock.getpeercert(binary_form=True)
spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
digest = hashes.Hash(hashes.SHA256()); digest.update(spki); good = digest.finalize().hex()
now = datetime.now(UTC)
out = {"digest": good, "zones": {}}
for apex, tlsa in ((sys.argv[1], good), (sys.argv[2], "00" * 32)):
    text = (
        f"{apex} 300 IN SOA ns.{apex} hostmaster.{apex} 1 3600 600 86400 300\n"
        f"{apex} 300 IN NS ns.{apex}\nns.{apex} 300 IN A 127.0.0.1\n"
        f"{apex} 300 IN MX 10 mail.{apex}\nmail.{apex} 300 IN A 127.0.0.1\n"
        f"_25._tcp.mail.{apex} 300 IN TLSA 3 1 1 {tlsa}\n"
    )
    zone = dns.zone.from_text(text, origin=apex, relativize=False)
    keys = []
    for flags in (257, 256):
        key = ec.generate_private_key(ec.SECP256R1())
        alg = dns.dnssectypes.Algorithm.ECDSAP256SHA256
        keys.append((key, dns.dnssec.make_dnskey(key.public_key(), alg, flags)))
    dns.dnssec.sign_zone(zone, keys=keys, dnskey_ttl=300,
                         inception=now - timedelta(hours=1), expiration=now + timedelta(days=2))
    out["zones"][apex] = {"text": zone.to_text(relativize=False),
                          "ds": str(dns.dnssec.make_ds(apex, keys[0][1], "SHA256"))}
print(json.dumps(out))
"""

ASK = r"""
import json, sys
import dns.flags, dns.message, dns.query, dns.rcode
q = dns.message.make_query(sys.argv[1], sys.argv[2], want_dnssec=True)
q.flags |= dns.flags.AD
r = dns.query.udp(q, "127.0.0.1", timeout=20)
print(json.dumps({"rcode": dns.rcode.to_text(r.rcode()), "ad": bool(r.flags & dns.flags.AD),
                  "answer": [str(a) for a in r.answer]}))
"""


def run(*argv: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def dns_query(server: str, name: str, timeout: float = 10) -> int:
    """One A query over UDP (standard library); the answer's RCODE."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split("."))
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + b"\0\0\1\0\1"
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        sock.send(packet)
        answer = sock.recv(4096)
    got_id, flags = struct.unpack(">HH", answer[:4])
    assert got_id == ident, "an answer to another question"
    return int(flags) & 0xF


def listeners_on_53() -> list[str]:
    """Local addresses of every socket bound to port 53 (TCP: listening only)."""
    found = []
    for table in ("udp", "udp6", "tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, _, port = fields[1].partition(":")
            if int(port, 16) != 53 or (table.startswith("tcp") and fields[3] != "0A"):
                continue
            raw = bytes.fromhex(address)
            if len(raw) == 4:
                text = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                text = socket.inet_ntop(socket.AF_INET6, words)
            found.append(f"{table} {text}")
    return found


def journal_text() -> str:
    run("journalctl", "--sync", check=False)
    return run("journalctl", "-b", "--no-pager", "-o", "cat", check=False).stdout


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # keep trying until the deadline
            last = exc
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


def units_confined(units: dict[str, str]) -> str:
    """Each of UNITS active, its main process under the AppArmor label given."""
    labels = {}
    for unit, wanted in units.items():
        show = run("systemctl", "show", "-P", "MainPID", "-P", "ActiveState", unit).stdout
        pid, state = show.split()
        label = Path(f"/proc/{pid}/attr/current").read_text().strip()
        labels[unit] = f"{state} pid {pid}: {label}"
        assert state == "active" and label == wanted, labels
    return json.dumps(labels)


class Resolver:
    """The checks, in the order vmcheck.py runs them (add_address: vmcheck's rtnetlink helper,
    iproute2 may be missing)."""

    def __init__(self, add_address: Callable[[str], None]) -> None:
        self.add_address = add_address
        self.marker = uuid.uuid4().hex[:16]  # in every name these checks look up

    def confined(self) -> str:
        return units_confined(RESOLVER_UNITS)

    def checkconf(self) -> str:
        return run("unbound-checkconf").stdout.strip()

    def loopback_only(self) -> str:
        listeners = listeners_on_53()
        assert listeners and all(line.endswith((" 127.0.0.1", " ::1")) for line in listeners), (
            listeners
        )
        answers = {server: dns_query(server, f"l{self.marker}.example.org") for server in
                   ("127.0.0.1", "::1")}  # fmt: skip
        self.add_address(NOT_LOOPBACK)
        try:
            code = dns_query(NOT_LOOPBACK, f"n{self.marker}.example.org", timeout=5)
            raise AssertionError(f"{NOT_LOOPBACK}:53 answered (rcode {code})")
        except (ConnectionRefusedError, TimeoutError) as exc:
            refused = type(exc).__name__
        return f"listening: {listeners}; rcodes {answers}; {NOT_LOOPBACK}:53: {refused}"

    def resolv_conf(self) -> str:
        path = Path("/etc/resolv.conf")
        assert not path.is_symlink(), os.readlink(path)
        lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
        assert lines == ["nameserver 127.0.0.1", "options edns0 trust-ad"], lines
        return " / ".join(lines)

    def postfix(self) -> str:
        names = ("smtp_tls_security_level", "smtp_dns_support_level", "smtp_tls_policy_maps")
        got = run("postconf", "-h", *names).stdout.splitlines()
        assert got == ["dane", "dnssec", SOCKETMAP], got
        return " ".join(got)

    def socketmap(self) -> str:
        """Offline, the policy lookup of a domain fails (no _mta-sts record can be fetched) and
        the map answers "not found" at once: Postfix goes on with DANE or opportunistic TLS."""
        started = time.monotonic()
        done = run("postmap", "-q", f"m{self.marker}.example.net", SOCKETMAP, check=False)
        seconds = time.monotonic() - started
        assert done.returncode == 1 and not done.stdout and not done.stderr, done
        assert seconds < 15, seconds
        return f"not found in {seconds:.1f} s (rc {done.returncode})"

    def nothing_logged(self) -> str:
        """The names just looked up (through Unbound directly and through the socketmap) are
        nowhere in the journal: neither resolver logs what the host asks."""
        text = journal_text()
        assert self.marker not in text, [ln for ln in text.splitlines() if self.marker in ln]
        return f"{len(text.splitlines())} journal lines, none with the names looked up"

    def dane(self) -> str:
        """Offline DNSSEC and DANE through the deployment's own resolver and resolv.conf: two
        zones signed here, served by Unbound from auth-zones with their DS as trust anchors
        (as a registrar's parent zone would vouch for them): one names the key port 25
        presents, the other a wrong digest. Unbound answers the first with AD; Postfix's
        posttls-finger (DANE, DNSSEC lookups through glibc and trust-ad) verifies port 25
        through it and not through the other. Unbound's own configuration is put back."""
        good, wrong = f"dane{self.marker[:6]}-ci.", f"wrong{self.marker[:6]}-ci."
        # Port 25 answers STARTTLS once rspamd's milter is up (454 until then, seen in the VM).
        signed = json.loads(
            wait_for(
                "port 25's key over STARTTLS",
                lambda: run(VENV_PYTHON, "-c", SIGN, good, wrong).stdout,
                timeout=240,
            )
        )
        original = UNBOUND_CONF.read_bytes()
        CI_DIR.mkdir(mode=0o755, exist_ok=True)
        conf = ["server:"]
        for apex, zone in signed["zones"].items():
            (CI_DIR / f"{apex}zone").write_text(zone["text"])
            conf.append(f'    trust-anchor: "{apex} DS {zone["ds"]}"')
        for apex in signed["zones"]:
            conf += [
                "auth-zone:",
                f'    name: "{apex}"',
                f'    zonefile: "{CI_DIR}/{apex}zone"',
                "    for-upstream: yes",
                "    for-downstream: no",
                "    fallback-enabled: no",
            ]
        (CI_DIR / "dnssec.conf").write_text("\n".join(conf) + "\n")
        try:
            UNBOUND_CONF.write_bytes(original + f'\ninclude: "{CI_DIR}/dnssec.conf"\n'.encode())
            run("unbound-checkconf")
            run("systemctl", "restart", "unbound.service")
            tlsa = f"_25._tcp.mail.{good}"

            def ask(name: str, rtype: str) -> dict[str, Any]:
                out: dict[str, Any] = json.loads(run(VENV_PYTHON, "-c", ASK, name, rtype).stdout)
                return out

            answer = wait_for("Unbound's answer", lambda: ask(tlsa, "TLSA"), timeout=60)
            assert answer["rcode"] == "NOERROR" and answer["ad"], answer
            assert signed["digest"] in " ".join(answer["answer"]).replace(" ", ""), answer
            finger = ["posttls-finger", "-c", "-l", "dane", "-t", "30", "-T", "30"]

            def verified() -> str:
                done = run(*finger, good.rstrip("."), check=False)
                out = done.stdout + done.stderr
                assert "Verified TLS connection established" in out, out
                return out

            out = str(wait_for("posttls-finger's verified session", verified, timeout=120))
            refused = run(*finger, wrong.rstrip("."), check=False)
            bad = refused.stdout + refused.stderr
            assert "Verified TLS connection established" not in bad, bad
            assert "TLS" in bad, bad
            denied = [
                ln
                for ln in journal_text().splitlines()
                if 'apparmor="DENIED"' in ln and "unbound" in ln
            ]
            assert not denied, denied
            return (
                f"{tlsa} TLSA: AD; posttls-finger {good}: "
                + next(ln for ln in out.splitlines() if "Verified" in ln)
                + f"; {wrong}: "
                + " | ".join(bad.strip().splitlines()[-3:])
            )
        finally:
            UNBOUND_CONF.write_bytes(original)
            for path in CI_DIR.iterdir():
                path.unlink()
            CI_DIR.rmdir()
            run("systemctl", "restart", "unbound.service", check=False)
            wait_for("Unbound back", lambda: run("unbound-control", "status", check=False)
                     .returncode == 0)  # fmt: skip
