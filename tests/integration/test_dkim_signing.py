"""DKIM signing through the real stack (issue 10, DN 38): what leaves over submission carries a
signature that an independent verifier (dkimpy) accepts against exactly the TXT records
`ddmail admin dns zone` prints; a rotation switches to the next selector while the old one stays
published for its grace period; a customer domain signs with its own key, found through the
CNAMEs its domains page asks for."""

from __future__ import annotations

import re
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import dkim
import pytest

from ddmail_stack.config_file import STACK_DNS_TTL
from tests.integration.test_cli import ddmail
from tests.stackrun import TEST_ACCOUNT, RunningStack, wait_until
from tests.zonefile import parsed, txt_bytes

pytestmark = pytest.mark.postgres


def admin(stack: RunningStack, *args: str) -> str:
    result = ddmail(stack, "admin", *args, "--root", str(stack.root))
    assert result.returncode == 0, result.stderr
    return result.stdout


def dkim_keys(stack: RunningStack, domain: str) -> dict[str, str]:
    """selector -> state, from `ddmail admin dkim list`."""
    lines = [line.split("\t") for line in admin(stack, "dkim", "list").splitlines()]
    return {cols[1]: cols[2] for cols in lines if cols[0] == domain}


def active_selector(stack: RunningStack, domain: str) -> str:
    return next(sel for sel, state in dkim_keys(stack, domain).items() if state == "active")


def sign_and_capture(stack: RunningStack, sender: str, password: str) -> bytes:
    """Send a well-formed message over submission; what reached the sink."""
    marker = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "reader@example.org", f"Signed {marker}"
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=sender.split("@")[1])
    msg.set_content(f"A signed letter.\n{marker}\n")
    with stack.submit("465", sender, password) as s:
        s.send_message(msg)
    (sent,) = wait_until(lambda: stack.sink_files(marker), what="mail in the sink")
    return sent


def signature_tags(message: bytes) -> dict[str, str]:
    match = re.search(rb"^DKIM-Signature:(.*?)\r?\n(?![ \t])", message, re.M | re.S)
    assert match, "no DKIM-Signature"
    value = re.sub(rb"\s+", b"", match.group(1)).decode()
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def verifies(message: bytes, zone_text: str, cnames: dict[str, str] | None = None) -> bool:
    """dkimpy's verdict with DNS answered from the zone the operator publishes (and, for a
    customer domain, the CNAMEs the customer publishes)."""
    zone = parsed(zone_text)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        wanted = name.decode().rstrip(".")
        target = (cnames or {}).get(wanted, wanted)
        return txt_bytes(zone, target + ".")

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


def test_submitted_mail_is_signed_and_verifies_against_the_published_zone(
    stack: RunningStack,
) -> None:
    domain = stack.info["global_domain"]
    address, password = stack.new_mailbox()
    active = active_selector(stack, domain)
    sent = sign_and_capture(stack, address, password)
    tags = signature_tags(sent)
    assert (tags["d"], tags["s"], tags["a"]) == (domain, active, "rsa-sha256")
    assert "from" in tags["h"].lower().split(":")
    assert verifies(sent, admin(stack, "dns", "zone"))
    # The check can fail: a zone without this key does not verify the message.
    other = admin(stack, "dns", "zone").replace(f"{active}._domainkey", "gone._domainkey")
    assert not verifies(sent, other)


def test_the_private_keys_are_files_only_rspamd_reads_and_appear_in_no_log(
    stack: RunningStack,
) -> None:
    key_dir = Path(stack.root) / "lib" / "dkim"
    keys = sorted(key_dir.glob("*.key"))
    assert keys
    assert key_dir.group() == "_rspamd" and key_dir.stat().st_mode & 0o7777 == 0o2750
    for key in keys:
        assert (key.group(), key.stat().st_mode & 0o777) == ("_rspamd", 0o640), key
    bodies = {line for key in keys for line in key.read_text().splitlines()[1:-1]}
    logs = b"".join(p.read_bytes() for p in stack.log_dir.rglob("*") if p.is_file())
    assert not [line for line in bodies if line.encode() in logs]
    assert b"PRIVATE KEY" not in logs


def publish_operator_zone(stack: RunningStack) -> None:
    """What the operator does: serve the global domain's records `dns zone` prints."""
    assert stack.dns is not None
    domain = stack.info["global_domain"]
    lines = [
        line  # as printed, comments and all: NSD reads the zone-file syntax itself
        for line in admin(stack, "dns", "zone").splitlines()
        if not line.startswith((";", "$")) and line.split()[0].endswith(f"{domain}.")
    ]
    stack.dns.publish(domain, "\n".join(lines))


