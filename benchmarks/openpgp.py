"""OpenPGP on arrival: `.venv/bin/python -m benchmarks.openpgp [--quick]`.

One real local stack (`ddmail stack up`: Postfix → ddmail-pgpstage → Dovecot, on 127.0.0.1)
with two mailboxes: one with an activated OpenPGP key (ed25519/cv25519, made with gpg in a
temporary home), one without. Measured over loopback, side by side with the reference
service's encryptor on this machine type:

1. messages/s stored (files in the maildir's new/ + cur/) over 1 and over 4 parallel SMTP
   connections to the MX port, PGP mailbox and plain mailbox alternating, median of the rounds;
2. send → stored latency of single messages over one connection (p50/p90);
3. the delivery stage's CPU time per message (its own utime+stime plus its reaped children's,
   i.e. gpg: /proc/<pid>/stat), PGP run minus plain run = the CPU that encryption adds;
4. refusals and losses: every SMTP transaction must be answered 250, every message stored once,
   and Postfix must log no deferral or bounce (counted, and part of the verdict);
5. that a stored PGP message really is PGP/MIME: fetched over IMAPS with the mailbox password,
   Content-Type multipart/encrypted, Subject "...", and it decrypts with the private key.

Bounded and not part of the test suite. The stack runs under /tmp/ddb-*, the key's GnuPG home is
/tmp/ddb-gpg-*; both are removed at the end (the stack root is kept for its logs if the run
fails), and the gpg-agent that key generation and decryption start is stopped
(`gpgconf --homedir H --kill all`). Prints a table and writes docs/performance-openpgp.md
(docs/performance.md is rewritten whole by benchmarks.mail, which would drop a section there).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import email
import email.message
import email.utils
import imaplib
import os
import platform
import re
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gnupg

from benchmarks import report, stacks
from benchmarks.mail import BODY, SENDER

PORT_BASE = 43000
OUTPUT = stacks.REPO / "docs" / "performance-openpgp.md"
CONNECTIONS = (1, 4)
DELIVERY_TIMEOUT = 300.0  # per run, until every message is stored
LOG_LAG = 15.0  # for Postfix's status lines to reach postfix.log after the last file
FLUSH_EVERY = 5.0  # s between `postqueue -f` once a deferral was logged
TICK = os.sysconf("SC_CLK_TCK")
# postfix.log: the queue id of each message (by our Message-ID), then its delivery results.
CLEANUP = re.compile(r"postfix/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=<([^>]*)>")
RESULT = re.compile(r"\]: ([0-9A-Za-z]+): to=<[^>]*>,.*? status=([a-z]+)")
# The reference service's encryptor alone, measured on this machine type (2 cores).
BASE_P50 = 0.049  # s per message, one connection
BASE_CPU = 0.041  # s CPU per message
BASE_BOUNCED = 0.034  # share of messages bounced (500) under 4 parallel connections
# Targets.
CPU_ADDED_TARGET = 0.015  # s CPU per message added by encryption


@dataclass(frozen=True)
class Sizes:
    messages: int  # per run
    rounds: int  # runs per mailbox and connection count (median reported)
    latency: int  # single messages per mailbox for the latency figures


FULL = Sizes(messages=300, rounds=3, latency=40)
QUICK = Sizes(messages=100, rounds=1, latency=20)


@dataclass(frozen=True)
class Mailbox:
    kind: str  # "pgp" or "plain"
    address: str
    password: str


@dataclass
class Run:
    kind: str
    connections: int
    messages: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # in our Message-IDs
    accepted_s: float = 0.0  # first connect → last 250 after DATA
    stored_s: float = 0.0  # first connect → last file in the maildir
    answered_250: int = 0
    refused: list[str] = field(default_factory=list)  # SMTP replies other than 250
    stored: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # Postfix status=... per delivery
    flushes: int = 0
    stage_own_s: float = 0.0  # CPU of the stage process (all its threads)
    stage_children_s: float = 0.0  # CPU of its reaped children (gpg)
    system_busy_s: float = 0.0  # CPU of the whole machine (both cores, everything)

    @property
    def rate(self) -> float:
        return self.messages / self.stored_s

    @property
    def lost(self) -> int:
        return max(self.messages - self.stored, 0)

    @property
    def extra(self) -> int:  # stored more than once
        return max(self.stored - self.messages, 0)

    @property
    def clean(self) -> bool:
        return (
            self.answered_250 == self.messages
            and not self.refused
            and self.stored == self.messages
            and self.statuses["sent"] == self.messages
            and set(self.statuses) == {"sent"}
        )

    def cpu_per_message(self) -> float:
        return (self.stage_own_s + self.stage_children_s) / self.messages


# -- the recipient's key -----------------------------------------------------------------------


def make_key(home: Path, uid: str) -> bytes:
    """An ed25519 signing key with a cv25519 encryption subkey in HOME; its public key."""
    gpg = ["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--pinentry-mode"]
    gpg.append("loopback")
    subprocess.run(
        [*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"], check=True, capture_output=True
    )
    fingerprint = gnupg.GPG(gnupghome=str(home)).list_keys()[0]["fingerprint"]
    subprocess.run(
        [*gpg, "--quick-add-key", fingerprint, "cv25519", "encr", "never"],
        check=True,
        capture_output=True,
    )
    return bytes(gnupg.GPG(gnupghome=str(home)).export_keys(fingerprint).encode())


def activate(stack: stacks.Stack, address: str, public: bytes) -> str:
    client = stack.client()
    made = client.call(
        "POST", "/v1/openpgp/keys", {"account": stacks.ACCOUNT, "key": public.decode()}
    )
    client.call(
        "POST",
        "/v1/openpgp/activate",
        {"account": stacks.ACCOUNT, "address": address, "fingerprint": made["fingerprint"]},
    )
    return str(made["fingerprint"])


def stop_agent(home: Path) -> None:
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True
    )


# -- counters ----------------------------------------------------------------------------------


def stage_pid(stack: stacks.Stack) -> int:
    pid = int((stack.layout.run / "pgpstage.pid").read_text().split()[0])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    if b"ddmail-pgpstage" not in cmdline:
        raise RuntimeError(f"pid {pid} of run/pgpstage.pid is not ddmail-pgpstage")
    return pid


def process_cpu(pid: int) -> tuple[float, float]:
    """(utime+stime of all threads, cutime+cstime of reaped children) of PID, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def system_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / TICK


def count_stored(stack: stacks.Stack, address: str) -> int:
    local, domain = address.split("@")
    maildir = stack.layout.mail_root / domain / local / "Maildir"
    count = 0
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            count += len(os.listdir(maildir / sub))
    return count


def postfix_log(stack: stacks.Stack) -> Path:
    return stack.layout.log_dir / "postfix.log"


def statuses(stack: stacks.Stack, offset: int, tag: str) -> Counter[str]:
    """Postfix's delivery results (status=sent, deferred, bounced) logged after OFFSET in
    postfix.log for the messages whose Message-ID carries TAG (found by their queue ids)."""
    with postfix_log(stack).open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    ours = {m[1] for m in CLEANUP.finditer(text) if m[2].startswith(f"{tag}.")}
    return Counter(m[2] for m in RESULT.finditer(text) if m[1] in ours)


def flush_queue(stack: stacks.Stack) -> None:
    subprocess.run(
        ["postqueue", "-c", str(stack.layout.postfix_dir), "-f"], check=False, capture_output=True
    )


# -- sending -----------------------------------------------------------------------------------


def message(tag: str, i: int, to: str) -> bytes:
    """About 4 KiB, as benchmarks.mail sends, with a Message-ID that names its run."""
    head = (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: benchmark {i}\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{tag}.{i}@bench.example.org>\r\n"
    )
    return (head + "\r\n" + BODY).encode()