def test_rotation_switches_once_dns_serves_the_next_key_and_keeps_the_old_one_published(
    stack: RunningStack,
) -> None:
    domain = stack.info["global_domain"]
    address, password = stack.new_mailbox()
    old = active_selector(stack, domain)
    publish_operator_zone(stack)  # DNS answers, with the current key only
    started = admin(stack, "dkim", "rotate", domain)
    new = "ddm2" if old == "ddm1" else "ddm1"
    assert f"{domain}\t{new}\tpublished" in started
    assert f"{new}._domainkey.{domain}." in admin(stack, "dns", "zone")

    # The wait (the stack's DNS TTL) passes, but DNS does not serve the next key: no switch.
    time.sleep(STACK_DNS_TTL + 3)
    assert dkim_keys(stack, domain) == {old: "active", new: "published"}
    publish_operator_zone(stack)
    wait_until(
        lambda: dkim_keys(stack, domain) == {old: "retiring", new: "active"},
        timeout=30,
        what="the switch to the next key",
    )
    refused = ddmail(stack, "admin", "dkim", "rotate", domain, "--root", str(stack.root))
    assert refused.returncode == 1 and "grace period" in refused.stderr

    # rspamd re-reads the selector map within seconds; every message verifies meanwhile.
    def signed_with_new() -> bool:
        sent = sign_and_capture(stack, address, password)
        assert verifies(sent, admin(stack, "dns", "zone"))
        return signature_tags(sent)["s"] == new

    wait_until(signed_with_new, timeout=30, what="mail signed with the next selector")
    zone = admin(stack, "dns", "zone")
    assert f"{old}._domainkey.{domain}." in zone  # still in its grace period
    assert dkim_keys(stack, domain)[old] == "retiring"

    key_dir = Path(stack.root) / "lib" / "dkim"
    wait_until(
        lambda: dkim_keys(stack, domain) == {new: "active"}, timeout=40, what="the old key retired"
    )
    assert f"{old}._domainkey.{domain}." not in admin(stack, "dns", "zone")
    assert not (key_dir / f"{domain}.{old}.key").exists()


def add_verified_customer_domain(stack: RunningStack, name: str) -> dict[str, str]:
    """A customer domain proven in DNS as its owner would: claim it, publish the records the
    domains page asks for (ownership token, MX, the two DKIM CNAMEs), verify. Returns the
    CNAMEs (name -> target)."""
    assert stack.dns is not None
    client = stack.client()
    claim = client.call("POST", "/v1/domains", {"account": TEST_ACCOUNT, "name": name})
    records = client.call("GET", f"/v1/domains/records?account={TEST_ACCOUNT}")["domains"][name]
    cnames = {
        r["name"]: r["value"].rstrip(".")
        for r in records
        if r["purpose"] == "DKIM" and r["type"] == "CNAME"
    }
    zone = [f'_ddmail-verify.{name}. IN TXT "ddmail-verify={claim["token"]}"']
    zone += [f"{cname}. IN CNAME {target}." for cname, target in cnames.items()]
    stack.dns.publish(name, "\n".join(zone))
    client.call("POST", "/v1/domains/verify", {"account": TEST_ACCOUNT, "name": name})
    return cnames


def test_a_customer_domain_signs_with_its_own_key_found_through_its_cnames(
    stack: RunningStack,
) -> None:
    domain = f"c{uuid.uuid4().hex[:8]}.example"
    cnames = add_verified_customer_domain(stack, domain)
    global_domain = stack.info["global_domain"]
    assert cnames == {
        f"ddm1._domainkey.{domain}": f"ddm1.{domain}.dkim.{global_domain}",
        f"ddm2._domainkey.{domain}": f"ddm2.{domain}.dkim.{global_domain}",
    }
    # The domains page's view: DNS serves both CNAMEs.
    records = stack.client().call("GET", f"/v1/domains/records?account={TEST_ACCOUNT}")
    dkim_rows = [r for r in records["domains"][domain] if r["purpose"] == "DKIM"]
    assert [r["ok"] for r in dkim_rows] == [True, True], dkim_rows
    wait_until(lambda: dkim_keys(stack, domain) == {"ddm1": "active"}, what="the domain's key")
    made: dict[str, Any] = stack.client().call(
        "POST", "/v1/mailboxes", {"account": TEST_ACCOUNT, "address": f"me@{domain}"}
    )

    # rspamd reads the new domain's selector from its map within rspamd_map_watch_interval
    # (2 s in the stack); until then a message leaves unsigned, never with a wrong key.
    def signed() -> bytes | None:
        sent = sign_and_capture(stack, made["address"], made["password"])
        return sent if b"DKIM-Signature:" in sent else None

    sent = wait_until(signed, timeout=30, what="mail signed with the domain's key")
    tags = signature_tags(sent)
    assert (tags["d"], tags["s"]) == (domain, "ddm1")
    zone = admin(stack, "dns", "zone")
    assert verifies(sent, zone, cnames)
    # Its own key: the global domain's record does not verify it.
    own_record = f"ddm1.{domain}.dkim.{global_domain}"
    assert txt_bytes(parsed(zone), own_record + ".") != txt_bytes(
        parsed(zone), f"ddm1._domainkey.{global_domain}."
    )


def _backend_processes(stack: RunningStack) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, thread count) of this stack's ddmail-backend processes."""
    config = str(stack.root / "etc" / "ddmail.toml").encode()
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
            continue
        if any(a.endswith(b"/ddmail-backend") for a in argv) and config in argv:
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            found[int(proc.name)] = (int(fields["PPid"]), int(fields["Threads"]))
    return found


def test_the_backend_job_loop_runs_only_in_the_process_that_serves_requests(
    stack: RunningStack,
) -> None:
    """Regression: the app was made in gunicorn's arbiter before the fork, so its job loop ran
    there too, beside the worker's requests; two processes then made the same new domain's DKIM
    key and verifying the domain failed with a 500 now and then."""
    procs = _backend_processes(stack)
    arbiters = [pid for pid, (ppid, _) in procs.items() if ppid not in procs]
    assert len(arbiters) == 1 and len(procs) == 2, procs
    assert procs[arbiters[0]][1] == 1  # gunicorn's arbiter is single-threaded

    names = [f"b{uuid.uuid4().hex[:8]}.example" for _ in range(12)]
    for name in names:
        add_verified_customer_domain(stack, name)
    for name in names:
        assert list(dkim_keys(stack, name).values()) == ["active"]