def send(port: int, to: str, numbers: range, tag: str) -> tuple[int, list[str]]:
    """NUMBERS as messages over one SMTP session: (transactions answered 250, other replies)."""
    ok = 0
    refused: list[str] = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("bench.example.org")
        for i in numbers:
            try:
                rejected = smtp.sendmail(SENDER, [to], message(tag, i, to))
            except smtplib.SMTPRecipientsRefused as exc:
                refused += [f"{code} {text!r}" for code, text in exc.recipients.values()]
                continue
            except smtplib.SMTPResponseException as exc:  # MAIL or DATA not answered 250
                refused.append(f"{exc.smtp_code} {exc.smtp_error!r}")
                continue
            if rejected:
                refused += [f"{code} {text!r}" for code, text in rejected.values()]
            else:
                ok += 1
    return ok, refused


def deliver(stack: stacks.Stack, box: Mailbox, messages: int, connections: int) -> Run:
    """MESSAGES to BOX over CONNECTIONS parallel SMTP sessions, until all are stored (or
    DELIVERY_TIMEOUT); counts replies, files, Postfix's results and the stage's CPU."""
    run = Run(box.kind, connections, messages)
    pid = stage_pid(stack)
    before = count_stored(stack, box.address)
    log_offset = postfix_log(stack).stat().st_size
    share = messages // connections
    parts = [range(k * share, messages if k == connections - 1 else (k + 1) * share)
             for k in range(connections)]  # fmt: skip
    own0, children0 = process_cpu(pid)
    busy0 = system_busy()
    start = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        port = stack.layout.smtp_port
        futures = [pool.submit(send, port, box.address, p, run.tag) for p in parts]
        for future in futures:
            ok, refused = future.result()
            run.answered_250 += ok
            run.refused += refused
    run.accepted_s = time.perf_counter() - start
    deadline = start + DELIVERY_TIMEOUT
    expected = run.answered_250
    next_look = last_flush = 0.0
    while count_stored(stack, box.address) - before < expected:
        now = time.perf_counter()
        if now > deadline:
            break
        if now >= next_look:  # a deferral waits for Postfix's backoff: retry it at once
            next_look = now + 1.0
            if statuses(stack, log_offset, run.tag)["deferred"] and now - last_flush > (
                FLUSH_EVERY
            ):
                flush_queue(stack)
                run.flushes += 1
                last_flush = now
        time.sleep(0.02)
    run.stored_s = time.perf_counter() - start
    own1, children1 = process_cpu(pid)
    run.system_busy_s = system_busy() - busy0
    run.stage_own_s, run.stage_children_s = own1 - own0, children1 - children0
    time.sleep(0.5)  # anything stored late (twice?) shows up in the count
    run.stored = count_stored(stack, box.address) - before
    log_deadline = time.perf_counter() + LOG_LAG
    while True:
        run.statuses = statuses(stack, log_offset, run.tag)
        done = sum(run.statuses.values()) - run.statuses["deferred"]
        if done >= run.answered_250 or time.perf_counter() > log_deadline:
            break
        time.sleep(0.2)
    return run


def latencies(stack: stacks.Stack, boxes: list[Mailbox], count: int) -> dict[str, list[float]]:
    """COUNT single messages per mailbox, alternating, each over a held SMTP session: from
    sendmail() to the file in the maildir."""
    out: dict[str, list[float]] = {box.kind: [] for box in boxes}
    tag = uuid.uuid4().hex[:12]
    sessions = {box.kind: smtplib.SMTP("127.0.0.1", stack.layout.smtp_port, timeout=60)
                for box in boxes}  # fmt: skip
    try:
        for smtp in sessions.values():
            smtp.ehlo("bench.example.org")
        for i in range(count):
            for box in boxes if i % 2 == 0 else boxes[::-1]:
                before = count_stored(stack, box.address)
                raw = message(tag, i, box.address)
                start = time.perf_counter()
                sessions[box.kind].sendmail(SENDER, [box.address], raw)
                deadline = start + 60
                while count_stored(stack, box.address) <= before:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"a single message to {box.kind} not stored in 60 s")
                    time.sleep(0.0005)
                out[box.kind].append(time.perf_counter() - start)
    finally:
        for smtp in sessions.values():
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
    return out


# -- what was stored ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    pgp_content_type: str
    pgp_protocol: str
    pgp_subject: str
    pgp_decrypts: bool
    inner_subject: str
    plain_content_type: str
    plain_subject: str

    @property
    def ok(self) -> bool:
        return (
            self.pgp_content_type == "multipart/encrypted"
            and self.pgp_protocol == "application/pgp-encrypted"
            and self.pgp_subject == "..."
            and self.pgp_decrypts
            and self.inner_subject.startswith("benchmark ")
            and self.plain_content_type != "multipart/encrypted"
            and self.plain_subject.startswith("benchmark ")
        )


def fetch_last(stack: stacks.Stack, box: Mailbox) -> email.message.Message:
    tls = ssl.create_default_context(cafile=str(stack.layout.ca_cert))
    with imaplib.IMAP4_SSL("127.0.0.1", stack.layout.imaps_port, ssl_context=tls) as imap:
        imap.login(box.address, box.password)
        imap.select("INBOX", readonly=True)
        status, data = imap.fetch("*", "(BODY.PEEK[])")
        imap.logout()
    part = data[0]
    if status != "OK" or not isinstance(part, tuple):
        raise RuntimeError(f"FETCH from the {box.kind} mailbox answered {status}")
    return email.message_from_bytes(part[1])


def check_stored(stack: stacks.Stack, pgp: Mailbox, plain: Mailbox, home: Path) -> Check:
    outer = fetch_last(stack, pgp)
    parts = outer.get_payload()
    decrypted = None
    last = parts[-1] if isinstance(parts, list) and parts else None
    if outer.get_content_type() == "multipart/encrypted" and isinstance(
        last, email.message.Message
    ):
        decrypted = gnupg.GPG(gnupghome=str(home)).decrypt(last.get_payload(decode=True))
    inner = email.message_from_bytes(decrypted.data) if decrypted and decrypted.ok else None
    other = fetch_last(stack, plain)
    return Check(
        pgp_content_type=outer.get_content_type(),
        pgp_protocol=str(outer.get_param("protocol") or ""),
        pgp_subject=str(outer["Subject"]),
        pgp_decrypts=inner is not None,
        inner_subject=str(inner["Subject"]) if inner is not None else "",
        plain_content_type=other.get_content_type(),
        plain_subject=str(other["Subject"]),
    )


# -- the whole run -----------------------------------------------------------------------------


@dataclass
class Results:
    sizes: Sizes
    load_before: float
    load_after: float = 0.0
    runs: list[Run] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)
    check: Check | None = None

    def of(self, kind: str, connections: int) -> list[Run]:
        return [r for r in self.runs if r.kind == kind and r.connections == connections]

    def rate(self, kind: str, connections: int) -> tuple[float, float, float]:
        rates = [r.rate for r in self.of(kind, connections)]
        return statistics.median(rates), min(rates), max(rates)

    def accepted(self, kind: str, connections: int) -> float:
        return statistics.median(r.messages / r.accepted_s for r in self.of(kind, connections))

    def cpu(self, kind: str, connections: int) -> float:
        return statistics.median(r.cpu_per_message() for r in self.of(kind, connections))

    def cpu_split(self, kind: str, connections: int) -> tuple[float, float]:
        runs = self.of(kind, connections)
        own = statistics.median(r.stage_own_s / r.messages for r in runs)
        children = statistics.median(r.stage_children_s / r.messages for r in runs)
        return own, children

    def system_cpu(self, kind: str, connections: int) -> float:
        return statistics.median(r.system_busy_s / r.messages for r in self.of(kind, connections))

    def added_cpu(self, connections: int) -> float:
        return self.cpu("pgp", connections) - self.cpu("plain", connections)

    def faults(self, kind: str, connections: int) -> dict[str, int]:
        runs = self.of(kind, connections)
        return {
            "sent": sum(r.messages for r in runs),
            "250": sum(r.answered_250 for r in runs),
            "refused": sum(len(r.refused) for r in runs),
            "stored": sum(r.stored for r in runs),
            "lost": sum(r.lost for r in runs),
            "extra": sum(r.extra for r in runs),
            "deferred": sum(r.statuses["deferred"] for r in runs),
            "bounced": sum(r.statuses["bounced"] for r in runs),
        }

    def checks(self) -> dict[str, bool]:
        return {
            "CPU": all(self.added_cpu(n) <= CPU_ADDED_TARGET for n in CONNECTIONS),
            "refused or lost": all(r.clean for r in self.runs),
            "PGP/MIME": self.check is not None and self.check.ok,
        }

    def verdict(self) -> str:
        failed = [name for name, ok in self.checks().items() if not ok]
        return "all targets met" if not failed else "MISSED: " + ", ".join(failed)


def run(sizes: Sizes) -> Results:
    results = Results(sizes, os.getloadavg()[0])
    if results.load_before > 0.5:
        print(f"warning: load average {results.load_before:.2f} before the run; figures noisy")
    stack: stacks.Stack | None = None
    home = Path(tempfile.mkdtemp(prefix="ddb-gpg-", dir="/tmp"))
    ok = False
    try:
        stack = stacks.start(PORT_BASE, plain=False)
        print(f"stack up in {stack.root}; key in {home}", flush=True)
        address, password = stack.new_mailbox()
        pgp = Mailbox("pgp", address, password)
        fingerprint = activate(stack, address, make_key(home, f"Bench <{address}>"))
        plain = Mailbox("plain", *stack.new_mailbox())
        print(f"  {pgp.address}: key {fingerprint} active; {plain.address}: no key", flush=True)
        for box in (pgp, plain):  # warm-up: Postfix processes, the stage's key home, Dovecot
            warm = deliver(stack, box, 10, 1)
            if not warm.clean:
                raise RuntimeError(f"warm-up to {box.kind} failed: {warm}")
        print(f"latency: {sizes.latency} single messages per mailbox", flush=True)
        results.latency = latencies(stack, [pgp, plain], sizes.latency)
        print(f"delivery: {sizes.messages} messages per run, {sizes.rounds} round(s)", flush=True)
        for round_number in range(sizes.rounds):
            order = (pgp, plain) if round_number % 2 == 0 else (plain, pgp)
            for connections in CONNECTIONS:
                for box in order:
                    one = deliver(stack, box, sizes.messages, connections)
                    results.runs.append(one)
                    faults = "" if one.clean else "  NOT CLEAN: " + describe(one)
                    print(
                        f"  {box.kind:5} {connections} conn. {one.rate:6.1f} msg/s stored,"
                        f" stage CPU {one.cpu_per_message() * 1000:5.1f} ms/msg{faults}",
                        flush=True,
                    )
        results.check = check_stored(stack, pgp, plain, home)
        ok = True
    finally:
        stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)
        if stack is not None:
            stacks.stop(stack, remove=ok)
        if not ok:
            print("failed; the stack root is kept for its logs", file=sys.stderr)
    results.load_after = os.getloadavg()[0]
    return results


def describe(r: Run) -> str:
    return (
        f"{r.answered_250}/{r.messages} answered 250, refused {r.refused[:3]}, stored"
        f" {r.stored}, Postfix {dict(r.statuses)}, {r.flushes} queue flush(es)"
    )


# -- report ------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _ok(flag: bool) -> str:
    return "pass" if flag else "FAIL"


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[q // 10 - 1]


def rows(r: Results) -> list[tuple[str, ...]]:
    """(measure, PGP mailbox, plain mailbox, baseline, target, verdict) per line."""
    out: list[tuple[str, ...]] = []
    for n in CONNECTIONS:
        cells = []
        for kind in ("pgp", "plain"):
            median, low, high = r.rate(kind, n)
            cells.append(f"{median:.1f}" + (f" ({low:.0f}-{high:.0f})" if high > low else ""))
        ratio = r.rate("pgp", n)[0] / r.rate("plain", n)[0]
        out.append((f"stored, {n} SMTP conn. (msg/s)", *cells, "", "", f"ratio {ratio:.2f}"))
        out.append(
            (
                f"  SMTP accepted, {n} conn. (msg/s)",
                f"{r.accepted('pgp', n):.1f}",
                f"{r.accepted('plain', n):.1f}",
                "",
                "",
                "",
            )
        )
    lat = r.latency
    out.append(
        (
            "send → stored, 1 conn., p50",
            ms(p(lat["pgp"], 50)),
            ms(p(lat["plain"], 50)),
            f"{ms(BASE_P50)} (encryptor alone)",
            "",
            f"+{ms(p(lat['pgp'], 50) - p(lat['plain'], 50))} for PGP",
        )
    )
    out.append(
        (
            "  send → stored, 1 conn., p90",
            ms(p(lat["pgp"], 90)),
            ms(p(lat["plain"], 90)),
            "",
            "",
            "",
        )
    )
    for n in CONNECTIONS:
        added = r.added_cpu(n)
        out.append(
            (
                f"stage CPU per message, {n} conn.",
                ms(r.cpu("pgp", n)),
                ms(r.cpu("plain", n)),
                f"{ms(BASE_CPU)}",
                "",
                "",
            )
        )
        own, children = r.cpu_split("pgp", n)
        plain_own, _ = r.cpu_split("plain", n)
        out.append(
            (
                f"  of it stage process / gpg, {n} conn.",
                f"{ms(own)} / {ms(children)}",
                f"{ms(plain_own)} / -",
                "",
                "",
                "",
            )
        )
        out.append(
            (
                f"  added by encryption, {n} conn.",
                ms(added),
                "",
                "",
                f"<= {ms(CPU_ADDED_TARGET)}",
                _ok(added <= CPU_ADDED_TARGET),
            )
        )
        out.append(
            (
                f"  whole machine CPU per message, {n} conn.",
                ms(r.system_cpu("pgp", n)),
                ms(r.system_cpu("plain", n)),
                "",
                "",
                "",
            )
        )
    for n in CONNECTIONS:
        cells = []
        for kind in ("pgp", "plain"):
            f = r.faults(kind, n)
            bad = f["refused"] + f["deferred"] + f["bounced"]
            cells.append(
                f"{bad} / {f['lost']} of {f['sent']} ({f['refused']} SMTP, {f['deferred']}"
                f" deferred, {f['bounced']} bounced; {f['extra']} stored twice)"
            )
        clean = all(run.clean for run in r.runs if run.connections == n)
        base = f"{BASE_BOUNCED * 100:.1f} % bounced (500)" if n == 4 else ""
        out.append((f"refused / lost, {n} conn.", *cells, base, "0 / 0", _ok(clean)))
    c = r.check
    if c is not None:
        out.append(
            (
                "stored message (IMAPS)",
                f"{c.pgp_content_type}; Subject {c.pgp_subject!r};"
                f" {'decrypts' if c.pgp_decrypts else 'does NOT decrypt'}",
                f"{c.plain_content_type}; Subject {c.plain_subject!r}",
                "",
                "PGP/MIME",
                _ok(c.ok),
            )
        )
    return out


HEADER = ("measure", "PGP mailbox", "plain mailbox", "baseline", "target", "verdict")


def table_text(r: Results) -> str:
    return report.aligned(HEADER, rows(r))


def markdown_table(r: Results) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows(r):
        cells = (cell.strip().replace("|", "\\|") for cell in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine(r: Results) -> list[str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    gpg = subprocess.run(["gpg", "--version"], capture_output=True, text=True, check=False)
    return [
        f"CPU: {os.cpu_count()} cores, {cpu}",
        f"memory: {mem_kib / 1024 / 1024:.1f} GiB",
        f"OS: Linux {platform.release()}; Python {platform.python_version()};"
        f" {gpg.stdout.splitlines()[0] if gpg.stdout else 'gpg ?'}",
        f"load average (1 min) before / after the run: {r.load_before:.2f} / {r.load_after:.2f}",
    ]


def write_markdown(r: Results, path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    quick = r.sizes is QUICK
    s = r.sizes
    text = f"""# Performance: OpenPGP on arrival

Generated by `.venv/bin/python -m benchmarks.openpgp{" --quick" if quick else ""}` on {now}
({"quick" if quick else "full"} run). Rerun it to update this file; do not edit it by hand.
The benchmarks are not part of the test suite. (A file of its own: `benchmarks.mail` rewrites
docs/performance.md whole.)

## OpenPGP on arrival

Verdict: {r.verdict()}.

### Machine

{chr(10).join("- " + line for line in machine(r))}

### Results

{markdown_table(r)}

### What is measured

One real local stack (`ddmail stack up`: Postfix → `ddmail-pgpstage` → Dovecot with
`mail_crypt`, backend and keyhandler, SQLite, on 127.0.0.1, state under `/tmp/ddb-*`) and two
mailboxes on it: "PGP" has an ed25519/cv25519 key (made with gpg in a temporary home) uploaded
and activated through the backend API (`POST /v1/openpgp/keys`, `/v1/openpgp/activate`, caller
`web`); "plain" has none, so the stage passes its mail through. Both take the same path
otherwise, so the difference is what encryption costs. After a 10-message warm-up each (the
stage imports the key into its cached GnuPG home then):

- **Delivery.** {s.messages} messages of about 4 KiB over SMTP to the MX port, over 1
  connection and split over 4 parallel connections, timed from the first connect until every
  file is in the maildir (`new/` + `cur/`); "SMTP accepted" is until the last `250` after DATA.
  The runs alternate between the mailboxes (the order flips every round), {s.rounds} round(s),
  median shown with the range.
- **send → stored.** {s.latency} single messages per mailbox, alternating, each over a held
  SMTP connection, from `sendmail()` until its file is in the maildir (Postfix's queue manager,
  LMTP to the stage, the stage's work and Dovecot's delivery). The baseline figure is the
  reference service's encryptor alone, so it does not include Postfix or Dovecot.
- **Stage CPU.** `utime + stime` (all threads of the Python process) plus `cutime + cstime`
  (its reaped children: the `gpg --encrypt` runs) from `/proc/<pid>/stat` of the process in
  `run/pgpstage.pid`, read before the first connect and after the last file of a run, divided
  by the messages. "Added by encryption" is the PGP run's figure minus the plain run's.
  Target: at most {ms(CPU_ADDED_TARGET)} per message. "Whole machine" is all busy CPU of both
  cores over the run (`/proc/stat`; Postfix, Dovecot, the stage and the benchmark's own client).
- **Refused / lost.** Every SMTP transaction must be answered 250, every message stored exactly
  once (file count), and `postfix.log` must show `status=sent` for each and no `deferred` or
  `bounced` (a stage 4xx would show as deferred; the benchmark then flushes the queue so the
  message can still be counted as stored, not lost). Counted over every run and asserted in
  the verdict. Baseline: {BASE_BOUNCED * 100:.1f} % of messages bounced (500) under 4 parallel
  connections.
- **Stored message.** The last message of each mailbox fetched over IMAPS with the mailbox
  password: the PGP one must be `multipart/encrypted; protocol="application/pgp-encrypted"`
  with Subject `...` and decrypt with the private key to the original (Subject `benchmark N`);
  the plain one must be the original.
"""
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.openpgp", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages, one round")
    args = parser.parse_args(argv)
    results = run(QUICK if args.quick else FULL)
    print()
    print(table_text(results))
    for run_ in results.runs:
        if not run_.clean:
            print(f"not clean: {run_.kind}, {run_.connections} conn.: {describe(run_)}")
    write_markdown(results, OUTPUT)
    print(f"\nwritten to {OUTPUT.relative_to(stacks.REPO)}; verdict: {results.verdict()}")
    return 0 if not results.verdict().startswith("MISSED") else 1


if __name__ == "__main__":
    sys.exit(main())
